//! The port manager (feature `sdi`): scans the hardware, reports it, and runs one task
//! per enabled port of this node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use sluice_cluster::command::{DeviceSeen, Op};
use sluice_cluster::handle::ClusterHandle;
use sluice_cluster::model::SdiEncoding;
use sluice_media::flv::FlvDemuxer;
use tokio::sync::{mpsc, watch};

use super::capture::{self, Encode, Sample, Source};
use super::{Control, SIMULATED_BASE};
use crate::origin::{Feed, Origins, Publisher};

const SCAN_EVERY: Duration = Duration::from_secs(10);
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// How long a failed capture waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Frames assumed per second before the input's mode is known.
const DEFAULT_FPS: u32 = 30;

struct Running {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// Scans, reports and runs this node's capture ports until shutdown.
pub(crate) async fn run(
    handle: ClusterHandle,
    origins: Arc<Origins>,
    control: Arc<Control>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(why) = capture::init() {
        tracing::error!(%why, "SDI capture is unavailable on this node");
        return;
    }
    let me = handle.id();
    let mut reported: Option<Vec<DeviceSeen>> = None;
    let mut next_scan = Instant::now();
    let mut running: HashMap<u32, Running> = HashMap::new();
    loop {
        if Instant::now() >= next_scan {
            next_scan = Instant::now() + SCAN_EVERY;
            let simulated = control.simulated;
            let devices = tokio::task::spawn_blocking(move || scan(simulated))
                .await
                .unwrap_or_default();
            if reported.as_ref() != Some(&devices) {
                let op = Op::ReportCapturePorts {
                    node: me,
                    devices: devices.clone(),
                };
                match handle.propose_op(op).await {
                    Ok(_) => {
                        tracing::info!(ports = devices.len(), "capture ports reported");
                        reported = Some(devices);
                    }
                    Err(e) => tracing::debug!(error = %e, "capture ports not reported yet"),
                }
            }
        }
        let wanted: Vec<u32> = handle.read_local(|s| {
            s.capture_ports
                .iter()
                .filter(|p| p.node == me && p.enabled && p.present)
                .map(|p| p.device)
                .collect()
        });
        running.retain(|device, r| {
            let keep = wanted.contains(device) && !r.task.is_finished();
            if !keep {
                r.stop.store(true, Ordering::Relaxed);
            }
            keep
        });
        for device in wanted {
            running.entry(device).or_insert_with(|| {
                let stop = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn(port_task(
                    handle.clone(),
                    origins.clone(),
                    control.clone(),
                    device,
                    stop.clone(),
                ));
                Running { stop, task }
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    for r in running.values() {
        r.stop.store(true, Ordering::Relaxed);
    }
    for (_, r) in running {
        let _ = tokio::time::timeout(Duration::from_secs(3), r.task).await;
    }
}

/// DeckLink inputs found, then the simulated ports.
fn scan(simulated: u32) -> Vec<DeviceSeen> {
    let mut devices: Vec<DeviceSeen> = capture::scan_decklink()
        .into_iter()
        .map(|(device, model)| DeviceSeen { device, model })
        .collect();
    devices.extend((0..simulated).map(|i| DeviceSeen {
        device: SIMULATED_BASE + i,
        model: "Simulated capture port (GStreamer test sources)".into(),
    }));
    devices
}

/// What a port's task reported last, so it reports changes only.
type Status = (bool, Option<String>, Option<String>);

struct PortTask {
    handle: ClusterHandle,
    origins: Arc<Origins>,
    control: Arc<Control>,
    device: u32,
    stop: Arc<AtomicBool>,
    reported: Option<Status>,
    /// Frames per second of the input, once a mode was seen.
    fps: Option<u32>,
}

/// The channel a port feeds and how to encode it, as the state says now.
fn binding(handle: &ClusterHandle, device: u32) -> Option<(String, SdiEncoding)> {
    let me = handle.id();
    handle.read_local(|s| {
        let port = s
            .capture_ports
            .iter()
            .find(|p| p.node == me && p.device == device)?;
        let c = s.channels.get(&port.bound_channel?)?;
        Some((c.slug.clone(), c.sdi_encoding))
    })
}

async fn port_task(
    handle: ClusterHandle,
    origins: Arc<Origins>,
    control: Arc<Control>,
    device: u32,
    stop: Arc<AtomicBool>,
) {
    let mut t = PortTask {
        handle,
        origins,
        control,
        device,
        stop,
        reported: None,
        fps: None,
    };
    while !t.stop.load(Ordering::Relaxed) {
        if t.control.signal_cut(device) {
            t.report(
                false,
                None,
                Some("no signal (simulated signal loss)".into()),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if let Err(why) = t.capture_once().await {
            tracing::warn!(device, %why, "capture port stopped: trying again");
            t.report(false, None, Some(why)).await;
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
    // Disabled: no pipeline, so nothing known about the input.
    t.report(false, None, None).await;
}

impl PortTask {
    async fn report(&mut self, signal: bool, mode: Option<String>, error: Option<String>) {
        let status = (signal, mode, error);
        if self.reported.as_ref() == Some(&status) {
            return;
        }
        let op = Op::ReportPortStatus {
            node: self.handle.id(),
            device: self.device,
            signal: status.0,
            video_mode: status.1.clone(),
            error: status.2.clone(),
        };
        if self.handle.propose_op(op).await.is_ok() {
            self.reported = Some(status);
        }
    }

    /// One run of the pipeline: standby while unbound, encoding into the channel while
    /// bound. Returns `Ok` when it should be rebuilt (binding changed, disabled, signal
    /// cut), the reason when it failed.
    async fn capture_once(&mut self) -> Result<(), String> {
        let bound = binding(&self.handle, self.device);
        let source = if self.control.is_simulated(self.device) {
            Source::Simulated
        } else {
            Source::DeckLink(self.device)
        };
        let encode = bound.as_ref().map(|(_, e)| Encode {
            bitrate_kbps: e.video_bitrate_kbps,
            preset: e.preset.name(),
            keyframe_frames: (u64::from(self.fps.unwrap_or(DEFAULT_FPS))
                * u64::from(e.keyframe_interval_ms))
            .div_ceil(1000)
            .max(1) as u32,
        });
        let (tx, mut rx) = mpsc::channel(1024);
        let halt = Arc::new(AtomicBool::new(false));
        let thread_halt = halt.clone();
        // A simulated port whose signal is cut fails the way a real input does: its
        // source posts an error on the pipeline's bus.
        let control = self.control.clone();
        let device = self.device;
        let lost = move || control.signal_cut(device);
        let capture = tokio::task::spawn_blocking(move || {
            capture::run(source, encode, tx, thread_halt, &lost)
        });
        let mut feeder = bound.map(|(slug, _)| Feeder::new(slug));
        let mut check = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                sample = rx.recv() => match sample {
                    Some(sample) => {
                        let mode = match &sample {
                            Sample::Signal { mode } | Sample::Video { mode, .. } => mode.clone(),
                            Sample::Audio { .. } => None,
                        };
                        if let Some(m) = &mode {
                            self.fps = fps_of(m).or(self.fps);
                            self.report(true, mode, None).await;
                        }
                        if let Some(f) = feeder.as_mut() {
                            f.feed(&self.origins, sample).await;
                        }
                    }
                    // The capture ended: stopped, or failed.
                    None => break,
                },
                _ = check.tick() => {
                    let rebuild = self.stop.load(Ordering::Relaxed)
                        || binding(&self.handle, self.device).map(|b| b.0)
                            != feeder.as_ref().map(|f| f.slug.clone());
                    if rebuild {
                        halt.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        // Dropping the feeder's publisher tells the channel its input left.
        drop(feeder);
        match capture.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(why),
            Err(e) => Err(format!("the capture thread failed: {e}")),
        }
    }
}

/// Frames per second from a `WxH@FPS` mode.
fn fps_of(mode: &str) -> Option<u32> {
    let rate: f64 = mode.rsplit_once('@')?.1.parse().ok()?;
    (rate >= 1.0).then(|| rate.round() as u32)
}

/// Turns a bound port's samples into the channel's input, as FLV tag bodies through the
/// same demuxer RTMP uses.
struct Feeder {
    slug: String,
    publisher: Option<Publisher>,
    demuxer: FlvDemuxer,
    video_config: Option<Bytes>,
    audio_config: Option<Bytes>,
    /// When publishing was last refused (retried at most every 2 s).
    refused_at: Option<Instant>,
    /// The first keyframe's decode time: times start from it (GStreamer's encoders put
    /// their output 1000 hours in, so they never go below zero).
    base_ms: i64,
}

impl Feeder {
    fn new(slug: String) -> Self {
        Self {
            slug,
            publisher: None,
            demuxer: FlvDemuxer::new(),
            video_config: None,
            audio_config: None,
            refused_at: None,
            base_ms: 0,
        }
    }

    /// A time on the stream's own timeline (milliseconds since the first keyframe);
    /// `None` for what came before it.
    fn since_start(&self, ms: i64) -> Option<u32> {
        u32::try_from(ms - self.base_ms).ok()
    }

    async fn feed(&mut self, origins: &Arc<Origins>, sample: Sample) {
        if self.publisher.is_none() {
            // A stream starts on a keyframe.
            let Sample::Video {
                keyframe: true,
                dts_ms,
                ..
            } = &sample
            else {
                return;
            };
            if !self.start_publishing(origins, *dts_ms).await {
                return;
            }
        }
        for (video, ts, body) in self.flv_bodies(sample) {
            let parsed = if video {
                self.demuxer.push_video(ts, &body)
            } else {
                self.demuxer.push_audio(ts, &body)
            };
            let input = match parsed {
                Ok(Some(input)) => input,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(channel = %self.slug, error = %e, "capture output not understood");
                    continue;
                }
            };
            let Some(p) = self.publisher.as_ref() else {
                return;
            };
            let sent = p
                .send(Feed::Input {
                    input,
                    bytes: body.len(),
                })
                .await;
            if sent.is_err() {
                // The generation ended (stopped) or the node is draining.
                self.publisher = None;
                return;
            }
        }
    }

    /// Starts publishing the bound channel from a keyframe at `first_dts`; whether it
    /// did (a refusal is retried after RETRY_AFTER).
    async fn start_publishing(&mut self, origins: &Arc<Origins>, first_dts: i64) -> bool {
        if self.refused_at.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
            return false;
        }
        match origins.publish_captured(&self.slug).await {
            Ok(p) => {
                tracing::info!(channel = %self.slug, "capture port publishing");
                let _ = p
                    .send(Feed::Tracks {
                        video: true,
                        audio: true,
                    })
                    .await;
                self.publisher = Some(p);
                self.base_ms = first_dts;
                self.demuxer = FlvDemuxer::new();
                self.video_config = None;
                self.audio_config = None;
                true
            }
            Err(e) => {
                tracing::warn!(channel = %self.slug, error = %e, "capture port cannot publish");
                self.refused_at = Some(Instant::now());
                false
            }
        }
    }

    /// A sample as the FLV tag bodies RTMP would carry (a new decoder configuration
    /// first): (video, timestamp since the start, body).
    fn flv_bodies(&mut self, sample: Sample) -> Vec<(bool, u32, Bytes)> {
        let mut bodies: Vec<(bool, u32, Bytes)> = Vec::with_capacity(2);
        match sample {
            Sample::Video {
                codec_data,
                data,
                dts_ms,
                pts_ms,
                keyframe,
                ..
            } => {
                let Some(ts) = self.since_start(dts_ms) else {
                    return bodies;
                };
                if let Some(record) = codec_data.filter(|r| self.video_config.as_ref() != Some(r)) {
                    let mut b = BytesMut::with_capacity(record.len() + 5);
                    b.put_slice(&[0x17, 0x00, 0, 0, 0]);
                    b.put_slice(&record);
                    bodies.push((true, ts, b.freeze()));
                    self.video_config = Some(record);
                }
                let cts = (pts_ms - dts_ms).clamp(-0x80_0000, 0x7f_ffff) as i32;
                let mut b = BytesMut::with_capacity(data.len() + 5);
                b.put_u8(if keyframe { 0x17 } else { 0x27 });
                b.put_u8(0x01);
                b.put_slice(&cts.to_be_bytes()[1..]);
                b.put_slice(&data);
                bodies.push((true, ts, b.freeze()));
            }
            Sample::Audio {
                codec_data,
                data,
                pts_ms,
            } => {
                let Some(ts) = self.since_start(pts_ms) else {
                    return bodies;
                };
                if let Some(asc) = codec_data.filter(|c| self.audio_config.as_ref() != Some(c)) {
                    let mut b = BytesMut::with_capacity(asc.len() + 2);
                    b.put_slice(&[0xaf, 0x00]);
                    b.put_slice(&asc);
                    bodies.push((false, ts, b.freeze()));
                    self.audio_config = Some(asc);
                }
                if self.audio_config.is_none() {
                    return bodies;
                }
                let mut b = BytesMut::with_capacity(data.len() + 2);
                b.put_slice(&[0xaf, 0x01]);
                b.put_slice(&data);
                bodies.push((false, ts, b.freeze()));
            }
            Sample::Signal { .. } => {}
        }
        bodies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_rate_comes_from_the_mode() {
        assert_eq!(fps_of("1920x1080@25"), Some(25));
        assert_eq!(fps_of("1920x1080@29.97"), Some(30));
        assert_eq!(fps_of("1920x1080"), None);
    }
}
