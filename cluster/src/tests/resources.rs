//! Admin tokens, node removal, endpoints with their snapshots, and capture ports.

use super::{claim, cluster, cmd, VERIFIER_A, VERIFIER_B};
use crate::command::{Applied, DeviceSeen, Op, Refusal, SNAPSHOT_HISTORY};
use crate::model::*;

fn token(id: &str, verifier: &str) -> Op {
    Op::CreateAdminToken {
        token_id: id.into(),
        name: format!("token {id}"),
        verifier: verifier.into(),
        read_only: false,
    }
}

#[test]
fn admin_tokens_are_unique_idempotent_and_revocable() {
    let mut s = cluster();
    assert_eq!(
        s.apply(&cmd(1, token("node-1", VERIFIER_A))),
        Ok(Applied::Done)
    );
    // The same registration again (a node restarting) changes nothing.
    let before = s.clone();
    assert_eq!(
        s.apply(&cmd(2, token("node-1", VERIFIER_A))),
        Ok(Applied::Done)
    );
    assert_eq!(s, before);
    // Same id, other verifier: refused; other id, same verifier: refused.
    assert!(matches!(
        s.apply(&cmd(3, token("node-1", VERIFIER_B))),
        Err(Refusal::AlreadyExists { .. })
    ));
    assert_eq!(
        s.apply(&cmd(3, token("ops", VERIFIER_A))),
        Err(Refusal::VerifierInUse)
    );
    assert!(matches!(
        s.apply(&cmd(3, token("bad id!", VERIFIER_B))),
        Err(Refusal::InvalidField { field, .. }) if field == "token_id"
    ));
    assert!(matches!(
        s.apply(&cmd(3, token("ops", "not-hex"))),
        Err(Refusal::InvalidField { field, .. }) if field == "verifier"
    ));
    assert_eq!(
        s.admin_token_for_verifier(VERIFIER_A).map(|t| t.revoked_ms),
        Some(None)
    );
    s.apply(&cmd(
        9,
        Op::RevokeAdminToken {
            token_id: "node-1".into(),
        },
    ))
    .expect("revoke");
    assert_eq!(
        s.admin_token_for_verifier(VERIFIER_A).map(|t| t.revoked_ms),
        Some(Some(9))
    );
    assert!(matches!(
        s.apply(&cmd(
            10,
            Op::RevokeAdminToken {
                token_id: "nope".into()
            }
        )),
        Err(Refusal::NotFound { .. })
    ));
}

#[test]
fn a_removed_node_leaves_its_generations_reconnecting_and_its_endpoints_go() {
    let mut s = cluster();
    s.apply(&claim("news", 2, 10)).expect("claim");
    s.apply(&cmd(
        11,
        endpoint("node-2", EndpointKind::Origin, Some(2), &[]),
    ))
    .expect("origin endpoint");
    s.apply(&cmd(
        12,
        endpoint("edge-a", EndpointKind::ExternalEdge, None, &["node-2"]),
    ))
    .expect("edge");
    assert_eq!(
        s.apply(&cmd(20, Op::RemoveNode { node: 2 })),
        Ok(Applied::Done)
    );
    assert!(!s.nodes.contains_key(&2));
    let g = s
        .active_generation(1)
        .expect("still held for its publisher");
    assert_eq!(g.state, GenerationState::Reconnecting);
    assert_eq!(g.state_since_ms, 20);
    assert!(!s.endpoints.contains_key("node-2"));
    assert!(s.endpoints["edge-a"].upstreams.is_empty());
    // Another node's claim resumes the generation.
    assert!(matches!(
        s.apply(&claim("news", 3, 21)),
        Ok(Applied::Claimed { resumed: true, .. })
    ));
    assert!(matches!(
        s.apply(&cmd(22, Op::RemoveNode { node: 2 })),
        Err(Refusal::NotFound { .. })
    ));
}

fn endpoint(name: &str, kind: EndpointKind, node: Option<NodeId>, upstreams: &[&str]) -> Op {
    Op::PutEndpoint {
        name: name.into(),
        kind,
        node,
        url: format!("http://{name}.example:8080"),
        upstreams: upstreams.iter().map(|u| u.to_string()).collect(),
        health: HealthThresholds::default(),
    }
}

#[test]
fn endpoints_validate_links_and_refuse_loops_and_deleting_a_parent() {
    let mut s = cluster();
    assert!(matches!(
        s.apply(&cmd(1, endpoint("o1", EndpointKind::Origin, None, &[]))),
        Err(Refusal::InvalidField { field, .. }) if field == "node"
    ));
    assert!(matches!(
        s.apply(&cmd(1, endpoint("x", EndpointKind::ExternalEdge, Some(1), &[]))),
        Err(Refusal::InvalidField { field, .. }) if field == "node"
    ));
    assert!(matches!(
        s.apply(&cmd(1, endpoint("o9", EndpointKind::Origin, Some(9), &[]))),
        Err(Refusal::InvalidField { field, .. }) if field == "node"
    ));
    assert!(matches!(
        s.apply(&cmd(1, endpoint("Bad Name", EndpointKind::Edge, None, &[]))),
        Err(Refusal::InvalidField { field, .. }) if field == "name"
    ));
    let mut bad_url = endpoint("e", EndpointKind::Edge, None, &[]);
    if let Op::PutEndpoint { url, .. } = &mut bad_url {
        *url = "ftp://x".into();
    }
    assert!(matches!(
        s.apply(&cmd(1, bad_url)),
        Err(Refusal::InvalidField { field, .. }) if field == "url"
    ));
    s.apply(&cmd(1, endpoint("o1", EndpointKind::Origin, Some(1), &[])))
        .expect("origin");
    s.apply(&cmd(2, endpoint("e1", EndpointKind::Edge, None, &["o1"])))
        .expect("edge");
    s.apply(&cmd(
        3,
        endpoint("e2", EndpointKind::ExternalEdge, None, &["e1", "o1"]),
    ))
    .expect("chained edge");
    assert!(matches!(
        s.apply(&cmd(4, endpoint("e3", EndpointKind::Edge, None, &["nope"]))),
        Err(Refusal::InvalidField { field, .. }) if field == "upstreams"
    ));
    assert!(matches!(
        s.apply(&cmd(4, endpoint("e3", EndpointKind::Edge, None, &["o1", "o1"]))),
        Err(Refusal::InvalidField { field, .. }) if field == "upstreams"
    ));
    // e1 pulling from e2 would be a loop (e2 already pulls from e1).
    let before = s.clone();
    assert!(matches!(
        s.apply(&cmd(5, endpoint("e1", EndpointKind::Edge, None, &["e2"]))),
        Err(Refusal::InvalidField { field, .. }) if field == "upstreams"
    ));
    assert_eq!(s, before);
    // Replacing keeps the creation time.
    s.apply(&cmd(6, endpoint("e1", EndpointKind::Edge, None, &[])))
        .expect("replace");
    assert_eq!(s.endpoints["e1"].created_ms, 2);
    assert_eq!(
        s.apply(&cmd(7, Op::DeleteEndpoint { name: "e1".into() })),
        Err(Refusal::InUse {
            what: "endpoint".into(),
            name: "e1".into(),
            by: "e2".into()
        })
    );
    s.apply(&cmd(7, Op::DeleteEndpoint { name: "e2".into() }))
        .expect("delete child");
    s.apply(&cmd(8, Op::DeleteEndpoint { name: "e1".into() }))
        .expect("delete parent");
    assert_eq!(s.endpoints.keys().collect::<Vec<_>>(), vec!["o1"]);
}

fn snapshot(at_ms: i64) -> EndpointSnapshot {
    EndpointSnapshot {
        at_ms,
        viewers: 3,
        egress_bps: 1_000,
        ingress_bps: 10,
        playlist_age_ms: Some(200),
        hit_ratio: Some(0.9),
        health: Health::Ok,
        channel_viewers: [("news".to_string(), 3)].into(),
    }
}

#[test]
fn snapshots_keep_a_bounded_history_and_never_go_back_in_time() {
    let mut s = cluster();
    s.apply(&cmd(1, endpoint("o1", EndpointKind::Origin, Some(1), &[])))
        .expect("origin");
    let report = |at: i64| Op::ReportSnapshot {
        endpoint: "o1".into(),
        snapshot: snapshot(at),
    };
    for at in 0..(SNAPSHOT_HISTORY as i64 + 10) {
        s.apply(&cmd(at, report(at * 1_000))).expect("report");
    }
    let history = &s.endpoint_snapshots["o1"];
    assert_eq!(history.len(), SNAPSHOT_HISTORY);
    assert_eq!(
        history.back().map(|h| h.at_ms),
        Some((SNAPSHOT_HISTORY as i64 + 9) * 1_000)
    );
    assert!(matches!(
        s.apply(&cmd(0, report(5))),
        Err(Refusal::WentBack { .. })
    ));
    let mut bad = snapshot(1_000_000);
    bad.hit_ratio = Some(1.5);
    assert!(matches!(
        s.apply(&cmd(0, Op::ReportSnapshot { endpoint: "o1".into(), snapshot: bad })),
        Err(Refusal::InvalidField { field, .. }) if field == "hit_ratio"
    ));
    assert!(matches!(
        s.apply(&cmd(
            0,
            Op::ReportSnapshot {
                endpoint: "nope".into(),
                snapshot: snapshot(1)
            }
        )),
        Err(Refusal::NotFound { .. })
    ));
    s.apply(&cmd(1, Op::DeleteEndpoint { name: "o1".into() }))
        .expect("delete");
    assert!(!s.endpoint_snapshots.contains_key("o1"));
}

fn scan(node: NodeId, devices: &[u32]) -> Op {
    Op::ReportCapturePorts {
        node,
        devices: devices
            .iter()
            .map(|d| DeviceSeen {
                device: *d,
                model: format!("DeckLink Duo ({d})"),
            })
            .collect(),
    }
}

fn bind(node: NodeId, device: u32, channel: Option<&str>) -> Op {
    Op::BindCapturePort {
        node,
        device,
        channel: channel.map(String::from),
    }
}

#[test]
fn capture_ports_are_discovered_once_and_keep_operator_settings() {
    let mut s = cluster();
    s.apply(&cmd(1, scan(1, &[0, 1]))).expect("scan");
    assert_eq!(s.capture_ports.len(), 2);
    let p = s.capture_port(1, 0).expect("port");
    assert!(p.present && !p.enabled && p.label.is_empty() && p.first_seen_ms == 1);
    s.apply(&cmd(
        2,
        Op::UpdateCapturePort {
            node: 1,
            device: 0,
            label: Some("Camera 1".into()),
            enabled: Some(true),
        },
    ))
    .expect("label");
    // A later scan without device 1 marks it absent; device 0 keeps its settings.
    s.apply(&cmd(3, scan(1, &[0]))).expect("rescan");
    let p0 = s.capture_port(1, 0).expect("port 0");
    assert_eq!(
        (p0.label.as_str(), p0.enabled, p0.present, p0.first_seen_ms),
        ("Camera 1", true, true, 1)
    );
    assert!(!s.capture_port(1, 1).expect("kept").present);
    s.apply(&cmd(4, scan(1, &[0, 1]))).expect("back");
    assert!(s.capture_port(1, 1).expect("port 1").present);
    assert!(matches!(
        s.apply(&cmd(5, scan(1, &[2, 2]))),
        Err(Refusal::InvalidField { field, .. }) if field == "devices"
    ));
    assert!(matches!(
        s.apply(&cmd(5, scan(9, &[0]))),
        Err(Refusal::NotFound { .. })
    ));
    assert!(matches!(
        s.apply(&cmd(
            5,
            Op::UpdateCapturePort {
                node: 1,
                device: 7,
                label: None,
                enabled: Some(true)
            }
        )),
        Err(Refusal::NotFound { .. })
    ));
}

#[test]
fn a_port_feeds_at_most_one_channel_and_a_channel_has_one_ingest() {
    let mut s = cluster();
    s.apply(&super::create_channel("sport", 0)).expect("sport");
    s.apply(&cmd(1, scan(1, &[0, 1]))).expect("scan");
    s.apply(&cmd(2, bind(1, 0, Some("news")))).expect("bind");
    assert_eq!(
        s.channel_by_slug("news").map(|c| c.ingest.clone()),
        Some(Ingest::Sdi { node: 1, device: 0 })
    );
    // Binding again to the same channel is a no-op.
    assert_eq!(
        s.apply(&cmd(3, bind(1, 0, Some("news")))),
        Ok(Applied::Done)
    );
    assert_eq!(
        s.apply(&cmd(3, bind(1, 0, Some("sport")))),
        Err(Refusal::PortInUse {
            port: "1/0".into(),
            channel: "news".into()
        })
    );
    assert_eq!(
        s.apply(&cmd(3, bind(1, 1, Some("news")))),
        Err(Refusal::IngestInUse {
            channel: "news".into()
        })
    );
    // A live channel keeps its ingest.
    s.apply(&claim("news", 1, 4)).expect("claim");
    assert!(matches!(
        s.apply(&cmd(5, bind(1, 0, None))),
        Err(Refusal::ChannelBusy { .. })
    ));
    s.apply(&cmd(
        6,
        Op::EndGeneration {
            channel: "news".into(),
            generation: 1,
            failed: false,
        },
    ))
    .expect("end");
    s.apply(&cmd(7, bind(1, 0, None))).expect("unbind");
    assert_eq!(
        s.channel_by_slug("news").map(|c| c.ingest.clone()),
        Some(Ingest::Push)
    );
    s.apply(&cmd(8, bind(1, 0, Some("sport")))).expect("rebind");
    // Deleting the channel frees the port.
    s.apply(&cmd(
        9,
        Op::DeleteChannel {
            slug: "sport".into(),
        },
    ))
    .expect("delete");
    assert_eq!(s.capture_port(1, 0).and_then(|p| p.bound_channel), None);
}

#[test]
fn an_sdi_channel_is_captured_on_its_ports_node_only_and_reports_its_signal() {
    let mut s = cluster();
    s.apply(&cmd(1, scan(2, &[0]))).expect("scan");
    s.apply(&cmd(2, bind(2, 0, Some("news")))).expect("bind");
    assert_eq!(
        s.apply(&claim("news", 1, 3)),
        Err(Refusal::NotThePortsNode {
            channel: "news".into(),
            node: 1,
            port_node: 2
        })
    );
    assert!(s.apply(&claim("news", 2, 3)).is_ok());
    let status = |signal: bool, mode: Option<&str>, error: Option<&str>| {
        cmd(
            4,
            Op::ReportPortStatus {
                node: 2,
                device: 0,
                signal,
                video_mode: mode.map(String::from),
                error: error.map(String::from),
            },
        )
    };
    s.apply(&status(true, Some("1280x720@30"), None))
        .expect("signal");
    let p = s.capture_port(2, 0).expect("port");
    assert_eq!(
        (p.signal, p.video_mode.as_deref()),
        (true, Some("1280x720@30"))
    );
    s.apply(&status(false, None, Some("no DeckLink card")))
        .expect("lost");
    assert_eq!(
        s.capture_port(2, 0)
            .and_then(|p| p.error.clone())
            .as_deref(),
        Some("no DeckLink card")
    );
    // A device gone from the scan has no signal.
    s.apply(&status(true, Some("1280x720@30"), None))
        .expect("signal");
    s.apply(&cmd(5, scan(2, &[]))).expect("gone");
    let p = s.capture_port(2, 0).expect("kept");
    assert!(!p.present && !p.signal && p.video_mode.is_none());
}

#[test]
fn channels_are_not_created_with_an_sdi_ingest_or_a_bad_pull_url() {
    let mut s = cluster();
    let with_ingest = |ingest: Ingest| {
        let mut c = super::create_channel("pull", 1);
        if let Op::CreateChannel { ingest: i, .. } = &mut c.op {
            *i = ingest;
        }
        c
    };
    assert!(matches!(
        s.apply(&with_ingest(Ingest::Sdi { node: 1, device: 0 })),
        Err(Refusal::InvalidField { field, .. }) if field == "ingest"
    ));
    assert!(matches!(
        s.apply(&with_ingest(Ingest::SrtCaller { url: "http://x".into() })),
        Err(Refusal::InvalidField { field, .. }) if field == "ingest.url"
    ));
    // A URL a node could not call: refused here, not found out by the pulling node.
    for (url, says) in [
        ("srt://venue", "port"),
        ("srt://venue:9000?passphrase=short", "passphrase"),
        ("srt://venue:9000?mode=listener", "caller"),
    ] {
        match s.apply(&with_ingest(Ingest::SrtCaller { url: url.into() })) {
            Err(Refusal::InvalidField { field, reason }) => {
                assert_eq!(field, "ingest.url");
                assert!(reason.contains(says), "{url}: {reason}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    assert!(matches!(
        s.apply(&with_ingest(Ingest::HlsPull { url: "https://a b".into() })),
        Err(Refusal::InvalidField { field, .. }) if field == "ingest.url"
    ));
    assert!(matches!(
        s.apply(&with_ingest(Ingest::SrtCaller {
            url: "srt://venue:9000".into()
        })),
        Ok(Applied::ChannelCreated { .. })
    ));
    let _ = VERIFIER_B;
}

#[test]
fn a_silent_endpoint_reads_as_stale() {
    let endpoint = Endpoint {
        name: "n1".into(),
        kind: EndpointKind::Origin,
        node: Some(1),
        url: "http://127.0.0.1:1".into(),
        upstreams: Vec::new(),
        health: HealthThresholds::default(),
        created_ms: 0,
    };
    let snap = EndpointSnapshot {
        at_ms: 1_000,
        viewers: 0,
        egress_bps: 0,
        ingress_bps: 0,
        playlist_age_ms: None,
        hit_ratio: None,
        health: Health::Degraded,
        channel_viewers: Default::default(),
    };
    let stale_after = endpoint.health.stale_after_ms as i64;
    assert_eq!(
        endpoint.health_at(Some(&snap), 1_000 + stale_after),
        Health::Degraded
    );
    assert_eq!(
        endpoint.health_at(Some(&snap), 1_001 + stale_after),
        Health::Stale
    );
    assert_eq!(endpoint.health_at(None, 0), Health::Stale);
}

/// Verifiers stay what earlier versions replicated (hex SHA-256), or every stored key
/// and token would stop matching after an upgrade.
#[test]
fn a_verifier_is_the_hex_sha256_of_the_secret() {
    assert_eq!(
        verifier_of("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
