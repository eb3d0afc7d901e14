//! The channels this node originates: a publisher is verified and claims its channel
//! through Raft, then feeds one packaging loop per generation (`pipeline`), whose output
//! lands in the channel's spool and wakes every waiting viewer request at once.
//!
//! ```text
//! ingest --publish(key)--> Origins --ClaimChannel (Raft)--> ChannelOrigin
//!        --Feed--> pipeline: Packager -> Spool (memory + disk) -> watch (waiters)
//! ChannelOrigin's control queue: every Raft write about the channel, in order
//!        (claim, live, media reports, reconnecting)
//! ```

mod pipeline;
pub(crate) mod recording;
pub(crate) mod retention;
pub(crate) mod spool;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_cluster::command::{Applied, Op, Refusal};
use sluice_cluster::handle::{ClusterError, ClusterHandle};
use sluice_cluster::model::verifier_of;
use sluice_cluster::model::{ChannelId, Ingest, LlHlsSettings, MediaInfo, NodeId, PlaylistParams};
use sluice_media::playlist::{Discontinuity, GapTimes};
use sluice_media::Input;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use spool::Spool;

/// The one rendition an ingest becomes: Sluice repackages, it does not transcode.
pub(crate) const RENDITION: &str = "source";
/// Inputs queued between a publisher's connection and its packaging loop.
const FEED_QUEUE: usize = 1024;
/// Bytes of media queued there: a connection that reads faster than its loop packages
/// waits (and its encoder with it, through the socket) instead of queueing without
/// bound (1,024 frames of up to 16 MiB each, otherwise).
const FEED_BYTES: usize = 32 << 20;
/// How long a returning publisher waits for the loop to notice the old one left.
const DETACH_WAIT: Duration = Duration::from_secs(2);
/// How long an accepted claim waits for this node's copy of the state to apply it.
const CLAIM_APPLY_WAIT: Duration = Duration::from_secs(2);
/// How long a publisher waits for a node that just started to hold a lease.
const LEASE_WAIT: Duration = Duration::from_secs(5);
/// How long a publisher that reached this node waits for the node that held its channel
/// to let go. An encoder that left node A and reconnects here at once beats A noticing
/// it left (A marks the generation reconnecting through its own queue of Raft writes,
/// seconds later on a loaded machine); a second encoder for a channel that really is
/// live elsewhere is refused after it.
const RELEASE_WAIT: Duration = Duration::from_secs(8);
/// The same wait in an SRT handshake: a caller gives up connecting after 3 s (libsrt's
/// default connect timeout), so the answer must come before.
const SRT_RELEASE_WAIT: Duration = Duration::from_secs(2);
/// How often a waiting publisher looks at this node's copy of the state.
const RELEASE_POLL: Duration = Duration::from_millis(50);

/// A feed on its way to the packaging loop, holding its share of [`FEED_BYTES`] until
/// the loop takes it.
pub(crate) struct Queued {
    pub(crate) feed: Feed,
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A publisher's queue as its packaging loop takes it, and where the loop says why it
/// dropped the publisher (its connection tells the encoder).
pub(crate) struct Attached {
    pub(crate) rx: mpsc::Receiver<Queued>,
    pub(crate) refused: Arc<std::sync::OnceLock<String>>,
}

/// What a publisher's connection sends to the packaging loop.
#[derive(Debug)]
pub(crate) enum Feed {
    /// The tracks the stream announced (RTMP metadata): the packager waits for them.
    Tracks { video: bool, audio: bool },
    /// Parsed media; `bytes` is the size on the wire, for the ingest metrics.
    Input { input: Input, bytes: usize },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishRefused {
    #[error("unknown or revoked stream key")]
    UnknownKey,
    #[error("channel {channel:?} is already live on node {origin}")]
    AlreadyLive { channel: String, origin: NodeId },
    #[error("channel {channel:?} takes no publishers: the cluster pulls its source")]
    NotPushed { channel: String },
    #[error("the cluster refused the claim or did not answer: {0}")]
    Cluster(String),
    #[error("this node is shutting down: publish to another node")]
    Draining,
}

/// A stream key's channel, as an SRT handshake needs it.
pub(crate) struct KeyInfo {
    pub(crate) channel: String,
    pub(crate) srt_passphrase: Option<String>,
}

/// A publisher's way into its channel's packaging loop. Dropping it tells the loop the
/// publisher left (the generation then waits for it to come back).
pub(crate) struct Publisher {
    pub(crate) channel: String,
    pub(crate) generation: u64,
    tx: mpsc::Sender<Queued>,
    /// [`FEED_BYTES`], shared by what is queued.
    budget: Arc<tokio::sync::Semaphore>,
    draining: watch::Receiver<bool>,
    /// Set by the packaging loop when it refuses this publisher's media.
    refused: Arc<std::sync::OnceLock<String>>,
}

/// The loop ended (the generation was stopped or ended), or the node is draining: the
/// connection should close.
#[derive(Debug, thiserror::Error)]
#[error("the channel's generation ended, or this node is shutting down")]
pub(crate) struct Stopped;

impl Publisher {
    pub(crate) async fn send(&self, feed: Feed) -> Result<(), Stopped> {
        if *self.draining.borrow() {
            return Err(Stopped);
        }
        let budget = match &feed {
            Feed::Input { bytes, .. } => {
                let share = (*bytes).clamp(1, FEED_BYTES) as u32;
                let permit = self.budget.clone().acquire_many_owned(share).await;
                Some(permit.map_err(|_| Stopped)?)
            }
            Feed::Tracks { .. } => None,
        };
        let queued = Queued {
            feed,
            _budget: budget,
        };
        self.tx.send(queued).await.map_err(|_| Stopped)
    }

    /// Why the channel no longer takes this publisher's media, in words for the
    /// encoder's operator (sent with the close where the protocol can carry it).
    pub(crate) fn closed_reason(&self) -> String {
        if *self.draining.borrow() {
            "this Sluice node is shutting down: publish again, the stream continues on another node"
                .to_string()
        } else if let Some(why) = self.refused.get() {
            format!("the server cannot package this stream: {why}")
        } else {
            "the stream was stopped or ended on the server".to_string()
        }
    }
}

/// A Raft write about one channel, with an optional answer.
struct Control {
    op: Op,
    reply: Option<oneshot::Sender<Result<Applied, ClusterError>>>,
}

/// The packaging loop of the channel's current generation.
struct PipelineHandle {
    generation: u64,
    publishers: mpsc::Sender<Attached>,
    task: tokio::task::JoinHandle<()>,
}

/// One channel as this node originates it.
pub(crate) struct ChannelOrigin {
    pub(crate) slug: String,
    pub(crate) id: ChannelId,
    spool: Mutex<Spool>,
    changed: watch::Sender<u64>,
    control: mpsc::UnboundedSender<Control>,
    pipeline: tokio::sync::Mutex<Option<PipelineHandle>>,
    publisher_attached: AtomicBool,
    /// The epoch of this node's latest claim of the channel's generation: what its
    /// packaging loop's state changes and reports carry (a stale one is refused).
    epoch: AtomicU64,
}

impl ChannelOrigin {
    /// Reads the spool under its lock (keep `f` short: no IO).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Spool) -> T) -> T {
        match self.spool.lock() {
            Ok(s) => f(&s),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn write<T>(&self, f: impl FnOnce(&mut Spool) -> T) -> T {
        match self.spool.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Changes whenever the spool does: a new part, segment, or the end.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Queues a Raft write behind the channel's earlier ones; the answer comes back.
    async fn propose(&self, op: Op) -> Result<Applied, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control {
                op,
                reply: Some(tx),
            })
            .map_err(|_| ClusterError::Unavailable("node shutting down".into()))?;
        rx.await
            .map_err(|_| ClusterError::Unavailable("node shutting down".into()))?
    }

    /// Queues a Raft write whose answer nobody waits for (failures are logged).
    fn tell(&self, op: Op) {
        let _ = self.control.send(Control { op, reply: None });
    }
}

/// Every channel this node has originated since it started.
pub(crate) struct Origins {
    handle: ClusterHandle,
    spool_root: PathBuf,
    metrics: Arc<Metrics>,
    channels: Mutex<HashMap<String, Arc<ChannelOrigin>>>,
    /// Set on shutdown: publishers are cut and new ones refused.
    draining: watch::Sender<bool>,
}

impl Origins {
    pub(crate) fn new(handle: ClusterHandle, spool_root: PathBuf, metrics: Arc<Metrics>) -> Self {
        Self {
            handle,
            spool_root,
            metrics,
            channels: Mutex::new(HashMap::new()),
            draining: watch::channel(false).0,
        }
    }

    /// Hands this node's live streams over before it stops: new publishers are refused,
    /// current ones are cut (their encoders reconnect, to another node when they can),
    /// each packaging loop closes what is open into the spool and marks its generation
    /// reconnecting, so the stream continues at once wherever its publisher comes back
    /// instead of after this node's lease expires. Waits at most `limit` for the
    /// replicated state to show it; returns how many generations were handed over.
    pub(crate) async fn drain(&self, limit: Duration) -> usize {
        self.draining.send_replace(true);
        let me = self.handle.id();
        let held = |s: &sluice_cluster::State| {
            s.all_generations()
                .filter(|g| {
                    g.origin == me
                        && matches!(
                            g.state,
                            sluice_cluster::model::GenerationState::Starting
                                | sluice_cluster::model::GenerationState::Live
                        )
                })
                .count()
        };
        let at_start = self.handle.read_local(held);
        let deadline = tokio::time::Instant::now() + limit;
        let none_left = self
            .handle
            .wait_local(deadline, Duration::from_millis(50), |s| {
                (held(s) == 0).then_some(())
            })
            .await;
        if none_left.is_some() {
            return at_start;
        }
        let left = self.handle.read_local(held);
        tracing::warn!(left, "drain: generations still live here at shutdown");
        at_start.saturating_sub(left)
    }

    fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    pub(crate) fn spool_root(&self) -> &std::path::Path {
        &self.spool_root
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub(crate) fn get(&self, slug: &str) -> Option<Arc<ChannelOrigin>> {
        self.channels.lock().ok()?.get(slug).cloned()
    }

    /// (channel, generation) pairs whose packaging loop still runs.
    pub(crate) fn active(&self) -> Vec<(String, u64)> {
        let Ok(map) = self.channels.lock() else {
            return Vec::new();
        };
        map.values()
            .filter_map(|o| o.read(|s| (!s.ended).then(|| (o.slug.clone(), s.generation))))
            .collect()
    }

    fn channel(&self, slug: &str, id: ChannelId) -> Arc<ChannelOrigin> {
        let mut map = match self.channels.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(existing) = map.get(slug).filter(|o| o.id == id) {
            return existing.clone();
        }
        let (control, rx) = mpsc::unbounded_channel();
        let origin = Arc::new(ChannelOrigin {
            slug: slug.to_string(),
            id,
            spool: Mutex::new(Spool::default()),
            changed: watch::channel(0).0,
            control,
            pipeline: tokio::sync::Mutex::new(None),
            publisher_attached: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        });
        tokio::spawn(control_loop(self.handle.clone(), slug.to_string(), rx));
        map.insert(slug.to_string(), origin.clone());
        origin
    }

    /// What an SRT handshake must know about a stream key before anything is claimed:
    /// the channel, its passphrase, and whether it is live on another node.
    pub(crate) async fn look_up_key(&self, stream_key: &str) -> Result<KeyInfo, PublishRefused> {
        let verifier = verifier_of(stream_key);
        let me = self.handle.id();
        let found = self
            .handle
            .read_for_auth(|s| {
                s.channel_for_verifier(&verifier).map(|c| {
                    let pushed = c.ingest == Ingest::Push;
                    (c.slug.clone(), c.id, c.srt_passphrase.clone(), pushed)
                })
            })
            .await
            .map_err(|e| PublishRefused::Cluster(e.to_string()))?;
        let (channel, id, srt_passphrase) = match found {
            None => return Err(PublishRefused::UnknownKey),
            Some((channel, _, _, false)) => return Err(PublishRefused::NotPushed { channel }),
            Some((channel, id, srt_passphrase, true)) => (channel, id, srt_passphrase),
        };
        let deadline = tokio::time::Instant::now() + SRT_RELEASE_WAIT;
        match self.wait_for_release(id, me, deadline).await {
            Some(origin) => Err(PublishRefused::AlreadyLive { channel, origin }),
            None => Ok(KeyInfo {
                channel,
                srt_passphrase,
            }),
        }
    }

    /// Waits until no other node holds the channel in this node's copy of the state (its
    /// generation reconnecting or ended, or its origin's lease gone), at most until
    /// `deadline`; returns the node still holding it then.
    async fn wait_for_release(
        &self,
        id: ChannelId,
        me: NodeId,
        deadline: tokio::time::Instant,
    ) -> Option<NodeId> {
        let released = self
            .handle
            .wait_local(deadline, RELEASE_POLL, |s| {
                held_elsewhere(s, id, me).is_none().then_some(())
            })
            .await;
        match released {
            Some(()) => None,
            None => self.handle.read_local(|s| held_elsewhere(s, id, me)),
        }
    }

    /// Verifies a stream key and claims its channel for this node; the returned
    /// publisher feeds the channel's packaging loop.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        stream_key: &str,
    ) -> Result<Publisher, PublishRefused> {
        if self.is_draining() {
            return Err(PublishRefused::Draining);
        }
        let verifier = verifier_of(stream_key);
        // This replica first; an unknown key costs a cluster read only within the
        // node's lookup budget. Claiming the channel goes through Raft either way.
        let found = self
            .handle
            .read_for_auth(|s| {
                s.channel_for_verifier(&verifier)
                    .map(|c| (c.slug.clone(), c.id, c.ll_hls, c.ingest == Ingest::Push))
            })
            .await
            .map_err(|e| PublishRefused::Cluster(e.to_string()))?;
        let Some((slug, id, ll_hls, pushed)) = found else {
            return Err(PublishRefused::UnknownKey);
        };
        if !pushed {
            return Err(PublishRefused::NotPushed { channel: slug });
        }
        self.start_publisher(slug, id, ll_hls).await
    }

    /// The publisher of a channel this node was placed to pull: the cluster checks the
    /// placement when the channel is claimed.
    pub(crate) async fn publish_pulled(
        self: &Arc<Self>,
        slug: &str,
    ) -> Result<Publisher, PublishRefused> {
        if self.is_draining() {
            return Err(PublishRefused::Draining);
        }
        let found = self.handle.read_local(|s| {
            s.channel_by_slug(slug)
                .map(|c| (c.id, c.ll_hls, c.ingest.is_pulled()))
        });
        match found {
            Some((id, ll_hls, true)) => self.start_publisher(slug.to_string(), id, ll_hls).await,
            _ => Err(PublishRefused::Cluster(format!(
                "channel {slug:?} is no longer pulled"
            ))),
        }
    }

    /// The publisher of an SDI channel whose capture port is on this node: the cluster
    /// refuses the claim anywhere else.
    #[cfg_attr(not(feature = "sdi"), allow(dead_code))]
    pub(crate) async fn publish_captured(
        self: &Arc<Self>,
        slug: &str,
    ) -> Result<Publisher, PublishRefused> {
        if self.is_draining() {
            return Err(PublishRefused::Draining);
        }
        let me = self.handle.id();
        let found = self.handle.read_local(|s| {
            s.channel_by_slug(slug).map(|c| {
                (
                    c.id,
                    c.ll_hls,
                    matches!(c.ingest, Ingest::Sdi { node, .. } if node == me),
                )
            })
        });
        match found {
            Some((id, ll_hls, true)) => self.start_publisher(slug.to_string(), id, ll_hls).await,
            _ => Err(PublishRefused::Cluster(format!(
                "channel {slug:?} is not fed by a capture port of this node"
            ))),
        }
    }

    async fn start_publisher(
        self: &Arc<Self>,
        slug: String,
        id: ChannelId,
        ll_hls: LlHlsSettings,
    ) -> Result<Publisher, PublishRefused> {
        let origin = self.channel(&slug, id);
        let me = self.handle.id();
        // A publisher that comes straight back may beat the loop noticing it left.
        let deadline = tokio::time::Instant::now() + DETACH_WAIT;
        while origin.publisher_attached.swap(true, Ordering::SeqCst) {
            if tokio::time::Instant::now() >= deadline {
                return Err(PublishRefused::AlreadyLive {
                    channel: slug,
                    origin: me,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match self.attach(&origin, &slug, ll_hls).await {
            Ok(p) => Ok(p),
            Err(e) => {
                origin.publisher_attached.store(false, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    async fn attach(
        self: &Arc<Self>,
        origin: &Arc<ChannelOrigin>,
        slug: &str,
        ll_hls: LlHlsSettings,
    ) -> Result<Publisher, PublishRefused> {
        let claim = self.claim(origin, slug).await?;
        origin.epoch.store(claim.epoch, Ordering::SeqCst);
        self.wait_until_claim_applied(origin, claim.number).await;
        let (tx, rx) = mpsc::channel(FEED_QUEUE);
        let refused = Arc::new(std::sync::OnceLock::new());
        let mut pipeline = origin.pipeline.lock().await;
        let mut rx = Some(Attached {
            rx,
            refused: refused.clone(),
        });
        if let Some(p) = pipeline.as_ref().filter(|p| p.generation == claim.number) {
            if let Some(feed) = rx.take() {
                if let Err(mpsc::error::SendError(back)) = p.publishers.send(feed).await {
                    rx = Some(back);
                }
            }
        }
        if let Some(feed) = rx {
            // A new generation, or one resumed here after another node (or this one
            // before a restart) held it: continue after the last reported segment.
            let plan = self.plan(origin, &claim, ll_hls);
            if let Some(old) = pipeline.take() {
                old.task.abort();
            }
            origin.write(|s| *s = Spool::new(claim.number, plan.first_msn));
            origin.notify();
            let (publishers, publishers_rx) = mpsc::channel(4);
            let _ = publishers.send(feed).await;
            let task = tokio::spawn(pipeline::run(
                self.clone(),
                origin.clone(),
                plan,
                publishers_rx,
            ));
            *pipeline = Some(PipelineHandle {
                generation: claim.number,
                publishers,
                task,
            });
        }
        tracing::info!(
            channel = slug,
            generation = claim.number,
            resumed = claim.resumed,
            "publisher accepted"
        );
        Ok(Publisher {
            channel: slug.to_string(),
            generation: claim.number,
            tx,
            budget: Arc::new(tokio::sync::Semaphore::new(FEED_BYTES)),
            draining: self.draining.subscribe(),
            refused,
        })
    }

    /// Claims the channel for this node. A node that just started may not have
    /// registered its lease yet, and the node this publisher just left may not have let
    /// the channel go yet: both are waited for, a bounded time.
    async fn claim(&self, origin: &ChannelOrigin, slug: &str) -> Result<Claim, PublishRefused> {
        let me = self.handle.id();
        let lease_deadline = tokio::time::Instant::now() + LEASE_WAIT;
        let release_deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        let claimed = loop {
            let claimed = origin
                .propose(Op::ClaimChannel {
                    channel: slug.to_string(),
                    node: me,
                })
                .await;
            let now = tokio::time::Instant::now();
            match claimed {
                Err(ClusterError::Refused(Refusal::LeaseInvalid { .. }))
                    if now < lease_deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(ClusterError::Refused(Refusal::ChannelAlreadyLive {
                    origin: holder, ..
                })) if now < release_deadline => {
                    tracing::info!(
                        channel = slug,
                        holder,
                        "channel still held by another node: waiting for it to let go"
                    );
                    self.wait_for_release(origin.id, me, release_deadline).await;
                }
                other => break other,
            }
        };
        match claimed {
            Ok(Applied::Claimed {
                number,
                resumed,
                last_msn,
                epoch,
                took_over,
            }) => Ok(Claim {
                number,
                resumed,
                last_msn,
                epoch,
                took_over,
            }),
            Ok(other) => Err(PublishRefused::Cluster(format!(
                "unexpected answer {other:?}"
            ))),
            Err(ClusterError::Refused(Refusal::ChannelAlreadyLive { channel, origin })) => {
                Err(PublishRefused::AlreadyLive { channel, origin })
            }
            Err(e) => Err(PublishRefused::Cluster(e.to_string())),
        }
    }

    /// The claim is committed; this node's copy of the state may apply it a moment
    /// later. The packaging loop reads that copy to see whether the generation is still
    /// its own, so it starts once the copy shows the claim.
    async fn wait_until_claim_applied(&self, origin: &ChannelOrigin, number: u64) {
        let me = self.handle.id();
        let applied_by = tokio::time::Instant::now() + CLAIM_APPLY_WAIT;
        self.handle
            .wait_local(applied_by, Duration::from_millis(10), |s| {
                s.generation(origin.id, number)
                    .is_some_and(|g| g.origin == me && g.state.is_active())
                    .then_some(())
            })
            .await;
    }

    /// What a new packaging loop for `claim` starts from: after the last segment the
    /// generation reported, with its timeline and the earlier origin's discontinuity.
    fn plan(&self, origin: &ChannelOrigin, claim: &Claim, ll_hls: LlHlsSettings) -> pipeline::Plan {
        // After the last segment reported; one further when the generation was taken
        // from an origin that had not let go: it reports a segment when its first part
        // is out, and that report may not have made it (the origin died or paused just
        // then), so the segment after the last reported one may already have parts
        // out there. Its number is listed as a gap, never made again: one URL, one
        // content.
        let first_msn = claim.last_msn.map_or(0, |m| m + 1) + u64::from(claim.took_over);
        let (recording, resume_at_us, kept, last_report, earlier) = self.handle.read_local(|s| {
            let generation = s
                .generation(origin.id, claim.number)
                .filter(|_| claim.resumed);
            let media = generation.map(|g| &g.media);
            (
                s.channels.get(&origin.id).is_some_and(|c| c.recording),
                media.and_then(|m| m.timeline_end_us),
                media.and_then(|m| m.playlist),
                // The report of the segment the claim continues after, only.
                generation
                    .filter(|g| g.last_msn.is_some() && g.last_msn == claim.last_msn)
                    .map(|g| g.media.clone()),
                // Only the run of the segment the claim continues after: a copy of the
                // state that lags behind it has an older report's run, whose number
                // may not be the one players saw.
                media
                    .and_then(|m| m.discontinuity)
                    .filter(|d| Some(d.at_msn) == claim.last_msn)
                    .map(|d| Discontinuity {
                        number: d.number,
                        from_msn: d.from_msn,
                    }),
            )
        });
        let playlist = kept.unwrap_or(PlaylistParams {
            segment_target_ms: ll_hls.segment_target_ms,
            part_target_ms: ll_hls.part_target_ms,
            window_segments: ll_hls.playlist_segments().max(3),
        });
        let (gap_times, resume_at_us) = match (claim.last_msn, last_report) {
            (Some(last), Some(m)) => resume_after_gaps(last, first_msn, &m, playlist, resume_at_us),
            _ => (GapTimes::default(), resume_at_us),
        };
        // The own segments are dated after the earlier origin's (listed as gaps).
        let dated_until_ms = gap_times.dated.map(|(from, ms)| {
            let us: u64 = (from..first_msn).map(|m| gap_times.duration_us(m, 0)).sum();
            ms.saturating_add(i64::try_from(us / 1000).unwrap_or(i64::MAX))
        });
        pipeline::Plan {
            recording,
            resume_at_us,
            gap_times,
            dated_until_ms,
            earlier,
            generation: claim.number,
            first_msn,
            first_init_index: if claim.resumed { first_msn as u32 } else { 0 },
            resumed: claim.resumed,
            // The generation's own parameters once an origin reported them; the
            // channel's settings (which may have changed since) apply to new ones.
            playlist,
            part_target_kept: kept.is_some(),
        }
    }
}

/// Where the segments a resuming origin cannot have are listed, and where its own
/// timeline goes on: the earlier origin reported segment `last` (its first part out,
/// or all of it when its publisher left) with where and when it began and how long the
/// whole ones up to it were. The others up to `first_msn` are taken to last as long as
/// the latest whole one (the segment target without one), and the own timeline starts
/// after them, so media and playlist times agree (never before the reported end).
fn resume_after_gaps(
    last: u64,
    first_msn: u64,
    report: &MediaInfo,
    playlist: PlaylistParams,
    timeline_end_us: Option<i64>,
) -> (GapTimes, Option<i64>) {
    let recent = &report.recent_durations_us;
    let times = GapTimes {
        first_known_msn: report
            .recent_last_msn
            .map_or(last, |m| m + 1)
            .saturating_sub(recent.len() as u64),
        durations_us: recent.clone(),
        other_us: Some(
            recent
                .last()
                .copied()
                .unwrap_or(u64::from(playlist.segment_target_ms) * 1000),
        ),
        dated: report.segment_date_ms.map(|ms| (last, ms)),
        init_index: report.segment_init_index,
    };
    let resume_at_us = match report.segment_start_us {
        Some(start) => {
            let gaps_us: u64 = (last..first_msn).map(|m| times.duration_us(m, 0)).sum();
            let after_gaps = start.saturating_add(i64::try_from(gaps_us).unwrap_or(i64::MAX));
            Some(timeline_end_us.map_or(after_gaps, |end| end.max(after_gaps)))
        }
        None => timeline_end_us,
    };
    (times, resume_at_us)
}

/// A committed claim of a channel's generation.
struct Claim {
    number: u64,
    resumed: bool,
    /// The last segment the generation reported before this claim.
    last_msn: Option<u64>,
    epoch: u64,
    /// From an origin that had not let go: see `Origins::plan`.
    took_over: bool,
}

/// The other node that holds the channel's active generation, if any: a reconnecting
/// generation, or one whose origin the leader marked down, is free to claim.
fn held_elsewhere(s: &sluice_cluster::State, id: ChannelId, me: NodeId) -> Option<NodeId> {
    s.active_generation(id).and_then(|g| {
        let holds = g.state != sluice_cluster::model::GenerationState::Reconnecting
            && g.origin != me
            && s.node_up(g.origin);
        holds.then_some(g.origin)
    })
}

/// Proposes a channel's Raft writes one after another, so they apply in the order the
/// node decided them. Writes nobody waits for are retried while there is no leader.
/// How long a claim given up on (its proposal past its deadline) is watched for: a
/// proposal still in flight commits or is dropped well within this.
const ABANDONED_CLAIM_WATCH: Duration = Duration::from_secs(30);

/// A claim whose caller gave up (its publisher was refused) may still commit: the
/// generation would then wait, `starting`, for a publisher this node no longer has.
/// Watched by its request id, and released under its own epoch if it did commit (a
/// later claim, by this node or another, makes that release stale and refused).
async fn release_if_claimed(handle: ClusterHandle, claim: sluice_cluster::command::Command) {
    let (Some(request), Op::ClaimChannel { channel, node }) = (claim.request, &claim.op) else {
        return;
    };
    let until = tokio::time::Instant::now() + ABANDONED_CLAIM_WATCH;
    while tokio::time::Instant::now() < until {
        match handle.request_outcome(request).await {
            Ok(Some(Ok(Applied::Claimed { number, epoch, .. }))) => {
                tracing::info!(channel = %channel, generation = number,
                    "a claim given up on committed later: releasing it");
                let released = handle
                    .propose_op(Op::MarkReconnecting {
                        channel: channel.clone(),
                        generation: number,
                        node: Some(*node),
                        epoch,
                    })
                    .await;
                if let Err(e) = released {
                    tracing::debug!(channel = %channel, error = %e, "release refused");
                }
                return;
            }
            Ok(Some(_)) => return,
            Ok(None) | Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

async fn control_loop(
    handle: ClusterHandle,
    slug: String,
    mut rx: mpsc::UnboundedReceiver<Control>,
) {
    while let Some(Control { op, reply }) = rx.recv().await {
        // One command, one request id, however often it is sent: a retry whose first
        // try committed after all (its answer lost) is not applied twice.
        let cmd = handle.command(op);
        let mut attempt = 0;
        let result = loop {
            let result = handle.propose(cmd.clone()).await;
            let retry = matches!(
                result,
                Err(ClusterError::NoLeader
                    | ClusterError::Unavailable(_)
                    | ClusterError::Timeout(_))
            ) && reply.is_none()
                && attempt < 20;
            if !retry {
                break result;
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if matches!(
            (&result, &cmd.op),
            (Err(ClusterError::Timeout(_)), Op::ClaimChannel { .. })
        ) {
            tokio::spawn(release_if_claimed(handle.clone(), cmd.clone()));
        }
        match reply {
            Some(tx) => {
                let _ = tx.send(result);
            }
            None => {
                if let Err(e) = result {
                    tracing::warn!(channel = %slug, error = %e, "cluster update refused");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Segment 10 was reported at 20 s (its first part out); 8 and 9 were whole, 2 s
    /// each. A takeover starts at 12: 10 and 11 are listed 2 s each, and the own
    /// timeline goes on after them, at 24 s, where the playlist puts segment 12.
    #[test]
    fn a_takeover_continues_the_timeline_after_the_gaps_it_lists() {
        let report = MediaInfo {
            segment_start_us: Some(20_000_000),
            segment_date_ms: Some(5_000),
            recent_durations_us: vec![2_000_000, 2_000_000],
            recent_last_msn: Some(9),
            ..MediaInfo::default()
        };
        let params = PlaylistParams {
            segment_target_ms: 4_000,
            part_target_ms: 200,
            window_segments: 6,
        };
        let (times, resume) = resume_after_gaps(10, 12, &report, params, Some(20_200_000));
        assert_eq!(resume, Some(24_000_000));
        assert_eq!(times.duration_us(9, 3_000_000), 2_000_000);
        assert_eq!(times.duration_us(11, 3_000_000), 2_000_000);
        assert_eq!(times.dated, Some((10, 5_000)));
        // Never before where the earlier origin said its timeline ended.
        let (_, resume) = resume_after_gaps(10, 12, &report, params, Some(30_000_000));
        assert_eq!(resume, Some(30_000_000));
        // Nothing whole reported: the segment target; no start: the reported end.
        let first = MediaInfo {
            segment_start_us: Some(0),
            ..MediaInfo::default()
        };
        assert_eq!(
            resume_after_gaps(0, 1, &first, params, Some(200_000)).1,
            Some(4_000_000)
        );
        // Reported again when the publisher left: segment 10 was whole (1.5 s), 11
        // starts after it.
        let left = MediaInfo {
            recent_durations_us: vec![2_000_000, 1_500_000],
            recent_last_msn: Some(10),
            ..report.clone()
        };
        let (times, resume) = resume_after_gaps(10, 11, &left, params, Some(21_500_000));
        assert_eq!(resume, Some(21_500_000));
        assert_eq!(times.duration_us(10, 3_000_000), 1_500_000);
        assert_eq!(times.duration_us(9, 3_000_000), 2_000_000);
        let old = MediaInfo::default();
        assert_eq!(
            resume_after_gaps(0, 1, &old, params, Some(200_000)).1,
            Some(200_000)
        );
    }
}
