//! This node's endpoint in the replicated state, and the snapshot it reports every few
//! seconds (viewers, egress and ingress bit/s, pull-through hit ratio, playlist age,
//! health), which `sluice cluster status` and `/api/v1/endpoints` show.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_cluster::command::{validate_slug, Op, MAX_CHANNELS_PER_SNAPSHOT};
use sluice_cluster::handle::ClusterHandle;
use sluice_cluster::model::{Endpoint, EndpointKind, EndpointSnapshot, Health, HealthThresholds};

use crate::edge::Edge;
use crate::metrics::Metrics;
use crate::origin::Origins;
use crate::support::now_ms;

/// How often a node reports its snapshot.
pub(crate) const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

/// What a node needs to describe itself.
pub(crate) struct Reporter {
    pub(crate) handle: ClusterHandle,
    /// The node's name, made into an endpoint name when it is not one already.
    pub(crate) name: String,
    pub(crate) http_url: String,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) edge: Arc<Edge>,
    pub(crate) origins: Arc<Origins>,
    pub(crate) spool: Arc<std::sync::Mutex<Result<(), String>>>,
}

/// A valid endpoint name from a node name: lower case, other characters as `-`.
fn endpoint_name(node_name: &str, id: u64) -> String {
    let mut name: String = node_name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(63)
        .collect();
    if validate_slug(&name).is_err() {
        name = format!("node-{id:x}");
    }
    name
}

/// Counters as they were at the last snapshot, for rates over the interval.
#[derive(Default, Clone, Copy)]
struct Previous {
    at: Option<Instant>,
    egress: u64,
    ingress: u64,
    hits: u64,
    misses: u64,
}

impl Reporter {
    /// This node's endpoint, registered (or its URL corrected) when missing; operator
    /// settings on it (parents, thresholds) are kept.
    async fn ensure_endpoint(&self) -> Option<Endpoint> {
        let me = self.handle.id();
        let (mine, taken) = self.handle.read_local(|s| {
            let mine = s.endpoints.values().find(|e| e.node == Some(me)).cloned();
            let wanted = endpoint_name(&self.name, me);
            let taken = s.endpoints.get(&wanted).is_some_and(|e| e.node != Some(me));
            (mine, taken)
        });
        if let Some(e) = &mine {
            if e.url == self.http_url {
                return mine;
            }
        }
        let name = match &mine {
            Some(e) => e.name.clone(),
            None if taken => format!("node-{me:x}"),
            None => endpoint_name(&self.name, me),
        };
        let (upstreams, health, kind) = mine.map(|e| (e.upstreams, e.health, e.kind)).unwrap_or((
            Vec::new(),
            HealthThresholds::default(),
            EndpointKind::Origin,
        ));
        let op = Op::PutEndpoint {
            name: name.clone(),
            kind,
            node: Some(me),
            url: self.http_url.clone(),
            upstreams,
            health,
        };
        match self.handle.propose_op(op).await {
            Ok(_) => self.handle.read_local(|s| s.endpoints.get(&name).cloned()),
            Err(e) => {
                tracing::debug!(error = %e, "registering this node's endpoint failed; retrying");
                None
            }
        }
    }

    fn snapshot(&self, endpoint: &Endpoint, previous: &mut Previous) -> EndpointSnapshot {
        let now = Instant::now();
        let counters = &self.edge.counters;
        let current = Previous {
            at: Some(now),
            egress: self.metrics.egress_bytes(),
            ingress: self.metrics.ingest_bytes(),
            hits: counters.hits.load(Ordering::Relaxed),
            misses: counters.misses.load(Ordering::Relaxed),
        };
        let seconds = previous
            .at
            .map(|t| now.duration_since(t).as_secs_f64())
            .filter(|s| *s > 0.0);
        let rate = |now: u64, before: u64| {
            seconds.map_or(0, |s| {
                ((now.saturating_sub(before)) as f64 * 8.0 / s) as u64
            })
        };
        let egress_bps = rate(current.egress, previous.egress);
        let ingress_bps = rate(current.ingress, previous.ingress);
        let hits = current.hits.saturating_sub(previous.hits);
        let misses = current.misses.saturating_sub(previous.misses);
        let hit_ratio = (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64);
        *previous = current;
        // The age of the newest part, while this node originates a live stream.
        let playlist_age_ms = (!self.origins.active().is_empty())
            .then(|| self.metrics.since_last_part(now))
            .flatten()
            .map(|d| d.as_millis() as u64);
        let spool_ok = self.spool.lock().map(|s| s.is_ok()).unwrap_or(false);
        let stale_playlist =
            playlist_age_ms.is_some_and(|age| age > endpoint.health.max_playlist_age_ms);
        EndpointSnapshot {
            at_ms: now_ms(),
            viewers: self.metrics.viewers(now),
            channel_viewers: self
                .metrics
                .viewers_by_channel(now, MAX_CHANNELS_PER_SNAPSHOT),
            egress_bps,
            ingress_bps,
            playlist_age_ms,
            hit_ratio,
            health: if spool_ok && !stale_playlist {
                Health::Ok
            } else {
                Health::Degraded
            },
        }
    }

    /// Registers the endpoint, then reports a snapshot every [`SNAPSHOT_EVERY`].
    pub(crate) async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut previous = Previous::default();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SNAPSHOT_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let me = self.handle.id();
            if !self.handle.is_member() || !self.handle.read_local(|s| s.nodes.contains_key(&me)) {
                continue;
            }
            let Some(endpoint) = self.ensure_endpoint().await else {
                continue;
            };
            let snapshot = self.snapshot(&endpoint, &mut previous);
            let op = Op::ReportSnapshot {
                endpoint: endpoint.name.clone(),
                snapshot,
            };
            if let Err(e) = self.handle.propose_op(op).await {
                tracing::debug!(error = %e, "snapshot report failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_become_endpoint_names() {
        assert_eq!(endpoint_name("Node 1", 1), "node-1");
        assert_eq!(endpoint_name("edge.eu_west", 1), "edge-eu-west");
        assert_eq!(endpoint_name("---", 0x2a), "node-2a");
        assert_eq!(endpoint_name("", 0x2a), "node-2a");
    }
}
