//! One capture port's GStreamer pipeline (feature `sdi`): a DeckLink input (or, for a
//! simulated port, GStreamer's test sources) either watched for its signal (standby) or
//! encoded to H.264 (x264, zero-latency) and AAC into two appsinks, whose samples go to
//! the port's task as [`Sample`]s. Blocking: it runs on a thread of its own.
//!
//! ```text
//! decklinkvideosrc | videotestsrc --> videoconvert --> x264enc --> h264parse --> appsink v
//! decklinkaudiosrc | audiotestsrc --> audioconvert --> avenc_aac --> aacparse --> appsink a
//! standby: video source --> appsink v (caps only: signal and mode), audio --> fakesink
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;

/// Where a port's pictures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `videotestsrc`/`audiotestsrc`, live, 640x360 at 30 fps.
    Simulated,
    /// A DeckLink input by device number, its video mode detected.
    DeckLink(u32),
}

/// How a bound port is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encode {
    pub(crate) bitrate_kbps: u32,
    pub(crate) preset: &'static str,
    /// Frames between keyframes.
    pub(crate) keyframe_frames: u32,
}

/// What the pipeline hands to the port's task.
#[derive(Debug)]
pub(crate) enum Sample {
    /// Standby: the input has a signal in this mode (at most once a second).
    Signal { mode: Option<String> },
    Video {
        /// The avcC record, from the caps.
        codec_data: Option<Bytes>,
        data: Bytes,
        dts_ms: i64,
        pts_ms: i64,
        keyframe: bool,
        mode: Option<String>,
    },
    Audio {
        /// The AudioSpecificConfig, from the caps.
        codec_data: Option<Bytes>,
        data: Bytes,
        pts_ms: i64,
    },
}

/// Loads GStreamer (once per process).
pub(crate) fn init() -> Result<(), String> {
    gst::init().map_err(|e| format!("GStreamer cannot start: {e}"))
}

fn description(source: Source, encode: Option<&Encode>) -> String {
    let (video, audio) = match source {
        Source::Simulated => (
            "videotestsrc name=input is-live=true pattern=smpte ! video/x-raw,width=640,height=360,framerate=30/1"
                .to_string(),
            "audiotestsrc is-live=true wave=sine freq=440 ! audio/x-raw,rate=48000,channels=2"
                .to_string(),
        ),
        Source::DeckLink(n) => (
            format!("decklinkvideosrc name=input device-number={n} mode=auto"),
            format!("decklinkaudiosrc device-number={n}"),
        ),
    };
    match encode {
        None => format!(
            "{video} ! appsink name=v sync=false max-buffers=1 drop=true \
             {audio} ! fakesink sync=false"
        ),
        Some(e) => format!(
            "{video} ! videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency \
             speed-preset={preset} bitrate={bitrate} key-int-max={gop} bframes=0 \
             ! h264parse ! video/x-h264,stream-format=avc,alignment=au \
             ! appsink name=v sync=false max-buffers=300 \
             {audio} ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 \
             ! avenc_aac ! aacparse ! audio/mpeg,mpegversion=4,stream-format=raw \
             ! appsink name=a sync=false max-buffers=300",
            preset = e.preset,
            bitrate = e.bitrate_kbps,
            gop = e.keyframe_frames.max(1),
        ),
    }
}

fn bytes_of(buffer: &gst::BufferRef) -> Option<Bytes> {
    buffer
        .map_readable()
        .ok()
        .map(|m| Bytes::copy_from_slice(m.as_slice()))
}

fn codec_data(s: Option<&gst::StructureRef>) -> Option<Bytes> {
    s?.get::<gst::Buffer>("codec_data")
        .ok()
        .and_then(|b| bytes_of(b.as_ref()))
}

/// `WIDTHxHEIGHT@FPS` from video caps.
fn mode_of(s: Option<&gst::StructureRef>) -> Option<String> {
    let s = s?;
    let width = s.get::<i32>("width").ok()?;
    let height = s.get::<i32>("height").ok()?;
    let rate = s
        .get::<gst::Fraction>("framerate")
        .ok()
        .filter(|f| f.denom() > 0 && f.numer() > 0);
    Some(match rate {
        Some(f) if f.numer() % f.denom() == 0 => {
            format!("{width}x{height}@{}", f.numer() / f.denom())
        }
        Some(f) => format!(
            "{width}x{height}@{:.2}",
            f64::from(f.numer()) / f64::from(f.denom())
        ),
        None => format!("{width}x{height}"),
    })
}

/// A buffer time as running time (ms): what the pipeline's clock says, the same scale
/// for both tracks (an encoder may shift its output times and its segment with them:
/// x264enc puts its output 1000 hours in).
fn running_ms(sample: &gst::Sample, t: Option<gst::ClockTime>) -> Option<i64> {
    let t = t?;
    let running = sample
        .segment()
        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
        .and_then(|s| s.to_running_time(t))
        .unwrap_or(t);
    i64::try_from(running.mseconds()).ok()
}

/// Runs the pipeline until `stop` is set (`Ok`) or it fails (the reason). While
/// `signal_lost()` says so, the video source posts an error, as an input that loses its
/// signal does (simulated ports). Blocking.
pub(crate) fn run(
    source: Source,
    encode: Option<Encode>,
    tx: mpsc::Sender<Sample>,
    stop: Arc<AtomicBool>,
    signal_lost: &dyn Fn() -> bool,
) -> Result<(), String> {
    let desc = description(source, encode.as_ref());
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| format!("building the capture pipeline: {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "the capture description is not a pipeline".to_string())?;
    let encoding = encode.is_some();
    app_sink(&pipeline, "v", "video")?.set_callbacks(video_callbacks(tx.clone(), encoding));
    if encoding {
        app_sink(&pipeline, "a", "audio")?.set_callbacks(audio_callbacks(tx));
    }
    let bus = pipeline
        .bus()
        .ok_or("the capture pipeline has no message bus")?;
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        let first_error = bus
            .timed_pop_filtered(
                gst::ClockTime::from_mseconds(500),
                &[gst::MessageType::Error],
            )
            .and_then(|m| match m.view() {
                gst::MessageView::Error(e) => Some(describe(e)),
                _ => None,
            });
        let why = first_error.unwrap_or_else(|| match source {
            // decklinkvideosrc says no more than that it could not start.
            Source::DeckLink(n) => format!(
                "decklinkvideosrc could not open DeckLink device {n} (no such card, or \
                 Blackmagic's Desktop Video driver is not installed): {e}"
            ),
            Source::Simulated => e.to_string(),
        });
        let _ = pipeline.set_state(gst::State::Null);
        return Err(format!("the capture did not start: {why}"));
    }
    let result = watch(&pipeline, &bus, &stop, signal_lost);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn app_sink(pipeline: &gst::Pipeline, name: &str, what: &str) -> Result<gst_app::AppSink, String> {
    pipeline
        .by_name(name)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or(format!("the capture pipeline has no {what} sink"))
}

/// Video samples to the packager; without encoding (the signal probe only), the
/// signal's mode once a second.
fn video_callbacks(tx: mpsc::Sender<Sample>, encoding: bool) -> gst_app::AppSinkCallbacks {
    let mut last_signal: Option<Instant> = None;
    gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            let s = sample.caps().and_then(|c| c.structure(0));
            if !encoding {
                let due = last_signal.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                if due {
                    last_signal = Some(Instant::now());
                    let _ = tx.try_send(Sample::Signal { mode: mode_of(s) });
                }
                return Ok(gst::FlowSuccess::Ok);
            }
            let Some(buffer) = sample.buffer() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let Some(data) = bytes_of(buffer) else {
                return Err(gst::FlowError::Error);
            };
            let pts = running_ms(&sample, buffer.pts());
            let dts = running_ms(&sample, buffer.dts()).or(pts).unwrap_or(0);
            // A full queue means the packager cannot keep up: the frame is dropped
            // rather than stalling the capture.
            let _ = tx.try_send(Sample::Video {
                codec_data: codec_data(s),
                data,
                dts_ms: dts,
                pts_ms: pts.unwrap_or(dts),
                keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                mode: mode_of(s),
            });
            Ok(gst::FlowSuccess::Ok)
        })
        .build()
}

fn audio_callbacks(tx: mpsc::Sender<Sample>) -> gst_app::AppSinkCallbacks {
    gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            let s = sample.caps().and_then(|c| c.structure(0));
            let Some(buffer) = sample.buffer() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let Some(data) = bytes_of(buffer) else {
                return Err(gst::FlowError::Error);
            };
            let _ = tx.try_send(Sample::Audio {
                codec_data: codec_data(s),
                data,
                pts_ms: running_ms(&sample, buffer.pts()).unwrap_or(0),
            });
            Ok(gst::FlowSuccess::Ok)
        })
        .build()
}

/// Waits on the bus until `stop` is set, an error or the end of the input; posts the
/// loss of signal when `signal_lost` says so.
fn watch(
    pipeline: &gst::Pipeline,
    bus: &gst::Bus,
    stop: &AtomicBool,
    signal_lost: &dyn Fn() -> bool,
) -> Result<(), String> {
    let video_source = pipeline.by_name("input");
    let mut lost_posted = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !lost_posted && signal_lost() {
            lost_posted = true;
            if let Some(src) = &video_source {
                src.post_error_message(gst::error_msg!(
                    gst::ResourceError::Read,
                    ("No signal on the input"),
                    ["simulated signal loss"]
                ));
            }
        }
        let message = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(200),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        );
        match message.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Error(e)) => return Err(describe(e)),
            Some(gst::MessageView::Eos(_)) => return Err("the input ended".to_string()),
            _ => {}
        }
    }
}

fn describe(e: &gst::message::Error) -> String {
    let element = e
        .src()
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| "pipeline".into());
    // GStreamer's debug text starts with where it was raised; the last line says why.
    let debug = e
        .debug()
        .and_then(|d| d.lines().last().map(|l| l.trim().to_string()))
        .filter(|d| !d.is_empty() && !d.ends_with(':'));
    match debug {
        Some(debug) => format!("{element}: {} ({debug})", e.error()),
        None => format!("{element}: {}", e.error()),
    }
}

/// DeckLink inputs on this machine (device numbers and model names), from GStreamer's
/// DeckLink device provider; none without a card or driver.
pub(crate) fn scan_decklink() -> Vec<(u32, String)> {
    let monitor = gst::DeviceMonitor::new();
    let _ = monitor.add_filter(Some("Video/Source"), None);
    if monitor.start().is_err() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for device in monitor.devices() {
        let Ok(element) = device.create_element(None) else {
            continue;
        };
        let is_decklink = element
            .factory()
            .is_some_and(|f| f.name() == "decklinkvideosrc");
        if is_decklink && element.has_property("device-number", None) {
            let number = element.property::<i32>("device-number");
            if let Ok(n) = u32::try_from(number) {
                found.push((n, device.display_name().to_string()));
            }
        }
    }
    monitor.stop();
    found.sort();
    found.dedup_by_key(|d| d.0);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_decklink_input_without_a_card_fails_with_a_reason_not_a_crash() {
        init().expect("GStreamer");
        let (tx, _rx) = mpsc::channel(8);
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = stop.clone();
        // Should it start after all (a card in the machine), stop it after a moment.
        let timer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(5));
            stopper.store(true, Ordering::Relaxed);
        });
        let outcome = run(Source::DeckLink(0), None, tx, stop, &|| false);
        let _ = timer.join();
        let why = outcome.expect_err("no DeckLink card here: the capture must fail");
        eprintln!("decklink without a card: {why}");
        assert!(
            why.contains("decklink") || why.contains("capture"),
            "the reason names what failed: {why}"
        );
        // The element itself exists: the plugin is installed, the driver is what is missing.
        assert!(gst::ElementFactory::find("decklinkvideosrc").is_some());
    }

    #[test]
    fn a_simulated_port_encodes_h264_and_aac_with_their_configurations() {
        init().expect("GStreamer");
        let (tx, mut rx) = mpsc::channel(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = stop.clone();
        let encode = Encode {
            bitrate_kbps: 800,
            preset: "ultrafast",
            keyframe_frames: 30,
        };
        let capture =
            std::thread::spawn(move || run(Source::Simulated, Some(encode), tx, stop, &|| false));
        let mut keyframes = Vec::new();
        let mut audio = 0;
        let mut avcc = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while keyframes.len() < 3 && Instant::now() < deadline {
            match rx.blocking_recv() {
                Some(Sample::Video {
                    codec_data,
                    dts_ms,
                    keyframe,
                    mode,
                    ..
                }) => {
                    avcc = avcc.or(codec_data);
                    assert_eq!(mode.as_deref(), Some("640x360@30"));
                    if keyframe {
                        keyframes.push(dts_ms);
                    }
                }
                Some(Sample::Audio { codec_data, .. }) => {
                    assert!(codec_data.is_some_and(|asc| asc.len() >= 2));
                    audio += 1;
                }
                Some(Sample::Signal { .. }) | None => break,
            }
        }
        stopper.store(true, Ordering::Relaxed);
        let outcome = capture.join().expect("capture thread");
        assert_eq!(outcome, Ok(()));
        assert!(
            avcc.is_some_and(|r| r.first() == Some(&1)),
            "an avcC record"
        );
        assert!(audio > 0, "AAC frames");
        assert_eq!(keyframes.len(), 3, "{keyframes:?}");
        // One keyframe a second (30 frames at 30 fps).
        let gap = keyframes[2] - keyframes[1];
        assert!((900..=1100).contains(&gap), "{keyframes:?}");
    }
}
