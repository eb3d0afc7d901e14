//! The pull-through cache's counters for `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Edge;

impl Edge {
    /// The pull-through cache's families, in the Prometheus text format.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (bytes, entries) = self.cache_usage();
        let rows: [(&str, &str, &str, String); 7] = [
            (
                "sluice_edge_cache_hits_total",
                "counter",
                "Pull-through requests answered from the cache.",
                format!("sluice_edge_cache_hits_total {}", load(&c.hits)),
            ),
            (
                "sluice_edge_cache_misses_total",
                "counter",
                "Pull-through requests that started an upstream fetch.",
                format!("sluice_edge_cache_misses_total {}", load(&c.misses)),
            ),
            (
                "sluice_edge_coalesced_total",
                "counter",
                "Pull-through requests that joined a fetch already in flight.",
                format!("sluice_edge_coalesced_total {}", load(&c.coalesced)),
            ),
            (
                "sluice_edge_upstream_requests_total",
                "counter",
                "Requests sent upstream, by kind.",
                format!(
                    "sluice_edge_upstream_requests_total{{kind=\"object\"}} {}\n\
                 sluice_edge_upstream_requests_total{{kind=\"playlist\"}} {}",
                    load(&c.upstream_objects),
                    load(&c.upstream_playlists)
                ),
            ),
            (
                "sluice_edge_upstream_failures_total",
                "counter",
                "Upstream requests that failed (unreachable, timed out, 5xx).",
                format!(
                    "sluice_edge_upstream_failures_total {}",
                    load(&c.upstream_failures)
                ),
            ),
            (
                "sluice_edge_failovers_total",
                "counter",
                "Upstream requests sent to the next upstream of the chain after one failed.",
                format!("sluice_edge_failovers_total {}", load(&c.failovers)),
            ),
            (
                "sluice_edge_cache_bytes",
                "gauge",
                "Bytes held by the pull-through cache.",
                format!("sluice_edge_cache_bytes {bytes}\nsluice_edge_cache_entries {entries}"),
            ),
        ];
        for (name, kind, help, lines) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{lines}");
        }
    }
}
