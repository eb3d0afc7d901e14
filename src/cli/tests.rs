//! The CLI's tables and sentences, exactly, rendered from answers as a node sends them
//! (the API's types turned into JSON, then read back as the CLI reads them).

use serde::Serialize;
use serde_json::Value;
use sluice_cluster::model::{
    CapturePort, Endpoint, EndpointKind, EndpointSnapshot, Generation, GenerationState, Health,
    HealthThresholds, Ingest, LlHlsSettings, MediaInfo, NodeUrls, Placement, Recording,
    RecordingStatus, RetentionPolicy, SdiEncoding, Visibility,
};

use super::live::{
    generation_table, node_table, node_text, playback_key_table, port_table, recording_table,
    status_text,
};
use super::{
    channel_table, channel_text, cluster_text, endpoint_text, ingest_kind, read, token_table,
};
use crate::http::api::channels::{
    ChannelDetail, ChannelList, ChannelView, GenerationList, KeyView, StreamStatus,
};
use crate::http::api::endpoints::{EndpointList, EndpointView};
use crate::http::api::nodes::{CapturePortView, NodeList, NodeView};
use crate::http::api::playback::{PlaybackKeyList, PlaybackKeyView};
use crate::http::api::recordings::{RecordingList, RecordingView};
use crate::http::api::tokens::{TokenList, TokenView};
use crate::http::api::{ClusterStatus, MemberStatus};

/// What a node sends for `value`.
fn answer(value: &impl Serialize) -> Value {
    serde_json::to_value(value).expect("API types serialize")
}

/// `value` as the CLI reads it from the node's answer.
fn received<T: Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
    read(&answer(value)).expect("the CLI reads what the API sends")
}

fn generation(number: u64, state: GenerationState) -> Generation {
    Generation {
        channel: 1,
        number,
        origin: 7_001,
        state,
        started_ms: 1_700_000_000_000,
        last_media_ms: 1_700_000_060_000,
        state_since_ms: 1_700_000_000_500,
        media: MediaInfo {
            codecs: vec!["avc1.64001f".into(), "mp4a.40.2".into()],
            width: 1280,
            height: 720,
            bitrate_bps: 2_500_000,
            ..Default::default()
        },
        last_msn: Some(42),
        recording: None,
        epoch: 1,
        abandoned: false,
    }
}

fn channel(slug: &str, generation: Option<Generation>) -> ChannelView {
    ChannelView {
        id: 1,
        slug: slug.into(),
        title: format!("The {slug} show"),
        visibility: Visibility::Public,
        ingest: Ingest::Push,
        ll_hls: LlHlsSettings::default(),
        recording: true,
        retention: RetentionPolicy::default(),
        sdi_encoding: SdiEncoding::default(),
        placement: Placement::Any,
        created_ms: 1_690_000_000_000,
        last_generation: generation.as_ref().map_or(0, |g| g.number),
        srt_passphrase_set: false,
        puller: None,
        restarts: 0,
        last_restart_ms: None,
        alert: None,
        origin_name: generation.as_ref().map(|_| "node-a".into()),
        generation,
        viewers: 12,
        playlist_age_ms: Some(340),
        warnings: Vec::new(),
    }
}

/// A pulled channel pinned to a node that is down.
fn pulled_channel() -> ChannelView {
    ChannelView {
        ingest: Ingest::SrtCaller {
            url: "srt://cam.example:9000?streamid=cam1&passphrase=<redacted>".into(),
        },
        placement: Placement::Pinned(3),
        puller: Some(3),
        restarts: 2,
        alert: Some("pinned to node 3, which is down".into()),
        ..channel("cam", None)
    }
}

fn channel_detail() -> ChannelDetail {
    let live = generation(4, GenerationState::Live);
    ChannelDetail {
        channel: ChannelView {
            alert: Some("pinned".into()),
            warnings: vec!["keyframe interval 8.3 s: viewers join up to 8 s behind".into()],
            ..channel("news", Some(live.clone()))
        },
        keys: vec![
            KeyView {
                key_id: "a1b2c3d4".into(),
                created_ms: 1_690_000_000_000,
                revoked_ms: None,
            },
            KeyView {
                key_id: "e5f6a7b8".into(),
                created_ms: 1_690_000_000_000,
                revoked_ms: Some(1_690_000_100_000),
            },
        ],
        generation: Some(live),
    }
}

fn snapshot(playlist_age_ms: Option<u64>, hit_ratio: Option<f64>) -> EndpointSnapshot {
    EndpointSnapshot {
        at_ms: 1_700_000_000_000,
        viewers: 12,
        egress_bps: 31_400_000,
        ingress_bps: 2_600_000,
        playlist_age_ms,
        hit_ratio,
        health: Health::Ok,
        channel_viewers: [("news".to_string(), 12)].into(),
    }
}

fn endpoint(name: &str, last: Option<EndpointSnapshot>) -> EndpointView {
    EndpointView {
        endpoint: Endpoint {
            name: name.into(),
            kind: EndpointKind::ExternalEdge,
            node: None,
            url: format!("https://{name}.example"),
            upstreams: vec!["origin-a".into(), "origin-b".into()],
            health: HealthThresholds::default(),
            created_ms: 1_690_000_000_000,
        },
        status: if last.is_some() {
            Health::Ok
        } else {
            Health::Stale
        },
        last_snapshot: last,
        history: None,
    }
}

fn endpoints() -> EndpointList {
    let origin = EndpointView {
        endpoint: Endpoint {
            kind: EndpointKind::Origin,
            node: Some(7_001),
            upstreams: vec![],
            ..endpoint("origin-a", None).endpoint
        },
        ..endpoint("origin-a", None)
    };
    EndpointList {
        endpoints: vec![
            origin,
            endpoint("cdn", Some(snapshot(Some(480), Some(0.9731)))),
            endpoint("cdn-2", Some(snapshot(None, None))),
        ],
    }
}

fn endpoint_with_history() -> EndpointView {
    EndpointView {
        history: Some(vec![snapshot(None, None), snapshot(Some(480), Some(0.5))]),
        ..endpoint("cdn", Some(snapshot(Some(480), Some(0.5))))
    }
}

fn cluster_status() -> ClusterStatus {
    let member = |id: u64, name: &str, voter: bool, healthy: bool| MemberStatus {
        id,
        name: name.into(),
        addr: format!("http://10.0.0.{}:7000", id % 100),
        voter,
        healthy,
    };
    ClusterStatus {
        this_node: 7_001,
        leader: Some(7_001),
        term: 3,
        members: vec![
            member(7_001, "node-a", true, true),
            member(7_002, "node-b", false, false),
        ],
    }
}

fn stream_status(generation: Option<Generation>) -> StreamStatus {
    StreamStatus {
        channel: "news".into(),
        state: generation.as_ref().map_or("idle".into(), |_| "live".into()),
        origin_name: generation.as_ref().map(|_| "node-a".into()),
        generation,
        viewers: 12,
        playlist_age_ms: Some(340),
        playlist_path: "/hls/news/index.m3u8".into(),
    }
}

fn generations() -> GenerationList {
    GenerationList {
        channel: "news".into(),
        generations: vec![
            generation(12, GenerationState::Reconnecting),
            generation(11, GenerationState::Ended),
        ],
    }
}

/// Ports with a signal and a mode, a signal alone, an error, and neither.
fn ports() -> Vec<CapturePortView> {
    let port =
        |device: u32, signal: bool, mode: Option<&str>, error: Option<&str>| CapturePortView {
            port: CapturePort {
                node: 7_001,
                device,
                model: "DeckLink Duo 2".into(),
                label: format!("input {device}"),
                enabled: device != 3,
                bound_channel: (device == 0).then_some(1),
                present: device != 2,
                first_seen_ms: 1_690_000_000_000,
                signal,
                video_mode: mode.map(String::from),
                error: error.map(String::from),
            },
            channel: (device == 0).then(|| "news".into()),
        };
    vec![
        port(0, true, Some("1280x720@30"), None),
        port(1, true, None, None),
        port(2, false, None, Some("no card")),
        port(3, false, None, None),
    ]
}

fn nodes() -> NodeList {
    let node = |id: u64, leader: bool, voter: bool, healthy: bool| NodeView {
        id,
        name: format!("node-{id}"),
        urls: NodeUrls {
            http: format!("http://10.0.0.1:{id}"),
            cluster: "http://10.0.0.1:7000".into(),
            rtmp: "rtmp://10.0.0.1:1935/live".into(),
            srt: "srt://10.0.0.1:9000".into(),
        },
        healthy,
        heartbeat_age_ms: 400,
        lease_ttl_ms: 5_000,
        voter,
        leader,
        origin_of: if leader {
            vec!["news".into(), "sport".into()]
        } else {
            vec![]
        },
        pulling: if voter { vec![] } else { vec!["cam".into()] },
        capture_ports: if leader { ports() } else { vec![] },
    };
    NodeList {
        nodes: vec![
            node(7_001, true, true, true),
            node(7_002, false, true, false),
            node(7_003, false, false, true),
        ],
    }
}

fn recordings() -> RecordingList {
    let recording =
        |generation: u64, status: RecordingStatus, reason: Option<&str>| RecordingView {
            channel: "news".into(),
            generation,
            generation_state: GenerationState::Ended,
            started_ms: 1_700_000_000_000,
            recording: Recording {
                status,
                reason: reason.map(String::from),
                duration_ms: 3_601_250,
                bytes: 1_234_567_890,
                segments: 1_800,
                pieces: vec![],
                closed_ms: None,
            },
            playlist_path: format!("/vod/news/{generation}/index.m3u8"),
            download_path: format!("/vod/news/{generation}.mp4"),
        };
    RecordingList {
        channel: "news".into(),
        recordings: vec![
            recording(12, RecordingStatus::Recording, None),
            recording(11, RecordingStatus::Failed, Some("disk full")),
        ],
    }
}

fn playback_keys() -> PlaybackKeyList {
    let key = |key_id: &str, signing: bool, retired_ms: Option<i64>| PlaybackKeyView {
        key_id: key_id.into(),
        created_ms: 1_690_000_000_000,
        retired_ms,
        signing,
    };
    PlaybackKeyList {
        keys: vec![
            key("pk0123456789", false, Some(1_695_000_000_000)),
            key("pkabcdefabcd", true, None),
        ],
    }
}

fn tokens() -> TokenList {
    let token = |token_id: &str, read_only: bool, revoked_ms: Option<i64>| TokenView {
        token_id: token_id.into(),
        name: format!("{token_id}-name"),
        read_only,
        created_ms: 1_690_000_000_000,
        revoked_ms,
    };
    TokenList {
        tokens: vec![
            token("t0123456789ab", false, None),
            token("tabcdefabcdef", true, Some(1_695_000_000_000)),
        ],
    }
}

#[test]
fn the_ingest_kind_is_the_api_tag() {
    let ingests = [
        Ingest::Push,
        Ingest::SrtCaller {
            url: "srt://a:1".into(),
        },
        Ingest::HlsPull {
            url: "https://a/".into(),
        },
        Ingest::Sdi { node: 1, device: 0 },
    ];
    for ingest in ingests {
        let tag = format!("{{\"kind\":\"{}\"", ingest_kind(&ingest));
        let json = serde_json::to_string(&ingest).expect("serializes");
        assert!(json.starts_with(&tag), "{json} is not tagged {tag}");
    }
}

#[test]
fn an_answer_without_a_field_the_cli_reads_is_an_error_naming_it() {
    let list = ChannelList {
        channels: vec![channel("news", None)],
    };
    let renamed = answer(&list).to_string().replace("\"slug\"", "\"name\"");
    let renamed: Value = serde_json::from_str(&renamed).expect("JSON");
    let err = read::<ChannelList>(&renamed).err().expect("refused");
    assert!(
        format!("{err:#}").contains("missing field `slug`"),
        "{err:#}"
    );
}

#[test]
fn channels_are_listed_one_a_line_tab_separated() {
    let list = received(&ChannelList {
        channels: vec![
            channel("news", Some(generation(4, GenerationState::Live))),
            pulled_channel(),
        ],
    });
    assert_eq!(
        channel_table(&list),
        "NAME\tINGEST\tPULLED BY\tRESTARTS\tTITLE\tALERT\n\
         news\tpush\t-\t0\tThe news show\t\n\
         cam\tsrt_caller\t3\t2\tThe cam show\tpinned to node 3, which is down"
    );
}

#[test]
fn a_live_channel_shows_its_settings_generation_and_keys() {
    assert_eq!(
        channel_text("news", &received(&channel_detail())),
        "channel:   news (The news show)\n\
         ingest:    {\"kind\":\"push\"}\n\
         placement: {\"kind\":\"any\"}\n\
         ll-hls:    {\"dvr_window_s\":0,\"part_target_ms\":200,\"segment_target_ms\":2000,\"window_segments\":15}\n\
         state:     live (generation 4) on node-a\n\
         viewers:   12\n\
         key:       a1b2c3d4\n\
         key:       e5f6a7b8 (revoked)\n\
         alert:     pinned\n\
         warning:   keyframe interval 8.3 s: viewers join up to 8 s behind"
    );
}

#[test]
fn an_idle_channel_says_so() {
    let detail = received(&ChannelDetail {
        channel: pulled_channel(),
        keys: vec![],
        generation: None,
    });
    assert_eq!(
        channel_text("cam", &detail),
        "channel:   cam (The cam show)\n\
         ingest:    {\"kind\":\"srt_caller\",\"url\":\"srt://cam.example:9000?streamid=cam1&passphrase=<redacted>\"}\n\
         placement: {\"kind\":\"pinned\",\"node\":3}\n\
         ll-hls:    {\"dvr_window_s\":0,\"part_target_ms\":200,\"segment_target_ms\":2000,\"window_segments\":15}\n\
         state:     idle\n\
         viewers:   12\n\
         alert:     pinned to node 3, which is down"
    );
}

#[test]
fn cluster_status_lists_members_then_endpoints() {
    let status = received(&cluster_status());
    assert_eq!(
        cluster_text(&status, &received(&endpoints())),
        "leader: 7001  term: 3  (answered by 7001)\n\
         id                   name             cluster url                  voter  healthy\n\
         7001                 node-a           http://10.0.0.1:7000         true   true\n\
         7002                 node-b           http://10.0.0.2:7000         false  false\n\
         \n\
         endpoint             kind            url                          status   viewers     egress   hit   pl. age  parents\n\
         origin-a             origin          https://origin-a.example     stale          -          -     -         -  -\n\
         cdn                  external_edge   https://cdn.example          ok            12      31.4M   97%    480 ms  origin-a,origin-b\n\
         cdn-2                external_edge   https://cdn-2.example        ok            12      31.4M     -         -  origin-a,origin-b"
    );
}

#[test]
fn a_waiting_node_shows_no_endpoints() {
    let shown = cluster_text(
        &received(&cluster_status()),
        &EndpointList { endpoints: vec![] },
    );
    assert!(shown.ends_with("\n\nendpoint             kind            url                          status   viewers     egress   hit   pl. age  parents"));
}

/// The history's figures print as bare numbers, unpadded, and a missing age as `null`.
#[test]
fn an_endpoint_shows_its_snapshot_history() {
    assert_eq!(
        endpoint_text(&received(&endpoint_with_history())),
        "endpoint             kind            url                          status   viewers     egress   hit   pl. age  parents\n\
         cdn                  external_edge   https://cdn.example          ok            12      31.4M   50%    480 ms  origin-a,origin-b\n\
         \n\
         at (ms)        viewers   egress bps  ingress bps   pl. age  health\n\
         1700000000000 12 31400000 2600000 null  ok\n\
         1700000000000 12 31400000 2600000 480  ok"
    );
}

#[test]
fn stream_status_is_the_generation_media_and_viewers() {
    let live = stream_status(Some(generation(4, GenerationState::Live)));
    assert_eq!(
        status_text("news", &received(&live)),
        "news: live (generation 4) on node-a\n\
         media: 1280x720 avc1.64001f,mp4a.40.2 2.50 Mbit/s\n\
         viewers: 12  playlist age: 340 ms\n\
         play: /hls/news/index.m3u8"
    );
    assert_eq!(
        status_text("idle", &received(&stream_status(None))),
        "idle: idle (no live stream)"
    );
}

// Some first columns print unpadded under their padded headers: the tables below pin
// the text as it is.

#[test]
fn generations_are_listed_newest_first() {
    assert_eq!(
        generation_table(&received(&generations())),
        "gen    state         origin               media\n\
         12 reconnecting  7001 1280x720 avc1.64001f,mp4a.40.2 2.50 Mbit/s\n\
         11 ended         7001 1280x720 avc1.64001f,mp4a.40.2 2.50 Mbit/s"
    );
}

#[test]
fn nodes_show_lease_role_and_what_they_serve() {
    let list = received(&nodes());
    assert_eq!(
        node_table(&list),
        "id                   name             lease    role    origin of        pulling          capture ports\n\
         7001 node-7001        healthy  leader  news,sport       -                4\n\
         7002 node-7002        down     voter   -                -                0\n\
         7003 node-7003        healthy  learner -                cam              0"
    );
    assert_eq!(
        node_text(&list.nodes[0]).lines().last(),
        Some("http http://10.0.0.1:7001  rtmp rtmp://10.0.0.1:1935/live  srt srt://10.0.0.1:9000  cluster http://10.0.0.1:7000")
    );
}

#[test]
fn capture_ports_show_their_signal() {
    let ports: Vec<CapturePortView> = ports().iter().map(received).collect();
    assert_eq!(
        port_table(&ports),
        "node                 device model                    label            enabled  present  channel        signal\n\
         7001 0 DeckLink Duo 2           input 0          yes      yes      news           1280x720@30\n\
         7001 1 DeckLink Duo 2           input 1          yes      yes      -              yes\n\
         7001 2 DeckLink Duo 2           input 2          yes      no       -              no (no card)\n\
         7001 3 DeckLink Duo 2           input 3          no       yes      -              -"
    );
}

#[test]
fn recordings_show_status_duration_size_and_why_they_failed() {
    assert_eq!(
        recording_table(&received(&recordings())),
        "gen    status        duration         size  playlist\n\
         12 recording     3601.2 s    1234.6 MB  /vod/news/12/index.m3u8\n\
         11 failed        3601.2 s    1234.6 MB  /vod/news/11/index.m3u8  (disk full)"
    );
}

#[test]
fn playback_keys_show_which_one_signs() {
    assert_eq!(
        playback_key_table(&received(&playback_keys())),
        "key            signing       created_ms      retired_ms\n\
         pk0123456789            1690000000000   1695000000000\n\
         pkabcdefabcd   yes      1690000000000               -"
    );
}

#[test]
fn tokens_show_access_and_revocation() {
    assert_eq!(
        token_table(&received(&tokens())),
        "token id         access     revoked  name\n\
         t0123456789ab    admin      no       t0123456789ab-name\n\
         tabcdefabcdef    read       yes      tabcdefabcdef-name"
    );
}
