//! The spool of one channel on its origin node: the hot window in memory (what viewers
//! are served from) and every object written to disk under
//! `<data-dir>/spool/<channel>/<generation>/<rendition>/`.
//!
//! Disk writes happen on their own task: a full disk or a permission error marks the
//! generation degraded and is logged, while serving from memory goes on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sluice_media::playlist::blocking::{self, Decision, Directives};
use sluice_media::playlist::multivariant::Variant;
use sluice_media::playlist::names::{self, ObjectName};
use sluice_media::playlist::{MediaPlaylist, Skip};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Segments kept in memory behind the playlist window, for clients a little behind.
const MEMORY_SEGMENTS_BEHIND_WINDOW: u64 = 4;
/// Most segments kept in memory: a longer (DVR) window is served from disk beyond them.
const MEMORY_SEGMENTS: u64 = 24;
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
    playlist: Option<MediaPlaylist>,
    /// The playlist's text as last rendered, per `_HLS_skip` variant: made by the first
    /// request after a change and shared by all the others (a part wakes every waiting
    /// viewer at once). Emptied by every change ([`Spool::playlist_mut`]).
    rendered: [OnceLock<Bytes>; 3],
    pub(crate) variant: Option<Variant>,
    /// The packaging loop stopped: the generation ended (the playlist says so) or
    /// moved on to another node (the playlist does not: requests follow it there).
    pub(crate) ended: bool,
    /// The last disk error, while it lasts.
    pub(crate) degraded: Option<String>,
    objects: HashMap<ObjectName, Bytes>,
    /// Parts of the open segment, in order: concatenated into it when it ends.
    open_parts: Vec<(u32, Bytes)>,
}

impl Spool {
    pub(crate) fn new(generation: u64, first_msn: u64) -> Self {
        Self {
            generation,
            first_msn,
            ..Default::default()
        }
    }

    pub(crate) fn playlist(&self) -> Option<&MediaPlaylist> {
        self.playlist.as_ref()
    }

    /// The playlist to change (made by `make` if there is none yet); what was rendered
    /// of it is forgotten.
    pub(crate) fn playlist_mut(
        &mut self,
        make: impl FnOnce() -> MediaPlaylist,
    ) -> &mut MediaPlaylist {
        self.rendered = Default::default();
        self.playlist.get_or_insert_with(make)
    }

    /// Ends the playlist, if there is one.
    pub(crate) fn end_playlist(&mut self) {
        self.rendered = Default::default();
        if let Some(p) = self.playlist.as_mut() {
            p.end();
        }
    }

    /// The playlist's text for `skip`, rendered once per change.
    pub(crate) fn rendered(&self, skip: Skip) -> Option<Bytes> {
        let p = self.playlist.as_ref()?;
        let slot = match skip {
            Skip::No => 0,
            Skip::Yes => 1,
            Skip::V2 => 2,
        };
        Some(
            self.rendered[slot]
                .get_or_init(|| Bytes::from(p.render(skip, &[])))
                .clone(),
        )
    }

    pub(crate) fn object(&self, name: ObjectName) -> Option<Bytes> {
        self.objects.get(&name).cloned()
    }

    pub(crate) fn insert(&mut self, name: ObjectName, data: Bytes) {
        if let ObjectName::Part(_, index) = name {
            self.open_parts.push((index, data.clone()));
        }
        self.objects.insert(name, data);
    }

    pub(crate) fn start_segment(&mut self) {
        self.open_parts.clear();
    }

    /// Closes the open segment: its parts, concatenated into one buffer of the exact
    /// size, become the whole-segment object, and the parts become views into it (the
    /// same bytes are not kept twice).
    pub(crate) fn end_segment(&mut self, msn: u64) -> Bytes {
        let parts = std::mem::take(&mut self.open_parts);
        let mut whole = Vec::with_capacity(parts.iter().map(|(_, p)| p.len()).sum());
        for (_, p) in &parts {
            whole.extend_from_slice(p);
        }
        let data = Bytes::from(whole);
        let mut at = 0;
        for (index, part) in parts {
            let Some(view) = data.get(at..at + part.len()) else {
                break;
            };
            self.objects
                .insert(ObjectName::Part(msn, index), data.slice_ref(view));
            at += part.len();
        }
        self.objects.insert(ObjectName::Segment(msn), data.clone());
        self.prune_memory(msn);
        data
    }

    /// Drops objects of segments well behind the playlist window, and of a long (DVR)
    /// window all but the newest: they stay on disk.
    fn prune_memory(&mut self, last: u64) {
        let Some(first) = self.playlist().and_then(|p| p.first_msn()) else {
            return;
        };
        let keep_from = first
            .saturating_sub(MEMORY_SEGMENTS_BEHIND_WINDOW)
            .max(last.saturating_sub(MEMORY_SEGMENTS));
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

/// What the disk writer is asked to do, in order.
enum Job {
    Write(String, Bytes),
    /// Added at the end of an object written before.
    Append(String, Bytes),
    /// Answer once everything queued before is written and on stable storage (fsync of
    /// every object written since the last such flush, then of the folder), with how
    /// many objects were synced.
    Sync(oneshot::Sender<std::io::Result<usize>>),
}

/// Sends objects to the disk writer of one generation.
#[derive(Clone)]
pub(crate) struct DiskWriter {
    tx: mpsc::Sender<Job>,
}

/// Reports disk trouble: `Some(reason)` when writes fail, `None` once one succeeds again.
pub(crate) type DiskStatus = Arc<dyn Fn(Option<String>) + Send + Sync>;

impl DiskWriter {
    pub(crate) fn spawn(dir: PathBuf, status: DiskStatus, metrics: Arc<Metrics>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(DISK_QUEUE);
        tokio::spawn(async move {
            let mut failing = false;
            let mut batch = Vec::new();
            // Objects written since the last sync (bounded: synced along the way when
            // it grows, so a day-long recording does not keep every name).
            let mut unsynced = std::collections::BTreeSet::new();
            // What is queued goes to one blocking task at a time (a thread hand-off per
            // object cost more than the write).
            while rx.recv_many(&mut batch, DISK_BATCH).await > 0 {
                let mut objects = Vec::with_capacity(batch.len());
                let mut syncs = Vec::new();
                for job in batch.drain(..) {
                    match job {
                        Job::Write(name, data) => objects.push((name, data, false)),
                        Job::Append(name, data) => objects.push((name, data, true)),
                        Job::Sync(done) => syncs.push(done),
                    }
                }
                unsynced.extend(objects.iter().map(|(name, _, _)| name.clone()));
                let to = dir.clone();
                let results = tokio::task::spawn_blocking(move || write_objects(&to, objects))
                    .await
                    .unwrap_or_else(|e| vec![("(batch)".into(), Err(std::io::Error::other(e)))]);
                for (name, result) in results {
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
                if !syncs.is_empty() || unsynced.len() > MAX_UNSYNCED {
                    let names = std::mem::take(&mut unsynced);
                    let to = dir.clone();
                    let synced: Result<usize, String> =
                        tokio::task::spawn_blocking(move || sync_objects(&to, &names))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map_err(|e| e.to_string()));
                    if let Err(e) = &synced {
                        tracing::error!(dir = %dir.display(), error = %e, "spool sync failed");
                    }
                    for done in syncs {
                        let _ = done.send(synced.clone().map_err(std::io::Error::other));
                    }
                }
            }
        });
        Self { tx }
    }

    /// Waits until everything queued so far is written and on stable storage (a
    /// recording is reported finished only after this): the number of objects synced.
    pub(crate) async fn sync(&self) -> std::io::Result<usize> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::Sync(done))
            .await
            .map_err(|_| std::io::Error::other("the disk writer has stopped"))?;
        wait.await
            .map_err(|_| std::io::Error::other("the disk writer has stopped"))?
    }

    /// Queues an object; never waits (the packaging loop must not stall on a disk).
    pub(crate) fn write(&self, name: String, data: Bytes) -> Result<(), String> {
        self.queue(Job::Write(name, data))
    }

    /// Queues bytes to add at the end of an object written before; never waits.
    pub(crate) fn append(&self, name: String, data: Bytes) -> Result<(), String> {
        self.queue(Job::Append(name, data))
    }

    fn queue(&self, job: Job) -> Result<(), String> {
        self.tx
            .try_send(job)
            .map_err(|_| "the spool disk is not keeping up; object not written".to_string())
    }
}

/// Objects handed to one blocking write task at most.
const DISK_BATCH: usize = 64;

/// Objects written but not yet synced, past which they are synced without being asked.
const MAX_UNSYNCED: usize = 4096;

/// fsyncs each object of `names` still in `dir` (one removed since is skipped), then
/// `dir` itself (the renames and new names): how many objects were synced.
fn sync_objects(dir: &Path, names: &std::collections::BTreeSet<String>) -> std::io::Result<usize> {
    let mut synced = 0;
    for name in names {
        match std::fs::File::open(dir.join(name)) {
            Ok(file) => {
                file.sync_all()?;
                synced += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if dir.exists() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(synced)
}

/// Writes objects into `dir` (made when missing), whole or (`true`) appended, each
/// with its own result.
fn write_objects(
    dir: &Path,
    objects: Vec<(String, Bytes, bool)>,
) -> Vec<(String, std::io::Result<()>)> {
    let made = std::fs::create_dir_all(dir);
    objects
        .into_iter()
        .map(|(name, data, append)| {
            let result = match &made {
                Ok(()) if append => append_to(dir, &name, &data),
                Ok(()) => write_whole(dir, &name, &data),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            (name, result)
        })
        .collect()
}

/// Adds `data` at the end of `name`, which must exist.
fn append_to(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(name))?
        .write_all(data)
}

/// Writes `name` under a temporary name and renames it into place: a reader (a viewer,
/// a node pulling a recording, a restart) sees the old object or the whole new one,
/// never a half-written or truncated one, and a failed write (a full disk) leaves the
/// old one as it was.
fn write_whole(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let partial = dir.join(format!(".{name}.partial"));
    let written =
        std::fs::write(&partial, data).and_then(|()| std::fs::rename(&partial, dir.join(name)));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Checks the spool root is writable (for `/readyz`).
pub(crate) fn check_writable(root: &Path) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let probe = root.join(".write-check");
    std::fs::write(&probe, b"ok").map_err(|e| format!("writing {}: {e}", root.display()))?;
    std::fs::remove_file(&probe).map_err(|e| format!("removing {}: {e}", probe.display()))
}

/// What the disk sweep does with one generation's folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiskKeep {
    /// A recording: every file stays.
    Everything,
    /// A deleted recording: every file goes now.
    Nothing,
    /// Files older than this go; `keep_init`: init segments stay (a live playlist
    /// names them).
    YoungerThan { age: Duration, keep_init: bool },
}

/// Applies `decide(channel, generation)` to every generation folder under `root`; a
/// folder whose name is not a generation number is pruned by `fallback`. Empty folders
/// go too. Errors are logged and skipped: pruning must not stop a node.
pub(crate) fn prune_disk(root: &Path, fallback: Duration, decide: &dyn Fn(&str, u64) -> DiskKeep) {
    let Ok(channels) = std::fs::read_dir(root) else {
        return;
    };
    let now = SystemTime::now();
    let old = |path: &Path, age: Duration| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|a| a > age)
    };
    for channel in channels.flatten() {
        let channel_name = channel.file_name().to_string_lossy().into_owned();
        let Ok(generations) = std::fs::read_dir(channel.path()) else {
            continue;
        };
        for generation in generations.flatten() {
            let number: Option<u64> = generation.file_name().to_string_lossy().parse().ok();
            let keep = number.map_or(
                DiskKeep::YoungerThan {
                    age: fallback,
                    keep_init: false,
                },
                |n| decide(&channel_name, n),
            );
            let (age, keep_init) = match keep {
                DiskKeep::Everything => continue,
                DiskKeep::Nothing => {
                    if let Err(e) = std::fs::remove_dir_all(generation.path()) {
                        tracing::warn!(path = %generation.path().display(), error = %e,
                            "removing a deleted recording failed");
                    }
                    continue;
                }
                DiskKeep::YoungerThan { age, keep_init } => (age, keep_init),
            };
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
                    if (keep_init && is_init) || !old(&path, age) {
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

/// What a playlist request gets from this node's spool now, decided under its lock.
pub(crate) enum PlaylistAnswer {
    /// The playlist; `at_boundary` when it ends with a whole segment and only a hint of
    /// the next one's first part (see [`Spool::playlist_answer`]).
    Render {
        text: Bytes,
        at_boundary: bool,
    },
    /// Not there yet: wait for the next change.
    Wait,
    /// Another node took the generation over: pull from it.
    Moved,
    Missing,
    Bad(&'static str),
}

impl Spool {
    /// The answer to a playlist request with `directives` (blocking, skip).
    pub(crate) fn playlist_answer(&self, directives: &Directives) -> PlaylistAnswer {
        match self.playlist() {
            // The generation went on elsewhere while this request waited here.
            Some(p) if self.ended && !p.is_ended() => PlaylistAnswer::Moved,
            None if self.ended => PlaylistAnswer::Missing,
            None => PlaylistAnswer::Wait,
            Some(p) => match blocking::decide(p, directives) {
                Decision::Ready => match self.rendered(directives.skip) {
                    Some(text) => PlaylistAnswer::Render {
                        text,
                        at_boundary: !p.is_ended() && p.next_part().1 == 0,
                    },
                    None => PlaylistAnswer::Wait,
                },
                Decision::Wait => PlaylistAnswer::Wait,
                Decision::BadRequest(why) => PlaylistAnswer::Bad(why),
            },
        }
    }

    /// An object of `generation` in the memory window, if this spool holds that
    /// generation.
    pub(crate) fn spooled(&self, generation: u64, name: ObjectName) -> Option<Bytes> {
        (self.generation == generation)
            .then(|| self.object(name))
            .flatten()
    }

    /// Whether an object not there yet may still come soon (a hinted part, the open or
    /// next segment): such a request is held until it exists.
    pub(crate) fn may_come(&self, generation: u64, name: ObjectName) -> bool {
        if self.generation != generation || self.ended {
            return false;
        }
        // Made by an earlier origin of the generation, or never made by it: not here.
        if let ObjectName::Part(msn, _) | ObjectName::Segment(msn) = name {
            if msn < self.first_msn {
                return false;
            }
        }
        let Some(p) = self.playlist() else {
            return !matches!(name, ObjectName::Init(_));
        };
        let (next_msn, _) = p.next_part();
        match name {
            ObjectName::Init(_) => false,
            ObjectName::Part(msn, _) | ObjectName::Segment(msn) => {
                msn + 1 >= next_msn && msn <= next_msn + 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_media::packager::{Part, SegmentStart};
    use sluice_media::playlist::PlaylistSettings;
    use sluice_media::Output;

    #[test]
    fn a_closed_segments_parts_are_views_into_its_bytes() {
        let mut spool = Spool::new(1, 0);
        spool.start_segment();
        spool.insert(ObjectName::Part(3, 0), Bytes::from_static(b"first "));
        spool.insert(ObjectName::Part(3, 1), Bytes::from_static(b"second"));
        let whole = spool.end_segment(3);
        assert_eq!(&whole[..], b"first second");
        let second = spool.object(ObjectName::Part(3, 1)).expect("part 1");
        assert_eq!(&second[..], b"second");
        // The part's bytes are inside the segment's buffer, not a copy.
        let range = whole.as_ptr() as usize..whole.as_ptr() as usize + whole.len();
        assert!(range.contains(&(second.as_ptr() as usize)));
        assert_eq!(spool.object(ObjectName::Segment(3)), Some(whole));
    }

    #[test]
    fn the_rendered_playlist_is_shared_until_the_playlist_changes() {
        let mut spool = Spool::new(1, 0);
        assert!(spool.rendered(Skip::No).is_none());
        let make = || {
            MediaPlaylist::new(PlaylistSettings {
                target_duration_s: 2,
                part_target_ms: 200,
                window_segments: 3,
                uri_prefix: "1/".into(),
            })
        };
        spool
            .playlist_mut(make)
            .apply(&Output::SegmentStart(SegmentStart {
                msn: 0,
                program_date_time_ms: 0,
                discontinuity: false,
                init_index: 0,
            }));
        let part = |index| {
            Output::Part(Part {
                msn: 0,
                index,
                duration_us: 200_000,
                independent: true,
                data: Bytes::from_static(b"x"),
            })
        };
        spool.playlist_mut(make).apply(&part(0));
        let first = spool.rendered(Skip::No).expect("a playlist");
        // The same bytes for the next request, not a new rendering.
        let again = spool.rendered(Skip::No).expect("a playlist");
        assert_eq!(first.as_ptr(), again.as_ptr());
        assert!(String::from_utf8_lossy(&first).contains("0.0.m4s"));
        spool.playlist_mut(make).apply(&part(1));
        let changed = spool.rendered(Skip::No).expect("a playlist");
        assert!(String::from_utf8_lossy(&changed).contains("0.1.m4s"));
        spool.end_playlist();
        let ended = spool.rendered(Skip::No).expect("a playlist");
        assert!(String::from_utf8_lossy(&ended).contains("#EXT-X-ENDLIST"));
    }

    /// An object is replaced whole or not at all: a write that fails (here its
    /// temporary name is taken by a directory, as a full disk would fail it) leaves the
    /// old object as it was, and no temporary file behind.
    #[test]
    fn objects_are_replaced_whole_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("sluice-whole-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let objects =
            |data: &'static [u8]| vec![("index.m3u8".to_string(), Bytes::from(data), false)];
        let first = write_objects(&dir, objects(b"first"));
        assert!(first.iter().all(|(_, r)| r.is_ok()), "{first:?}");
        let second = write_objects(&dir, objects(b"second, longer"));
        assert!(second.iter().all(|(_, r)| r.is_ok()), "{second:?}");
        assert_eq!(
            std::fs::read(dir.join("index.m3u8")).expect("read"),
            b"second, longer"
        );
        std::fs::create_dir(dir.join(".index.m3u8.partial")).expect("mkdir");
        let failed = write_objects(&dir, objects(b"third"));
        assert!(failed.iter().all(|(_, r)| r.is_err()), "{failed:?}");
        assert_eq!(
            std::fs::read(dir.join("index.m3u8")).expect("read"),
            b"second, longer"
        );
        std::fs::remove_dir(dir.join(".index.m3u8.partial")).expect("rmdir");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["index.m3u8"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A durable flush fsyncs what was written since the last one (each name once,
    /// appended or replaced), and nothing twice.
    #[tokio::test]
    async fn a_sync_puts_what_was_written_since_the_last_one_on_stable_storage() {
        let dir = std::env::temp_dir().join(format!("sluice-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let status: DiskStatus = Arc::new(|_| {});
        let writer = DiskWriter::spawn(dir.clone(), status, Arc::new(Metrics::default()));
        writer
            .write("a.m3u8".into(), Bytes::from_static(b"#EXTM3U\n"))
            .expect("queued");
        writer
            .append("a.m3u8".into(), Bytes::from_static(b"x\n"))
            .expect("queued");
        writer
            .write("1.m4s".into(), Bytes::from_static(b"moof"))
            .expect("queued");
        assert_eq!(writer.sync().await.expect("synced"), 2);
        assert_eq!(writer.sync().await.expect("synced"), 0, "nothing new");
        writer
            .append("a.m3u8".into(), Bytes::from_static(b"y\n"))
            .expect("queued");
        assert_eq!(writer.sync().await.expect("synced"), 1);
        assert_eq!(
            std::fs::read(dir.join("a.m3u8")).expect("read"),
            b"#EXTM3U\nx\ny\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, b"x").expect("write");
    }

    #[test]
    fn pruning_keeps_young_objects_recordings_and_the_live_generations_init() {
        let root = std::env::temp_dir().join(format!("sluice-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let live = generation_dir(&root, "news", 2, "source");
        let ended = generation_dir(&root, "news", 1, "source");
        for f in ["init.mp4", "0.m4s", "0.0.m4s"] {
            touch(&live.join(f));
            touch(&ended.join(f));
        }
        let recorded = generation_dir(&root, "news", 3, "source");
        let deleted = generation_dir(&root, "news", 4, "source");
        touch(&recorded.join("0.m4s"));
        touch(&deleted.join("0.m4s"));
        let decide = |retention: Duration| {
            move |channel: &str, generation: u64| match (channel, generation) {
                ("news", 2) => DiskKeep::YoungerThan {
                    age: retention,
                    keep_init: true,
                },
                ("news", 3) => DiskKeep::Everything,
                ("news", 4) => DiskKeep::Nothing,
                _ => DiskKeep::YoungerThan {
                    age: retention,
                    keep_init: false,
                },
            }
        };
        // Nothing is old yet: only the deleted recording goes.
        let long = Duration::from_secs(600);
        prune_disk(&root, long, &decide(long));
        assert!(
            !root.join("news").join("4").exists(),
            "deleted recording kept"
        );
        assert!(ended.join("0.m4s").exists() && live.join("0.0.m4s").exists());
        // Everything is old: the ended generation goes entirely, the live one keeps
        // the init segment its playlist names.
        std::thread::sleep(Duration::from_millis(20));
        let short = Duration::from_millis(1);
        prune_disk(&root, short, &decide(short));
        assert!(recorded.join("0.m4s").exists(), "a recording was pruned");
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
