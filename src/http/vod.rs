//! Recordings as video on demand, from any node:
//!
//! ```text
//! GET /vod/{channel}/{generation}/index.m3u8        the whole recording (VOD once finalized)
//! GET /vod/{channel}/{generation}/{init|msn.m4s}    its objects (immutable)
//! GET /vod/{channel}/{generation}/recording-{msn}.m3u8   one node's piece of it
//! GET /vod/{channel}/{generation}.mp4               one fragmented MP4 of it all
//! ```
//!
//! The replicated Recording record says which node holds which piece; a node that does
//! not hold one pulls it through the edge (single flight, cache) from the node that
//! does, so one cached object serves every viewer of this node.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use sluice_cluster::command::validate_slug;
use sluice_cluster::model::{Recording, RecordingPiece, RecordingStatus};
use sluice_media::playlist::names::{self, ObjectName};

use super::hls::{not_found, respond, HlsState, IMMUTABLE, NO_STORE, PLAYLIST_TYPE};
use crate::edge::{Upstream, EDGE_HEADER, ORIGIN_PULL_HEADER};
use crate::origin::recording::{combine, piece_file};
use crate::origin::spool::generation_dir;
use crate::origin::RENDITION;

/// A finished recording's playlist: short, since it can still be deleted.
const FINISHED: &str = "public, max-age=60";
/// Largest piece playlist read from another node.
const MAX_PIECE_PLAYLIST: usize = 64 * 1024 * 1024;

/// The recording of `generation` (not deleted), and each of its pieces' holder's HTTP
/// URL (`None` for this node).
fn lookup(
    s: &HlsState,
    channel: &str,
    generation: u64,
) -> Option<(Recording, Vec<Option<String>>)> {
    let me = s.handle.id();
    s.handle.read_local(|st| {
        let c = st.channel_by_slug(channel)?;
        let r = st
            .generation(c.id, generation)?
            .recording
            .clone()
            .filter(|r| r.status != RecordingStatus::Deleted)?;
        let holders = r
            .pieces
            .iter()
            .map(|p| {
                (p.node != me)
                    .then(|| st.nodes.get(&p.node).map(|n| n.urls.http.clone()))
                    .flatten()
            })
            .collect();
        Some((r, holders))
    })
}

/// A file of a piece this node holds, or pulled from the node that holds it.
async fn fetch_file(
    s: &HlsState,
    parts: &Parts,
    channel: &str,
    generation: u64,
    holder: Option<&str>,
    file: &str,
) -> Response {
    match holder {
        // Asked by another node that resolved this one as the holder: answer from here.
        Some(url) if !parts.headers.contains_key(ORIGIN_PULL_HEADER) => {
            let path = format!("/vod/{channel}/{generation}/{file}");
            let via = parts.headers.get(EDGE_HEADER).and_then(|v| v.to_str().ok());
            let chain = [Upstream {
                url: url.to_string(),
                origin: true,
            }];
            s.edge.fetch(&chain, &path, via).await.into_response()
        }
        _ => {
            let dir = generation_dir(s.origins.spool_root(), channel, generation, RENDITION);
            match tokio::fs::read(dir.join(file)).await {
                Ok(bytes) => respond(StatusCode::OK, IMMUTABLE, "video/mp4", bytes),
                Err(_) => not_found("recorded object"),
            }
        }
    }
}

async fn body_of(response: Response) -> Option<Bytes> {
    if response.status() != StatusCode::OK {
        return None;
    }
    axum::body::to_bytes(response.into_body(), MAX_PIECE_PLAYLIST)
        .await
        .ok()
}

/// The piece holding object `name`, by its index in the record.
fn piece_of(r: &Recording, name: ObjectName) -> Option<usize> {
    r.pieces.iter().position(|p| match name {
        ObjectName::Init(i) => p.holds_init(i),
        ObjectName::Segment(msn) => p.holds_segment(msn),
        ObjectName::Part(..) => false,
    })
}

pub(super) async fn object(
    State(s): State<HlsState>,
    Path((channel, generation, object)): Path<(String, String, String)>,
    parts: Parts,
) -> Response {
    let (Ok(generation), true) = (generation.parse::<u64>(), validate_slug(&channel).is_ok())
    else {
        return not_found("recording");
    };
    let Some((r, holders)) = lookup(&s, &channel, generation) else {
        return not_found("recording");
    };
    if object == "index.m3u8" {
        return index(&s, &parts, &channel, generation, &r, &holders).await;
    }
    if let Some(i) = r
        .pieces
        .iter()
        .position(|p| object == piece_file(p.first_msn))
    {
        return piece_playlist(&s, &parts, &channel, generation, &r.pieces[i], &holders[i]).await;
    }
    let Some(name) = names::parse(&object).filter(|n| !matches!(n, ObjectName::Part(..))) else {
        return not_found("recorded object");
    };
    let Some(i) = piece_of(&r, name) else {
        return not_found("recorded object");
    };
    fetch_file(
        &s,
        &parts,
        &channel,
        generation,
        holders[i].as_deref(),
        &object,
    )
    .await
}

/// One node's piece playlist, as it wrote it.
async fn piece_playlist(
    s: &HlsState,
    parts: &Parts,
    channel: &str,
    generation: u64,
    piece: &RecordingPiece,
    holder: &Option<String>,
) -> Response {
    let file = piece_file(piece.first_msn);
    let fetched = fetch_file(s, parts, channel, generation, holder.as_deref(), &file).await;
    let Some(text) = body_of(fetched).await else {
        return not_found("recording playlist");
    };
    let cache = if piece.finished { FINISHED } else { NO_STORE };
    respond(StatusCode::OK, cache, PLAYLIST_TYPE, text)
}

/// The whole recording's playlist: its pieces' playlists, in order.
async fn index(
    s: &HlsState,
    parts: &Parts,
    channel: &str,
    generation: u64,
    r: &Recording,
    holders: &[Option<String>],
) -> Response {
    let mut texts = Vec::with_capacity(r.pieces.len());
    for (piece, holder) in r.pieces.iter().zip(holders) {
        let response = piece_playlist(s, parts, channel, generation, piece, holder).await;
        match body_of(response).await {
            Some(text) => texts.push(String::from_utf8_lossy(&text).into_owned()),
            None => {
                return respond(
                    StatusCode::BAD_GATEWAY,
                    NO_STORE,
                    "text/plain; charset=utf-8",
                    format!(
                        "the piece of this recording on node {} cannot be read now\n",
                        piece.node
                    ),
                )
            }
        }
    }
    let finalized = r.status != RecordingStatus::Recording;
    let cache = if finalized { FINISHED } else { NO_STORE };
    respond(
        StatusCode::OK,
        cache,
        PLAYLIST_TYPE,
        combine(&texts, finalized),
    )
}

/// `/vod/{channel}/{generation}.mp4`: the init segment, then every segment in order,
/// streamed as they are read: one fragmented MP4 that players and ffmpeg read whole.
pub(super) async fn download(
    State(s): State<HlsState>,
    Path((channel, file)): Path<(String, String)>,
    parts: Parts,
) -> Response {
    let generation = file
        .strip_suffix(".mp4")
        .and_then(|g| g.parse::<u64>().ok());
    let (Some(generation), true) = (generation, validate_slug(&channel).is_ok()) else {
        return not_found("recording");
    };
    let Some((r, holders)) = lookup(&s, &channel, generation) else {
        return not_found("recording");
    };
    // One moov for the whole file: every init segment must be the same bytes.
    let mut init: Option<Bytes> = None;
    for (piece, holder) in r.pieces.iter().zip(&holders) {
        for index in piece.first_init..=piece.last_init {
            let name = names::init(index);
            let fetched = fetch_file(&s, &parts, &channel, generation, holder.as_deref(), &name);
            let Some(bytes) = body_of(fetched.await).await else {
                continue;
            };
            match &init {
                None => init = Some(bytes),
                Some(first) if *first != bytes => {
                    return respond(
                        StatusCode::CONFLICT,
                        NO_STORE,
                        "text/plain; charset=utf-8",
                        format!(
                            "the stream's codec settings change at {name} of node {}: one MP4 \
                             cannot hold both; play /vod/{channel}/{generation}/index.m3u8\n",
                            piece.node
                        ),
                    )
                }
                Some(_) => {}
            }
        }
    }
    let Some(init) = init else {
        return not_found("recording (no init segment)");
    };
    let cache = if r.status == RecordingStatus::Recording {
        NO_STORE
    } else {
        FINISHED
    };
    let segments: Vec<(u64, Option<String>)> = r
        .pieces
        .iter()
        .zip(holders)
        .flat_map(|(p, holder)| {
            let last = p.last_msn.map_or(p.first_msn, |l| l + 1);
            (p.first_msn..last).map(move |msn| (msn, holder.clone()))
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let slug = channel.clone();
    tokio::spawn(async move {
        if tx.send(Ok(init)).await.is_err() {
            return;
        }
        for (msn, holder) in segments {
            let name = names::segment(msn);
            let fetched = fetch_file(&s, &parts, &slug, generation, holder.as_deref(), &name).await;
            if fetched.status() != StatusCode::OK {
                // A segment lost to a failed write: the file goes on without it.
                tracing::warn!(channel = %slug, generation, msn,
                    "recorded segment missing from the MP4 download");
                continue;
            }
            // Passed on as it comes (whatever its size): a segment cut off midway ends
            // the download cut off, never a file with half a segment in it.
            let mut body = fetched.into_body().into_data_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(std::io::Error::other);
                let broken = chunk.is_err();
                if tx.send(chunk).await.is_err() || broken {
                    return;
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream_of(rx));
    let mut response = respond(StatusCode::OK, cache, "video/mp4", body);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{channel}-{generation}.mp4\""
    )) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// The receiver as a stream of body chunks.
fn tokio_stream_of(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
