//! Recordings: each generation of a recording channel, playable as VOD from any node.

use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_cluster::command::Op;
use sluice_cluster::model::{Generation, GenerationState, Recording, RecordingStatus};
use utoipa::ToSchema;

use super::channels::with_channel;
use super::{error, not_found, propose, Answer, ApiState, Refused};

/// One recording and where to play or download it (paths on any node).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RecordingView {
    pub(crate) channel: String,
    pub(crate) generation: u64,
    pub(crate) generation_state: GenerationState,
    pub(crate) started_ms: i64,
    #[serde(flatten)]
    pub(crate) recording: Recording,
    /// HLS VOD playlist (an EVENT playlist while it is being written).
    pub(crate) playlist_path: String,
    /// One fragmented MP4 of the whole recording.
    pub(crate) download_path: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct RecordingList {
    pub(crate) channel: String,
    /// Newest first; deleted ones are not listed.
    pub(crate) recordings: Vec<RecordingView>,
}

fn view(slug: &str, g: &Generation) -> Option<RecordingView> {
    let recording = g
        .recording
        .clone()
        .filter(|r| r.status != RecordingStatus::Deleted)?;
    Some(RecordingView {
        channel: slug.to_string(),
        generation: g.number,
        generation_state: g.state,
        started_ms: g.started_ms,
        recording,
        playlist_path: format!("/vod/{slug}/{}/index.m3u8", g.number),
        download_path: format!("/vod/{slug}/{}.mp4", g.number),
    })
}

/// A generation number from the path: 422 naming it otherwise.
fn generation_number(text: &str) -> Result<u64, Refused> {
    text.parse().map_err(|_| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("generation: {text:?} is not a generation number"),
            Some("generation"),
        )
    })
}

#[utoipa::path(get, path = "/api/v1/channels/{name}/recordings", tag = "recordings",
    params(("name" = String, Path, description = "Channel name")),
    responses(
        (status = 200, body = RecordingList),
        (status = 404, body = super::ApiError),
    ))]
pub(super) async fn list(AxumState(s): AxumState<ApiState>, Path(name): Path<String>) -> Answer {
    let listed = with_channel(&s, &name, |st, c| RecordingList {
        channel: c.slug.clone(),
        recordings: st
            .generations
            .get(&c.id)
            .map(|g| g.values().rev().filter_map(|g| view(&c.slug, g)).collect())
            .unwrap_or_default(),
    })
    .await;
    let l = listed?;
    Ok(Json(l).into_response())
}

#[utoipa::path(get, path = "/api/v1/channels/{name}/recordings/{generation}", tag = "recordings",
    params(
        ("name" = String, Path, description = "Channel name"),
        ("generation" = String, Path, description = "Generation number"),
    ),
    responses(
        (status = 200, body = RecordingView),
        (status = 404, body = super::ApiError),
        (status = 422, description = "Not a generation number", body = super::ApiError),
    ))]
pub(super) async fn show(
    AxumState(s): AxumState<ApiState>,
    Path((name, generation)): Path<(String, String)>,
) -> Answer {
    let number = generation_number(&generation)?;
    let found = with_channel(&s, &name, move |st, c| {
        st.generation(c.id, number).and_then(|g| view(&c.slug, g))
    })
    .await?;
    match found {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(not_found("recording", &generation)),
    }
}

#[utoipa::path(delete, path = "/api/v1/channels/{name}/recordings/{generation}", tag = "recordings",
    params(
        ("name" = String, Path, description = "Channel name"),
        ("generation" = String, Path, description = "Generation number"),
    ),
    responses(
        (status = 204, description = "Deleted: every node removes its files at its next sweep"),
        (status = 404, body = super::ApiError),
        (status = 409, description = "The recording is being written (its generation is live)", body = super::ApiError),
        (status = 422, description = "Not a generation number", body = super::ApiError),
    ))]
pub(super) async fn delete(
    AxumState(s): AxumState<ApiState>,
    Path((name, generation)): Path<(String, String)>,
) -> Answer {
    let number = generation_number(&generation)?;
    let op = Op::DeleteRecording {
        channel: name,
        generation: number,
    };
    propose(&s, op).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
