//! Counters behind `/metrics`, written as Prometheus text by hand (a handful of
//! families; no registry needed).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Viewers are distinct sessions (address + user agent) seen within this window.
pub(crate) const VIEWER_WINDOW: Duration = Duration::from_secs(30);
/// Viewer sessions remembered per channel at most (a bound against made-up sessions).
const MAX_VIEWER_SESSIONS: usize = 100_000;
/// Below this many sessions stale ones are left until the next sweep is due.
const VIEWER_PRUNE_ABOVE: usize = 1_024;
/// Upper bounds of the part publish delay histogram, seconds.
const DELAY_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Default)]
struct ChannelCounters {
    ingest_bytes: u64,
    ingest_frames: u64,
    /// MPEG-TS (SRT) input: continuity-counter gaps, and bytes skipped to find a packet.
    ts_continuity_errors: u64,
    ts_skipped_bytes: u64,
    /// Pulled channels: connections this node opened to the source, and attempts that
    /// failed.
    pull_connections: u64,
    pull_failures: u64,
    /// Bytes over the last few seconds, for the bit rate gauge.
    rate_window: Vec<(Instant, u64)>,
    viewers: HashMap<u64, Instant>,
    viewers_pruned: Option<Instant>,
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
    recording_failures: AtomicU64,
    /// Requests other nodes and edges made here to pull through (objects, playlists).
    pulled_objects: AtomicU64,
    pulled_playlists: AtomicU64,
    /// Body bytes of viewer responses (playlists counted before compression).
    egress_bytes: AtomicU64,
    /// When this node last published a part of any channel.
    last_part: Mutex<Option<Instant>>,
}

/// Decrements the blocking-waiter gauge when a held request ends, however it ends.
pub(crate) struct Waiting<'a>(&'a Metrics);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.blocking_waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A label value as the Prometheus text format writes it: backslash, double quote and
/// line feed escaped, so no value can end its line or start another.
pub(crate) fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Metrics {
    /// Drops the counters of channels that no longer exist (deleted), so the series
    /// are those of the channels the cluster knows.
    pub(crate) fn retain_channels(&self, exists: impl Fn(&str) -> bool) {
        if let Ok(mut map) = self.channels.lock() {
            map.retain(|slug, _| exists(slug));
        }
    }

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

    /// Losses an MPEG-TS demuxer counted since the last call.
    pub(crate) fn ts_losses(&self, channel: &str, continuity_errors: u64, skipped_bytes: u64) {
        if continuity_errors == 0 && skipped_bytes == 0 {
            return;
        }
        self.with_channel(channel, |c| {
            c.ts_continuity_errors += continuity_errors;
            c.ts_skipped_bytes += skipped_bytes;
        });
    }

    /// An attempt to connect to a pulled channel's source.
    pub(crate) fn pull_attempt(&self, channel: &str, connected: bool) {
        self.with_channel(channel, |c| {
            if connected {
                c.pull_connections += 1;
            } else {
                c.pull_failures += 1;
            }
        });
    }

    pub(crate) fn part_published(&self, delay: Duration) {
        if let Ok(mut last) = self.last_part.lock() {
            *last = Some(Instant::now());
        }
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
            // Stale sessions go at most once a second, so a request never pays for a
            // sweep over every viewer; past the cap new sessions are not counted.
            let due = c
                .viewers_pruned
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
            if c.viewers.len() >= VIEWER_PRUNE_ABOVE && due {
                c.viewers
                    .retain(|_, seen| now.duration_since(*seen) < VIEWER_WINDOW);
                c.viewers_pruned = Some(now);
            }
            if c.viewers.len() < MAX_VIEWER_SESSIONS || c.viewers.contains_key(&session) {
                c.viewers.insert(session, now);
            }
        });
    }

    /// A pull-through request from another node or edge was answered here.
    pub(crate) fn pulled(&self, playlist: bool) {
        let c = if playlist {
            &self.pulled_playlists
        } else {
            &self.pulled_objects
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes sent to viewers and edges.
    pub(crate) fn sent(&self, bytes: u64) {
        self.egress_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn egress_bytes(&self) -> u64 {
        self.egress_bytes.load(Ordering::Relaxed)
    }

    /// Media bytes received from publishers, all channels.
    pub(crate) fn ingest_bytes(&self) -> u64 {
        self.channels
            .lock()
            .map(|m| m.values().map(|c| c.ingest_bytes).sum())
            .unwrap_or(0)
    }

    /// Distinct viewer sessions seen within the window, per channel with any (the
    /// `limit` channels with the most).
    pub(crate) fn viewers_by_channel(&self, now: Instant, limit: usize) -> BTreeMap<String, u64> {
        let mut counts: Vec<(String, u64)> = self
            .channels
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(slug, c)| {
                        let n = c
                            .viewers
                            .values()
                            .filter(|seen| now.duration_since(**seen) < VIEWER_WINDOW)
                            .count() as u64;
                        (slug.to_string(), n)
                    })
                    .filter(|(_, n)| *n > 0)
                    .collect()
            })
            .unwrap_or_default();
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        counts.truncate(limit);
        counts.into_iter().collect()
    }

    /// Distinct viewer sessions seen within the window, all channels.
    pub(crate) fn viewers(&self, now: Instant) -> u64 {
        self.channels
            .lock()
            .map(|m| {
                m.values()
                    .map(|c| {
                        c.viewers
                            .values()
                            .filter(|seen| now.duration_since(**seen) < VIEWER_WINDOW)
                            .count() as u64
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    /// How long ago this node last published a part.
    pub(crate) fn since_last_part(&self, now: Instant) -> Option<Duration> {
        self.last_part
            .lock()
            .ok()
            .and_then(|l| *l)
            .map(|t| now.duration_since(t))
    }

    pub(crate) fn recording_failed(&self) {
        self.recording_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn spool_error(&self) {
        self.spool_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, now: Instant) -> String {
        let mut out = String::new();
        let Ok(channels) = self.channels.lock() else {
            return out;
        };
        // One line per channel for each per-channel family.
        for (name, kind, help, value) in channel_families() {
            family(&mut out, name, kind, help);
            for (channel, c) in channels.iter() {
                let channel = label(channel);
                let _ = writeln!(out, "{name}{{channel=\"{channel}\"}} {}", value(c, now));
            }
        }
        drop(channels);
        self.render_publish_delay(&mut out);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let node_families: [NodeFamily<'_>; 5] = [
            (
                "sluice_playlist_requests_total",
                "counter",
                "Media playlist requests.",
                &[
                    ("{kind=\"plain\"}", &self.playlist_plain),
                    ("{kind=\"blocking\"}", &self.playlist_blocking),
                ],
            ),
            (
                "sluice_blocking_waiters",
                "gauge",
                "Requests held until a playlist or part exists.",
                &[("", &self.blocking_waiters)],
            ),
            (
                "sluice_spool_errors_total",
                "counter",
                "Spool disk writes that failed.",
                &[("", &self.spool_errors)],
            ),
            (
                "sluice_recording_failures_total",
                "counter",
                "Recordings that failed because a disk write failed.",
                &[("", &self.recording_failures)],
            ),
            (
                "sluice_pulled_requests_total",
                "counter",
                "Requests from edges and other nodes pulling through this node.",
                &[
                    ("{kind=\"object\"}", &self.pulled_objects),
                    ("{kind=\"playlist\"}", &self.pulled_playlists),
                ],
            ),
        ];
        for (name, kind, help, series) in node_families {
            family(&mut out, name, kind, help);
            for (labels, value) in series {
                let _ = writeln!(out, "{name}{labels} {}", load(value));
            }
        }
        out
    }

    /// The part publish delay histogram.
    fn render_publish_delay(&self, out: &mut String) {
        let name = "sluice_part_publish_delay_seconds";
        family(
            out,
            name,
            "histogram",
            "From the arrival of the frame that completes a part to the part being servable.",
        );
        for (bucket, bound) in self.delay_buckets.iter().zip(DELAY_BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.delay_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.delay_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// A family's `HELP` and `TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A node-wide family: name, type, help, and its series (labels and counter).
type NodeFamily<'a> = (
    &'static str,
    &'static str,
    &'static str,
    &'a [(&'static str, &'a AtomicU64)],
);

/// One channel's value of a per-channel family, at `now`.
type ChannelValue = fn(&ChannelCounters, Instant) -> u64;

/// The per-channel families: name, type, help and how to read a channel's value.
fn channel_families() -> [(&'static str, &'static str, &'static str, ChannelValue); 8] {
    [
        (
            "sluice_ingest_bytes_total",
            "counter",
            "Media bytes received per channel.",
            |c, _| c.ingest_bytes,
        ),
        (
            "sluice_ingest_frames_total",
            "counter",
            "Frames received per channel.",
            |c, _| c.ingest_frames,
        ),
        (
            "sluice_ingest_ts_continuity_errors_total",
            "counter",
            "MPEG-TS continuity-counter gaps (lost packets) in SRT input per channel.",
            |c, _| c.ts_continuity_errors,
        ),
        (
            "sluice_ingest_ts_skipped_bytes_total",
            "counter",
            "Bytes of SRT input skipped because they were not MPEG-TS packets.",
            |c, _| c.ts_skipped_bytes,
        ),
        (
            "sluice_pull_connections_total",
            "counter",
            "Connections this node opened to a pulled channel's source.",
            |c, _| c.pull_connections,
        ),
        (
            "sluice_pull_failures_total",
            "counter",
            "Failed attempts to connect to a pulled channel's source.",
            |c, _| c.pull_failures,
        ),
        (
            "sluice_ingest_bits_per_second",
            "gauge",
            "Ingest bit rate over the last 5 s.",
            |c, now| {
                let cutoff = now.checked_sub(Duration::from_secs(5)).unwrap_or(now);
                let bytes: u64 = c
                    .rate_window
                    .iter()
                    .filter(|(t, _)| *t >= cutoff)
                    .map(|(_, b)| b)
                    .sum();
                bytes * 8 / 5
            },
        ),
        (
            "sluice_viewers",
            "gauge",
            "Distinct viewer sessions per channel in the last 30 s.",
            |c, now| {
                c.viewers
                    .values()
                    .filter(|seen| now.duration_since(**seen) < VIEWER_WINDOW)
                    .count() as u64
            },
        ),
    ]
}

/// The pull-through (edge) families: cache hits and misses, upstream requests by
/// kind, coalesced waiters, upstream failures, cache size.
/// Channels the cluster will not move although their node is down (SDI, pinned), from
/// this node's copy of the state: one line each, with the reason.
pub(crate) fn render_alerts(out: &mut String, state: &sluice_cluster::State) {
    let _ = writeln!(
        out,
        "# HELP sluice_channel_alert A channel whose node is down and that the cluster will not move (SDI hardware, a pin): 1 while it lasts."
    );
    let _ = writeln!(out, "# TYPE sluice_channel_alert gauge");
    for c in state.channels.values() {
        if let Some(why) = sluice_cluster::placement::alert(state, c) {
            let _ = writeln!(
                out,
                "sluice_channel_alert{{channel=\"{}\",reason=\"{}\"}} 1",
                label(&c.slug),
                label(&why)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_count_distinct_sessions_in_the_window_and_render_per_channel() {
        let m = Metrics::default();
        let t0 = Instant::now();
        m.viewer("news", 1, t0);
        m.viewer("news", 1, t0);
        m.viewer("news", 2, t0);
        m.ingest("news", 1_000, t0);
        let text = m.render(t0);
        assert!(
            text.contains("sluice_viewers{channel=\"news\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_ingest_bytes_total{channel=\"news\"} 1000\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_ingest_frames_total{channel=\"news\"} 1\n"),
            "{text}"
        );
        m.ts_losses("news", 2, 100);
        m.ts_losses("news", 1, 0);
        let text = m.render(t0);
        assert!(
            text.contains("sluice_ingest_ts_continuity_errors_total{channel=\"news\"} 3\n")
                && text.contains("sluice_ingest_ts_skipped_bytes_total{channel=\"news\"} 100\n"),
            "{text}"
        );
        let later = t0 + VIEWER_WINDOW + Duration::from_secs(1);
        assert!(m
            .render(later)
            .contains("sluice_viewers{channel=\"news\"} 0\n"));
    }

    #[test]
    fn made_up_sessions_stop_at_the_cap() {
        let m = Metrics::default();
        let t0 = Instant::now();
        for session in 0..(MAX_VIEWER_SESSIONS as u64 + 500) {
            m.viewer("news", session, t0);
        }
        let text = m.render(t0);
        let expected = format!("sluice_viewers{{channel=\"news\"}} {MAX_VIEWER_SESSIONS}\n");
        assert!(text.contains(&expected));
    }

    #[test]
    fn an_sdi_channel_on_a_dead_node_is_an_alert_in_the_metrics() {
        use sluice_cluster::command::{Command, DeviceSeen, Op};
        use sluice_cluster::model::NodeUrls;
        let mut st = sluice_cluster::State::default();
        let mut apply = |at_ms: i64, op: Op| {
            st.apply(&Command {
                at_ms,
                op,
                request: None,
            })
            .expect("applied")
        };
        for node in [1, 2] {
            apply(
                0,
                Op::RegisterNode {
                    node,
                    name: format!("n{node}"),
                    urls: NodeUrls::default(),
                    lease_ttl_ms: 5_000,
                },
            );
        }
        apply(
            0,
            Op::CreateChannel {
                slug: "studio".into(),
                title: String::new(),
                visibility: Default::default(),
                ingest: sluice_cluster::model::Ingest::Push,
                ll_hls: Default::default(),
                recording: false,
                retention: Default::default(),
                placement: Default::default(),
                first_key: None,
                srt_passphrase: None,
            },
        );
        apply(
            0,
            Op::ReportCapturePorts {
                node: 2,
                devices: vec![DeviceSeen {
                    device: 0,
                    model: "DeckLink".into(),
                }],
            },
        );
        apply(
            0,
            Op::BindCapturePort {
                node: 2,
                device: 0,
                channel: Some("studio".into()),
            },
        );
        let mut alive = String::new();
        render_alerts(&mut alive, &st);
        assert!(!alive.contains("sluice_channel_alert{"), "{alive}");
        // The leader marks node 2 down.
        st.apply(&Command {
            at_ms: 60_000,
            op: Op::MarkNodeDown {
                node: 2,
                renewals: Some(0),
            },
            request: None,
        })
        .expect("marked down");
        let mut dead = String::new();
        render_alerts(&mut dead, &st);
        assert!(
            dead.contains("sluice_channel_alert{channel=\"studio\",reason=\""),
            "{dead}"
        );
    }
}
