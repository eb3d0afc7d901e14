//! One function per playlist tag, each writing one line.

use std::fmt::Write as _;

use super::datetime::format_rfc3339_ms;
use super::names;
use super::{PartEntry, RenditionReport};

/// Seconds with five decimals: exact for microsecond durations rounded to 10 µs.
fn secs(us: u64) -> String {
    let tens_of_us = (us + 5) / 10;
    format!("{}.{:05}", tens_of_us / 100_000, tens_of_us % 100_000)
}

fn secs_ms(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

pub fn version(out: &mut String, v: u32) {
    let _ = writeln!(out, "#EXT-X-VERSION:{v}");
}

pub fn target_duration(out: &mut String, td_s: u32) {
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{td_s}");
}

/// PART-HOLD-BACK 3 × PART-TARGET, HOLD-BACK 3 × TD, CAN-SKIP-UNTIL 6 × TD.
pub fn server_control(out: &mut String, part_target_ms: u32, td_s: u32) {
    let _ = writeln!(
        out,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={},PART-HOLD-BACK={},HOLD-BACK={}",
        secs_ms(6_000 * u64::from(td_s)),
        secs_ms(3 * u64::from(part_target_ms)),
        secs_ms(3_000 * u64::from(td_s)),
    );
}

pub fn part_inf(out: &mut String, part_target_ms: u32) {
    let _ = writeln!(
        out,
        "#EXT-X-PART-INF:PART-TARGET={}",
        secs_ms(u64::from(part_target_ms))
    );
}

/// Where a player joining should start, from the start of the playlist.
pub fn start(out: &mut String, offset_ms: u64) {
    let _ = writeln!(
        out,
        "#EXT-X-START:TIME-OFFSET={},PRECISE=YES",
        secs_ms(offset_ms)
    );
}

pub fn media_sequence(out: &mut String, msn: u64) {
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{msn}");
}

pub fn discontinuity_sequence(out: &mut String, n: u64) {
    let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{n}");
}

/// With `v2` the client also skips date ranges; Sluice writes none, so none were removed.
pub fn skip(out: &mut String, segments: usize, v2: bool) {
    let _ = write!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={segments}");
    if v2 {
        out.push_str(",RECENTLY-REMOVED-DATERANGES=\"\"");
    }
    out.push('\n');
}

pub fn discontinuity(out: &mut String) {
    let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
}

pub fn map(out: &mut String, prefix: &str, init_index: u32) {
    let _ = writeln!(
        out,
        "#EXT-X-MAP:URI=\"{prefix}{}\"",
        names::init(init_index)
    );
}

pub fn gap(out: &mut String) {
    let _ = writeln!(out, "#EXT-X-GAP");
}

pub fn program_date_time(out: &mut String, unix_ms: i64) {
    let _ = writeln!(
        out,
        "#EXT-X-PROGRAM-DATE-TIME:{}",
        format_rfc3339_ms(unix_ms)
    );
}

pub fn part(out: &mut String, prefix: &str, msn: u64, index: u32, part: &PartEntry) {
    let _ = write!(
        out,
        "#EXT-X-PART:DURATION={},URI=\"{prefix}{}\"",
        secs(part.duration_us),
        names::part(msn, index)
    );
    if part.independent {
        out.push_str(",INDEPENDENT=YES");
    }
    out.push('\n');
}

pub fn segment(out: &mut String, prefix: &str, msn: u64, duration_us: u64) {
    let _ = writeln!(
        out,
        "#EXTINF:{},\n{prefix}{}",
        secs(duration_us),
        names::segment(msn)
    );
}

pub fn preload_hint(out: &mut String, prefix: &str, msn: u64, part: u32) {
    let _ = writeln!(
        out,
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{prefix}{}\"",
        names::part(msn, part)
    );
}

pub fn rendition_report(out: &mut String, r: &RenditionReport) {
    let _ = write!(
        out,
        "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
        r.uri, r.last_msn
    );
    if let Some(p) = r.last_part {
        let _ = write!(out, ",LAST-PART={p}");
    }
    out.push('\n');
}

pub fn endlist(out: &mut String) {
    let _ = writeln!(out, "#EXT-X-ENDLIST");
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_are_written_with_fixed_decimals() {
        assert_eq!(super::secs(2_000_000), "2.00000");
        assert_eq!(super::secs(166_666), "0.16667");
        assert_eq!(super::secs(999_996), "1.00000");
        assert_eq!(super::secs_ms(600), "0.600");
    }
}
