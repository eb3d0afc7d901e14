//! The LL-HLS blocking playlist reload decision (draft-pantos-hls-rfc8216bis §6.2.5.2),
//! a pure function of the playlist and the query. The caller holds a `Wait` until the
//! playlist changes, and answers 503 once it has waited three target durations.

use super::{MediaPlaylist, Skip};

/// The delivery directives of a playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Directives {
    pub msn: Option<u64>,
    pub part: Option<u32>,
    pub skip: Skip,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    #[error("{name} must be a non-negative integer, got {value:?}")]
    NotANumber { name: &'static str, value: String },
    #[error("_HLS_skip must be YES or v2, got {0:?}")]
    BadSkip(String),
}

impl Directives {
    /// Reads `_HLS_msn`, `_HLS_part` and `_HLS_skip` from a query string; other
    /// parameters (a playback token, cache busters) are left alone.
    pub fn parse(query: &str) -> Result<Self, DirectiveError> {
        let mut d = Directives::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "_HLS_msn" => {
                    d.msn = Some(value.parse().map_err(|_| DirectiveError::NotANumber {
                        name: "_HLS_msn",
                        value: value.to_string(),
                    })?)
                }
                "_HLS_part" => {
                    d.part = Some(value.parse().map_err(|_| DirectiveError::NotANumber {
                        name: "_HLS_part",
                        value: value.to_string(),
                    })?)
                }
                "_HLS_skip" => {
                    d.skip = match value {
                        "YES" => Skip::Yes,
                        "v2" => Skip::V2,
                        other => return Err(DirectiveError::BadSkip(other.to_string())),
                    }
                }
                _ => {}
            }
        }
        Ok(d)
    }

    /// A request that must wait for a segment or part (else it is a plain reload).
    pub fn is_blocking(&self) -> bool {
        self.msn.is_some() || self.part.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer now with the whole playlist.
    Ready,
    /// Hold the request until the playlist changes, then decide again.
    Wait,
    /// Answer 400 at once.
    BadRequest(&'static str),
}

/// The Advance Part Limit: how many parts past the last one a client may ask for.
fn advance_part_limit(part_target_ms: u32) -> u64 {
    if part_target_ms < 1000 {
        3000 / u64::from(part_target_ms.max(1))
    } else {
        3
    }
}

/// A live playlist is served once it lists a whole segment: before that (a new stream,
/// or a generation resumed on another node) every request waits, since players take a
/// playlist of parts only for an error.
pub fn decide(playlist: &MediaPlaylist, d: &Directives) -> Decision {
    let first_segment_pending = !playlist.is_ended() && !playlist.has_whole_segment();
    let Some(msn) = d.msn else {
        return if d.part.is_some() {
            Decision::BadRequest("_HLS_part requires _HLS_msn")
        } else if first_segment_pending {
            Decision::Wait
        } else {
            Decision::Ready
        };
    };
    // Where the playlist is now; before the first part, the first segment expected.
    let (last_msn, last_part) = match playlist.last_part() {
        Some((m, p)) => (m, Some(p)),
        None => (playlist.next_part().0, None),
    };
    if msn > last_msn.saturating_add(2) {
        return Decision::BadRequest("_HLS_msn is more than two segments past the last one");
    }
    if let Some(part) = d.part {
        let ahead = if msn == last_msn {
            i64::from(part) - last_part.map_or(-1, i64::from)
        } else if msn > last_msn {
            i64::from(part) + 1
        } else {
            0
        };
        if ahead > advance_part_limit(playlist.settings().part_target_ms) as i64 {
            return Decision::BadRequest("_HLS_part is past the advance part limit");
        }
    }
    if playlist.is_ended() {
        return Decision::Ready;
    }
    if first_segment_pending {
        return Decision::Wait;
    }
    if playlist.first_msn().is_some_and(|first| msn < first) {
        return Decision::Ready;
    }
    let ready = match (playlist.segment(msn), d.part) {
        // An earlier origin's segment listed as a gap gets no parts here: the playlist
        // is past it once an own segment is whole (checked above).
        (Some(seg), _) if seg.gap => true,
        (Some(seg), None) => seg.duration_us.is_some(),
        (Some(seg), Some(p)) => {
            (p as usize) < seg.parts.len()
                // Past the last part of a finished segment: the next segment's first part.
                || (seg.duration_us.is_some()
                    && playlist.segment(msn + 1).is_some_and(|next| !next.parts.is_empty()))
        }
        (None, _) => false,
    };
    if ready {
        Decision::Ready
    } else {
        Decision::Wait
    }
}
