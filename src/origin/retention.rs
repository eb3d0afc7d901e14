//! The periodic sweep of recordings and the disk spool: the leader deletes the
//! recordings each channel's retention policy gives up (one Raft write each, so every
//! node sees the same tombstone), then every node prunes its own disk by what the
//! replicated state says of each generation folder.

use std::collections::HashMap;
use std::time::Duration;

use sluice_cluster::command::{Command, Op};
use sluice_cluster::handle::ClusterHandle;
use sluice_cluster::model::RecordingStatus;

use super::spool::DiskKeep;
use crate::support::now_ms;

/// Most generations forgotten in one sweep: the rest wait for the next.
const FORGET_PER_SWEEP: usize = 64;

/// Leader only: deletes the finished recordings retention policies give up, then
/// removes from the state the ended generations nothing can be played from once nodes
/// no longer keep their objects (`spool_retention`), so the replicated state does not
/// grow with every stream ever made. Returns how many recordings were deleted.
pub(crate) async fn enforce(handle: &ClusterHandle, spool_retention: Duration) -> usize {
    let leader = handle.raft().metrics().borrow().current_leader == Some(handle.id());
    if !leader {
        return 0;
    }
    let now = now_ms();
    let doomed: Vec<(String, u64)> = handle.read_local(|s| {
        s.channels
            .values()
            .flat_map(|c| {
                s.recordings_to_prune(c.id, now)
                    .into_iter()
                    .map(|g| (c.slug.clone(), g))
            })
            .collect()
    });
    let mut deleted = 0;
    for (channel, generation) in doomed {
        let op = Op::DeleteRecording {
            channel: channel.clone(),
            generation,
        };
        match handle
            .propose(Command {
                at_ms: now,
                op,
                request: None,
            })
            .await
        {
            Ok(_) => {
                deleted += 1;
                tracing::info!(%channel, generation, "retention deleted a recording");
            }
            Err(e) => {
                tracing::warn!(%channel, generation, error = %e, "retention could not delete a recording")
            }
        }
    }
    let keep_ms = i64::try_from(spool_retention.as_millis()).unwrap_or(i64::MAX);
    let forgotten = handle.read_local(|s| s.generations_to_forget(now, keep_ms, FORGET_PER_SWEEP));
    for (channel, generation) in forgotten {
        let op = Op::ForgetGeneration {
            channel,
            generation,
        };
        if let Err(e) = handle
            .propose(Command {
                at_ms: now,
                op,
                request: None,
            })
            .await
        {
            tracing::warn!(channel, generation, error = %e, "retention could not forget a generation");
        }
    }
    deleted
}

/// What the disk sweep does with each generation folder: recordings stay whole,
/// deleted ones go at once, a live generation keeps its init segments and its DVR
/// window, the rest goes after `retention`.
pub(crate) fn disk_plan(
    handle: &ClusterHandle,
    active: &[(String, u64)],
    retention: Duration,
) -> impl Fn(&str, u64) -> DiskKeep + Send + 'static {
    let mut known: HashMap<(String, u64), DiskKeep> = HashMap::new();
    handle.read_local(|s| {
        for c in s.channels.values() {
            let live_keep = DiskKeep::YoungerThan {
                // A minute of slack past the window: a viewer at its start still gets it.
                age: retention.max(Duration::from_secs(u64::from(c.ll_hls.dvr_window_s) + 60)),
                keep_init: true,
            };
            for g in s
                .generations
                .get(&c.id)
                .into_iter()
                .flat_map(|g| g.values())
            {
                let keep = match g.recording.as_ref().map(|r| r.status) {
                    Some(RecordingStatus::Deleted) => DiskKeep::Nothing,
                    Some(_) => DiskKeep::Everything,
                    None if g.state.is_active() => live_keep,
                    None => continue,
                };
                known.insert((c.slug.clone(), g.number), keep);
            }
            // A loop still running here keeps what it serves, whatever the state says.
            for (slug, number) in active.iter().filter(|(slug, _)| *slug == c.slug) {
                known.entry((slug.clone(), *number)).or_insert(live_keep);
            }
        }
    });
    move |channel: &str, generation: u64| {
        known
            .get(&(channel.to_string(), generation))
            .copied()
            .unwrap_or(DiskKeep::YoungerThan {
                age: retention,
                keep_init: false,
            })
    }
}
