//! SRT caller: channels whose source is an SRT listener elsewhere (a venue's encoder).
//! The supervisor places each on a node (`placement::choose`); that node connects out,
//! retries with backoff, and feeds the stream to the same packaging loop a publisher
//! would. When the node dies the supervisor places the channel on another, which
//! connects and resumes the same generation.
//!
//! ```text
//! replicated state: channel {ingest: srt_caller{url}, puller: this node}
//!   -> run(): one pull task per such channel (started, stopped as the state changes)
//!   -> pull(): connect (backoff 250 ms .. 2 s) -> Origins::publish_pulled (claim)
//!              -> srt::pump (TsDemuxer -> Feed) until the source goes away -> again
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use sluice_cluster::handle::ClusterHandle;
use sluice_cluster::model::Ingest;
use sluice_cluster::srt_source::SrtSource;
use srt_protocol::options::{KeySize, Passphrase};
use srt_tokio::SrtSocket;
use tokio::task::JoinHandle;

use super::srt::{pump, SrtSettings};
use crate::origin::Origins;

/// How often the node looks at which channels it is placed to pull.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// Pauses between attempts to reach a source: doubled after each failure.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(2);
/// How long one attempt waits for the source's handshake answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection that lasted this long was a working one: the next failure starts the
/// backoff from the beginning.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// While a source stays unreachable, its failures are logged this often.
const LOG_FAILURES_EVERY: Duration = Duration::from_secs(60);

/// The URL as the API and logs show it: a passphrase in it is masked.
pub(crate) fn redacted(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return text.to_string();
    };
    if !url.query_pairs().any(|(k, _)| k == "passphrase") {
        return text.to_string();
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "passphrase" {
                "***".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.to_string()
}

/// Keeps one pull task per channel this node is placed to pull, until `stop` fires.
pub(crate) async fn run(
    origins: Arc<Origins>,
    handle: ClusterHandle,
    settings: SrtSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let settings = Arc::new(settings);
    let mut running: HashMap<String, (String, JoinHandle<()>)> = HashMap::new();
    loop {
        let me = handle.id();
        let wanted: HashMap<String, String> = handle.read_local(|s| {
            s.channels
                .values()
                .filter(|c| c.puller == Some(me))
                .filter_map(|c| match &c.ingest {
                    Ingest::SrtCaller { url } => Some((c.slug.clone(), url.clone())),
                    _ => None,
                })
                .collect()
        });
        running.retain(|slug, (url, task)| {
            // A task that ended (it panicked) is started again below.
            let keep = wanted.get(slug) == Some(url) && !task.is_finished();
            if !keep {
                task.abort();
                tracing::info!(channel = %slug, "stopped pulling");
            }
            keep
        });
        for (slug, url) in wanted {
            if running.contains_key(&slug) {
                continue;
            }
            tracing::info!(channel = %slug, source = %redacted(&url), "placed here: pulling");
            let task = tokio::spawn(pull(
                origins.clone(),
                slug.clone(),
                url.clone(),
                settings.clone(),
            ));
            running.insert(slug, (url, task));
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
}

async fn connect(source: &SrtSource, settings: &SrtSettings) -> Result<SrtSocket> {
    let addr: SocketAddr = tokio::net::lookup_host((source.host.as_str(), source.port))
        .await
        .with_context(|| format!("resolving {}", source.host))?
        .next()
        .ok_or_else(|| anyhow!("{} has no address", source.host))?;
    let mut encryption = None;
    if let Some(p) = &source.passphrase {
        let key_size = KeySize::try_from(source.key_size).map_err(|e| anyhow!("pbkeylen: {e}"))?;
        let passphrase = Passphrase::try_from(p.clone()).map_err(|e| anyhow!("passphrase: {e}"))?;
        encryption = Some((key_size, passphrase));
    }
    let builder = SrtSocket::builder()
        .latency(source.latency.unwrap_or(settings.latency))
        .set(|o| {
            o.connect.timeout = CONNECT_TIMEOUT;
            if let Some((key_size, passphrase)) = encryption {
                o.encryption.key_size = key_size;
                o.encryption.passphrase = Some(passphrase);
            }
        });
    let call = builder.call(addr, source.stream_id.as_deref());
    match tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), call).await {
        Ok(Ok(socket)) => Ok(socket),
        Ok(Err(e)) => Err(anyhow!("{addr}: {e}")),
        Err(_) => Err(anyhow!("{addr}: no handshake answer")),
    }
}

/// Connects to the source, feeds the channel, and does it again when the source goes
/// away, until the task is aborted (the channel moved, changed or was deleted).
async fn pull(origins: Arc<Origins>, slug: String, url: String, settings: Arc<SrtSettings>) {
    let source = match SrtSource::parse(&url) {
        Ok(s) => s,
        Err(why) => {
            tracing::error!(channel = %slug, source = %redacted(&url), %why, "cannot pull this source");
            return std::future::pending().await;
        }
    };
    let mut pause = FIRST_RETRY;
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut last_logged: Option<tokio::time::Instant> = None;
    let mut failures = 0u64;
    loop {
        let attempt = match connect(&source, &settings).await {
            Ok(socket) => match origins.publish_pulled(&slug).await {
                Ok(publisher) => Ok((socket, publisher)),
                Err(e) => Err(anyhow!("the cluster did not let this node publish: {e}")),
            },
            Err(e) => Err(e),
        };
        match attempt {
            Ok((mut socket, publisher)) => {
                origins.metrics().pull_attempt(&slug, true);
                if let Some(since) = failing_since.take() {
                    tracing::info!(channel = %slug, failures, after = ?since.elapsed(), "source reachable again");
                }
                failures = 0;
                last_logged = None;
                tracing::info!(channel = %slug, generation = publisher.generation,
                    source = %redacted(&url), "pulling from the source");
                let started = tokio::time::Instant::now();
                let ended = pump(&mut socket, &publisher, &origins, settings.idle_timeout).await;
                drop(publisher);
                match ended {
                    Ok(()) => tracing::info!(channel = %slug, "the source closed the stream"),
                    Err(e) => {
                        tracing::warn!(channel = %slug, reason = %format!("{e:#}"), "pull interrupted")
                    }
                }
                if started.elapsed() >= STABLE_AFTER {
                    pause = FIRST_RETRY;
                }
            }
            Err(e) => {
                origins.metrics().pull_attempt(&slug, false);
                failures += 1;
                let now = tokio::time::Instant::now();
                failing_since.get_or_insert(now);
                if last_logged.is_none_or(|t| now - t >= LOG_FAILURES_EVERY) {
                    last_logged = Some(now);
                    tracing::warn!(channel = %slug, source = %redacted(&url), failures,
                        reason = %format!("{e:#}"), "cannot reach the source; retrying");
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passphrase_is_masked_in_what_is_shown() {
        let shown = redacted("srt://venue:9000?streamid=cam1&passphrase=0123456789ab");
        assert!(!shown.contains("0123456789ab"), "{shown}");
        assert!(shown.contains("streamid=cam1") && shown.contains("passphrase="));
        assert_eq!(redacted("srt://venue:9000"), "srt://venue:9000");
    }
}
