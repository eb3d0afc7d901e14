//! What a viewer's request carries: the blocking-reload query (`_HLS_msn`, `_HLS_part`,
//! `_HLS_skip`) and object names. The first two bytes shape a live playlist (segments,
//! parts per segment, open or ended); `decide` then answers the query against it, and
//! a delta playlist is written when one is asked for. The rest is the request text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_media::packager::{Part, SegmentEnd, SegmentStart};
use sluice_media::playlist::blocking::{decide, Directives};
use sluice_media::playlist::{names, MediaPlaylist, PlaylistSettings};
use sluice_media::Output;

/// A playlist of up to 8 segments of up to 8 parts, starting at `first_msn`.
fn playlist(shape: u8, more: u8) -> MediaPlaylist {
    let mut p = MediaPlaylist::new(PlaylistSettings {
        target_duration_s: 2,
        part_target_ms: if more & 1 == 0 { 200 } else { 1000 },
        window_segments: 1 + usize::from(more >> 5),
        uri_prefix: "0/".into(),
    });
    let segments = u64::from(shape & 7);
    let parts = u32::from(shape >> 3 & 7);
    let first_msn = u64::from(more >> 1 & 0x0f) * 1000;
    for msn in first_msn..first_msn + segments {
        p.apply(&Output::SegmentStart(SegmentStart {
            msn,
            program_date_time_ms: 0,
            discontinuity: msn % 3 == 1,
            init_index: 0,
        }));
        for index in 0..parts {
            p.apply(&Output::Part(Part {
                msn,
                index,
                duration_us: 200_000,
                independent: index == 0,
                data: bytes::Bytes::new(),
            }));
        }
        // The last segment stays open unless the shape says otherwise.
        if msn + 1 < first_msn + segments || shape & 0x40 != 0 {
            p.apply(&Output::SegmentEnd(SegmentEnd {
                msn,
                duration_us: u64::from(parts) * 200_000,
                parts,
                bytes: 0,
            }));
        }
    }
    if shape & 0x80 != 0 {
        p.end();
    }
    p
}

fuzz_target!(|data: &[u8]| {
    let [shape, more, request @ ..] = data else {
        return;
    };
    let Ok(request) = std::str::from_utf8(request) else {
        return;
    };
    let _ = names::parse(request);
    // A request line's path and query, as the HTTP layer splits it.
    let (path, query) = request.split_once('?').unwrap_or((request, ""));
    let _ = names::parse(path.rsplit('/').next().unwrap_or(path));
    for q in [request, query] {
        if let Ok(d) = Directives::parse(q) {
            let _ = d.is_blocking();
            let p = playlist(*shape, *more);
            let _ = decide(&p, &d);
            let _ = p.render(d.skip, &[]);
        }
    }
});
