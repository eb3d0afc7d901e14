//! The spool of one channel on its origin node: the hot window in memory (what viewers
//! are served from) and every object written to disk under
//! `<data-dir>/spool/<channel>/<generation>/<rendition>/`.
//!
//! Disk writes happen on their own task: a full disk or a permission error marks the
//! generation degraded and is logged, while serving from memory goes on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sluice_media::playlist::multivariant::Variant;
use sluice_media::playlist::names::{self, ObjectName};
use sluice_media::playlist::MediaPlaylist;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Segments kept in memory behind the playlist window, for clients a little behind.
const MEMORY_SEGMENTS_BEHIND_WINDOW: u64 = 4;
/// Objects waiting for the disk; beyond this the writer is not keeping up.
const DISK_QUEUE: usize = 512;

/// The current generation of one channel, as served.
#[derive(Default)]
pub(crate) struct Spool {
    pub(crate) generation: u64,
    /// The first media sequence number this origin makes of the generation (after the
    /// last one another origin made, for a resumed generation): lower ones never come.
    pub(crate) first_msn: u64,
    /// Made at the first init segment (when PART-TARGET is known).
    pub(crate) playlist: Option<MediaPlaylist>,
    pub(crate) variant: Option<Variant>,
    pub(crate) ended: bool,
    /// The last disk error, while it lasts.
    pub(crate) degraded: Option<String>,
    objects: HashMap<ObjectName, Bytes>,
    /// Parts of the open segment, concatenated into it when it ends.
    open_segment: Vec<u8>,
}

impl Spool {
    pub(crate) fn new(generation: u64, first_msn: u64) -> Self {
        Self {
            generation,
            first_msn,
            ..Default::default()
        }
    }

    pub(crate) fn object(&self, name: ObjectName) -> Option<Bytes> {
        self.objects.get(&name).cloned()
    }

    pub(crate) fn insert(&mut self, name: ObjectName, data: Bytes) {
        if let ObjectName::Part(..) = name {
            self.open_segment.extend_from_slice(&data);
        }
        self.objects.insert(name, data);
    }

    pub(crate) fn start_segment(&mut self) {
        self.open_segment.clear();
    }

    /// Closes the open segment: its bytes become the whole-segment object.
    pub(crate) fn end_segment(&mut self, msn: u64) -> Bytes {
        let data = Bytes::from(std::mem::take(&mut self.open_segment));
        self.objects.insert(ObjectName::Segment(msn), data.clone());
        self.prune_memory();
        data
    }

    /// Drops objects of segments well behind the playlist window (they stay on disk).
    fn prune_memory(&mut self) {
        let Some(first) = self.playlist.as_ref().and_then(|p| p.first_msn()) else {
            return;
        };
        let keep_from = first.saturating_sub(MEMORY_SEGMENTS_BEHIND_WINDOW);
        self.objects.retain(|name, _| match name {
            ObjectName::Init(_) => true,
            ObjectName::Segment(msn) | ObjectName::Part(msn, _) => *msn >= keep_from,
        });
    }
}

/// Where a generation's objects live on disk.
pub(crate) fn generation_dir(
    root: &Path,
    channel: &str,
    generation: u64,
    rendition: &str,
) -> PathBuf {
    root.join(channel)
        .join(generation.to_string())
        .join(rendition)
}

/// Reads an object written earlier (a generation no longer in memory).
pub(crate) async fn read_from_disk(
    root: &Path,
    channel: &str,
    generation: u64,
    rendition: &str,
    name: ObjectName,
) -> Option<Bytes> {
    let file = match name {
        ObjectName::Init(i) => names::init(i),
        ObjectName::Segment(m) => names::segment(m),
        ObjectName::Part(m, p) => names::part(m, p),
    };
    let path = generation_dir(root, channel, generation, rendition).join(file);
    tokio::fs::read(path).await.ok().map(Bytes::from)
}

/// Sends objects to the disk writer of one generation.
#[derive(Clone)]
pub(crate) struct DiskWriter {
    tx: mpsc::Sender<(String, Bytes)>,
}

/// Reports disk trouble: `Some(reason)` when writes fail, `None` once one succeeds again.
pub(crate) type DiskStatus = Arc<dyn Fn(Option<String>) + Send + Sync>;

impl DiskWriter {
    pub(crate) fn spawn(dir: PathBuf, status: DiskStatus, metrics: Arc<Metrics>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(String, Bytes)>(DISK_QUEUE);
        tokio::spawn(async move {
            let mut failing = false;
            while let Some((name, data)) = rx.recv().await {
                let result = async {
                    tokio::fs::create_dir_all(&dir).await?;
                    tokio::fs::write(dir.join(&name), &data).await
                }
                .await;
                match result {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!(dir = %dir.display(), "spool writes succeed again");
                        status(None);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        metrics.spool_error();
                        if !failing {
                            tracing::error!(dir = %dir.display(), object = %name, error = %e,
                                "spool write failed: generation degraded, serving from memory");
                        }
                        failing = true;
                        status(Some(format!("writing {name}: {e}")));
                    }
                }
            }
        });
        Self { tx }
    }

    /// Queues an object; never waits (the packaging loop must not stall on a disk).
    pub(crate) fn write(&self, name: String, data: Bytes) -> Result<(), String> {
        self.tx
            .try_send((name, data))
            .map_err(|_| "the spool disk is not keeping up; object not written".to_string())
    }
}

/// Checks the spool root is writable (for `/readyz`).
pub(crate) fn check_writable(root: &Path) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let probe = root.join(".write-check");
    std::fs::write(&probe, b"ok").map_err(|e| format!("writing {}: {e}", root.display()))?;
    std::fs::remove_file(&probe).map_err(|e| format!("removing {}: {e}", probe.display()))
}

/// Deletes spooled objects older than `retention`, except those of `active`
/// (channel, generation) pairs whose init segments a live playlist still names. Empty
/// folders go too. Errors are logged and skipped: pruning must not stop a node.
pub(crate) fn prune_disk(root: &Path, retention: Duration, active: &[(String, u64)]) {
    let Ok(channels) = std::fs::read_dir(root) else {
        return;
    };
    let now = SystemTime::now();
    let old = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > retention)
    };
    for channel in channels.flatten() {
        let channel_name = channel.file_name().to_string_lossy().into_owned();
        let Ok(generations) = std::fs::read_dir(channel.path()) else {
            continue;
        };
        for generation in generations.flatten() {
            let number: Option<u64> = generation.file_name().to_string_lossy().parse().ok();
            let is_active =
                number.is_some_and(|n| active.iter().any(|(c, g)| *c == channel_name && *g == n));
            let Ok(renditions) = std::fs::read_dir(generation.path()) else {
                continue;
            };
            for rendition in renditions.flatten() {
                let Ok(files) = std::fs::read_dir(rendition.path()) else {
                    continue;
                };
                for file in files.flatten() {
                    let path = file.path();
                    let is_init = file.file_name().to_string_lossy().starts_with("init");
                    if (is_active && is_init) || !old(&path) {
                        continue;
                    }
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "spool prune failed");
                    }
                }
                let _ = std::fs::remove_dir(rendition.path()); // only if empty
            }
            let _ = std::fs::remove_dir(generation.path());
        }
        let _ = std::fs::remove_dir(channel.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, b"x").expect("write");
    }

    #[test]
    fn pruning_keeps_young_objects_and_the_live_generations_init() {
        let root = std::env::temp_dir().join(format!("sluice-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let live = generation_dir(&root, "news", 2, "source");
        let ended = generation_dir(&root, "news", 1, "source");
        for f in ["init.mp4", "0.m4s", "0.0.m4s"] {
            touch(&live.join(f));
            touch(&ended.join(f));
        }
        // Nothing is old yet: nothing goes.
        prune_disk(&root, Duration::from_secs(600), &[("news".into(), 2)]);
        assert!(ended.join("0.m4s").exists() && live.join("0.0.m4s").exists());
        // Everything is old: the ended generation goes entirely, the live one keeps
        // the init segment its playlist names.
        std::thread::sleep(Duration::from_millis(20));
        prune_disk(&root, Duration::from_millis(1), &[("news".into(), 2)]);
        assert!(
            !root.join("news").join("1").exists(),
            "ended generation kept"
        );
        assert!(live.join("init.mp4").exists(), "live init pruned");
        assert!(!live.join("0.m4s").exists() && !live.join("0.0.m4s").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_finished_segment_is_its_parts_and_old_ones_leave_memory() {
        let mut spool = Spool::new(1, 0);
        spool.start_segment();
        spool.insert(ObjectName::Part(0, 0), Bytes::from_static(b"ab"));
        spool.insert(ObjectName::Part(0, 1), Bytes::from_static(b"cd"));
        assert_eq!(&spool.end_segment(0)[..], b"abcd");
        assert_eq!(
            spool.object(ObjectName::Segment(0)).as_deref(),
            Some(&b"abcd"[..])
        );
        assert!(spool.object(ObjectName::Part(0, 1)).is_some());
    }
}
