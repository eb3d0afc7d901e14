//! Counters behind `/metrics`, written as Prometheus text by hand (a handful of
//! families; no registry needed).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Viewers are distinct sessions (address + user agent) seen within this window.
pub(crate) const VIEWER_WINDOW: Duration = Duration::from_secs(30);
/// Upper bounds of the part publish delay histogram, seconds.
const DELAY_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Default)]
struct ChannelCounters {
    ingest_bytes: u64,
    ingest_frames: u64,
    /// Bytes over the last few seconds, for the bit rate gauge.
    rate_window: Vec<(Instant, u64)>,
    viewers: HashMap<u64, Instant>,
}

#[derive(Default)]
pub(crate) struct Metrics {
    channels: Mutex<BTreeMap<String, ChannelCounters>>,
    delay_buckets: [AtomicU64; DELAY_BUCKETS.len()],
    delay_count: AtomicU64,
    delay_sum_us: AtomicU64,
    playlist_plain: AtomicU64,
    playlist_blocking: AtomicU64,
    blocking_waiters: AtomicU64,
    spool_errors: AtomicU64,
}

/// Decrements the blocking-waiter gauge when a held request ends, however it ends.
pub(crate) struct Waiting<'a>(&'a Metrics);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.blocking_waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    fn with_channel(&self, channel: &str, f: impl FnOnce(&mut ChannelCounters)) {
        if let Ok(mut map) = self.channels.lock() {
            if let Some(c) = map.get_mut(channel) {
                f(c);
            } else {
                let mut c = ChannelCounters::default();
                f(&mut c);
                map.insert(channel.to_string(), c);
            }
        }
    }

    pub(crate) fn ingest(&self, channel: &str, bytes: usize, now: Instant) {
        self.with_channel(channel, |c| {
            c.ingest_bytes += bytes as u64;
            c.ingest_frames += 1;
            c.rate_window.push((now, bytes as u64));
            if c.rate_window.len() > 4096 || c.rate_window[0].0 + Duration::from_secs(10) < now {
                let cutoff = now.checked_sub(Duration::from_secs(5)).unwrap_or(now);
                c.rate_window.retain(|(t, _)| *t >= cutoff);
            }
        });
    }

    pub(crate) fn part_published(&self, delay: Duration) {
        let secs = delay.as_secs_f64();
        for (bucket, bound) in self.delay_buckets.iter().zip(DELAY_BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.delay_count.fetch_add(1, Ordering::Relaxed);
        self.delay_sum_us
            .fetch_add(delay.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn playlist_request(&self, blocking: bool) {
        let counter = if blocking {
            &self.playlist_blocking
        } else {
            &self.playlist_plain
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn waiting(&self) -> Waiting<'_> {
        self.blocking_waiters.fetch_add(1, Ordering::Relaxed);
        Waiting(self)
    }

    pub(crate) fn viewer(&self, channel: &str, session: u64, now: Instant) {
        self.with_channel(channel, |c| {
            c.viewers.insert(session, now);
            if c.viewers.len() > 1024 {
                c.viewers
                    .retain(|_, seen| now.duration_since(*seen) < VIEWER_WINDOW);
            }
        });
    }

    pub(crate) fn spool_error(&self) {
        self.spool_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, now: Instant) -> String {
        let mut out = String::new();
        let Ok(channels) = self.channels.lock() else {
            return out;
        };
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "sluice_ingest_bytes_total",
            "counter",
            "Media bytes received per channel.",
        );
        for (name, c) in channels.iter() {
            let _ = writeln!(
                out,
                "sluice_ingest_bytes_total{{channel=\"{name}\"}} {}",
                c.ingest_bytes
            );
        }
        family(
            &mut out,
            "sluice_ingest_frames_total",
            "counter",
            "Frames received per channel.",
        );
        for (name, c) in channels.iter() {
            let _ = writeln!(
                out,
                "sluice_ingest_frames_total{{channel=\"{name}\"}} {}",
                c.ingest_frames
            );
        }
        family(
            &mut out,
            "sluice_ingest_bits_per_second",
            "gauge",
            "Ingest bit rate over the last 5 s.",
        );
        for (name, c) in channels.iter() {
            let cutoff = now.checked_sub(Duration::from_secs(5)).unwrap_or(now);
            let bytes: u64 = c
                .rate_window
                .iter()
                .filter(|(t, _)| *t >= cutoff)
                .map(|(_, b)| b)
                .sum();
            let _ = writeln!(
                out,
                "sluice_ingest_bits_per_second{{channel=\"{name}\"}} {}",
                bytes * 8 / 5
            );
        }
        family(
            &mut out,
            "sluice_viewers",
            "gauge",
            "Distinct viewer sessions per channel in the last 30 s.",
        );
        for (name, c) in channels.iter() {
            let n = c
                .viewers
                .values()
                .filter(|seen| now.duration_since(**seen) < VIEWER_WINDOW)
                .count();
            let _ = writeln!(out, "sluice_viewers{{channel=\"{name}\"}} {n}");
        }
        drop(channels);
        family(
            &mut out,
            "sluice_part_publish_delay_seconds",
            "histogram",
            "From the arrival of the frame that completes a part to the part being servable.",
        );
        for (bucket, bound) in self.delay_buckets.iter().zip(DELAY_BUCKETS) {
            let _ = writeln!(
                out,
                "sluice_part_publish_delay_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.delay_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "sluice_part_publish_delay_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "sluice_part_publish_delay_seconds_sum {}",
            self.delay_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "sluice_part_publish_delay_seconds_count {count}");
        family(
            &mut out,
            "sluice_playlist_requests_total",
            "counter",
            "Media playlist requests.",
        );
        let _ = writeln!(
            out,
            "sluice_playlist_requests_total{{kind=\"plain\"}} {}",
            self.playlist_plain.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "sluice_playlist_requests_total{{kind=\"blocking\"}} {}",
            self.playlist_blocking.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "sluice_blocking_waiters",
            "gauge",
            "Requests held until a playlist or part exists.",
        );
        let _ = writeln!(
            out,
            "sluice_blocking_waiters {}",
            self.blocking_waiters.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "sluice_spool_errors_total",
            "counter",
            "Spool disk writes that failed.",
        );
        let _ = writeln!(
            out,
            "sluice_spool_errors_total {}",
            self.spool_errors.load(Ordering::Relaxed)
        );
        out
    }
}
