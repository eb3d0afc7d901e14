use super::*;
use proptest::prelude::*;

const H264_AAC: &[u8] = include_bytes!("../../tests/fixtures/h264_aac.ts");
const HEVC_AAC: &[u8] = include_bytes!("../../tests/fixtures/hevc_aac.ts");
const PTS_WRAP: &[u8] = include_bytes!("../../tests/fixtures/pts_wrap.ts");

fn demux_chunked(data: &[u8], chunk: usize) -> (Vec<Input>, TsStats) {
    let mut d = TsDemuxer::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        out.extend(d.push(piece));
    }
    out.extend(d.flush());
    (out, d.stats())
}

fn frames(inputs: &[Input], track: TrackKind) -> Vec<&Frame> {
    inputs
        .iter()
        .filter_map(|i| match i {
            Input::Frame(f) if f.track == track => Some(f),
            _ => None,
        })
        .collect()
}

fn configs(inputs: &[Input]) -> Vec<&TrackConfig> {
    inputs
        .iter()
        .filter_map(|i| match i {
            Input::Config(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn h264_and_aac_come_out_with_their_configs_and_times() {
    let (inputs, stats) = demux_chunked(H264_AAC, H264_AAC.len());
    let configs = configs(&inputs);
    assert_eq!(configs.len(), 2, "one config per track: {configs:?}");
    let video = configs
        .iter()
        .find_map(|c| match c {
            TrackConfig::Video(v) => Some(v),
            _ => None,
        })
        .expect("video config");
    assert_eq!(video.codec, VideoCodec::H264);
    assert!(
        video.codec_string.starts_with("avc1.64"),
        "{}",
        video.codec_string
    );
    assert_eq!((video.width, video.height), (320, 180));
    let audio = configs
        .iter()
        .find_map(|c| match c {
            TrackConfig::Audio(a) => Some(a),
            _ => None,
        })
        .expect("audio config");
    assert_eq!(audio.codec_string, "mp4a.40.2");
    assert_eq!((audio.sample_rate, audio.channels), (48_000, 2));

    let v = frames(&inputs, TrackKind::Video);
    assert_eq!(v.len(), 120, "4 s at 30 fps");
    let keys: Vec<usize> = (0..v.len()).filter(|i| v[*i].keyframe).collect();
    assert_eq!(keys, vec![0, 60]);
    assert!(
        v.windows(2).all(|w| w[1].dts - w[0].dts == 3000),
        "30 fps in 90 kHz"
    );
    assert!(
        v.iter().any(|f| f.cts > 0),
        "B-frames carry composition offsets"
    );
    // Samples are length-prefixed NAL units with no parameter sets or delimiters left.
    for f in &v {
        let mut rest = &f.data[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let nal_type = rest[4] & 0x1f;
            assert!(
                !(7..=9).contains(&nal_type),
                "NAL type {nal_type} left in a sample"
            );
            rest = &rest[4 + len..];
        }
    }

    let a = frames(&inputs, TrackKind::Audio);
    assert!(
        (186..=190).contains(&a.len()),
        "{} AAC frames in 4 s",
        a.len()
    );
    assert!(a.windows(2).all(|w| w[1].dts - w[0].dts == 1024));
    // Audio and video share one timeline: they start within a frame of each other.
    let v0 = v[0].dts as f64 / 90_000.0;
    let a0 = a[0].dts as f64 / 48_000.0;
    assert!((v0 - a0).abs() < 0.2, "video at {v0} s, audio at {a0} s");
    assert_eq!(stats.skipped_bytes, 0);
    assert_eq!(stats.continuity_errors, 0);
    assert_eq!(stats.frames, (v.len() + a.len()) as u64);
}

#[test]
fn chunking_does_not_change_the_output() {
    let (whole, _) = demux_chunked(H264_AAC, H264_AAC.len());
    for chunk in [1316, 1000, 188, 7] {
        let (chunked, stats) = demux_chunked(H264_AAC, chunk);
        assert_eq!(chunked, whole, "chunks of {chunk} bytes");
        assert_eq!(stats.skipped_bytes, 0);
    }
}

#[test]
fn hevc_gets_an_hvcc_record_and_irap_keyframes() {
    let (inputs, _) = demux_chunked(HEVC_AAC, 1316);
    let video = configs(&inputs)
        .into_iter()
        .find_map(|c| match c {
            TrackConfig::Video(v) => Some(v.clone()),
            _ => None,
        })
        .expect("video config");
    assert_eq!(video.codec, VideoCodec::H265);
    assert!(
        video.codec_string.starts_with("hvc1.1"),
        "{}",
        video.codec_string
    );
    assert_eq!((video.width, video.height), (320, 180));
    let v = frames(&inputs, TrackKind::Video);
    assert_eq!(v.len(), 60);
    let keys: Vec<usize> = (0..v.len()).filter(|i| v[*i].keyframe).collect();
    assert_eq!(keys, vec![0, 30]);
    assert!(!frames(&inputs, TrackKind::Audio).is_empty());
}

#[test]
fn timestamps_run_on_across_the_33_bit_wrap() {
    let (inputs, _) = demux_chunked(PTS_WRAP, 1316);
    let v = frames(&inputs, TrackKind::Video);
    assert_eq!(v.len(), 90);
    assert!(v.first().is_some_and(|f| f.dts < 1 << 33));
    assert!(
        v.last().is_some_and(|f| f.dts > 1 << 33),
        "the wrap is inside the file"
    );
    assert!(v.windows(2).all(|w| w[1].dts - w[0].dts == 3000));
    let a = frames(&inputs, TrackKind::Audio);
    assert!(a.windows(2).all(|w| w[1].dts - w[0].dts == 1024));
    let v_end = v.last().map(|f| f.dts as f64 / 90_000.0).unwrap_or(0.0);
    let a_end = a.last().map(|f| f.dts as f64 / 48_000.0).unwrap_or(0.0);
    assert!(
        (v_end - a_end).abs() < 0.2,
        "tracks end together: {v_end} / {a_end}"
    );
}

#[test]
fn unwrapper_steps_back_and_forth_across_the_wrap() {
    let mut u = Unwrap33::default();
    let top = (1u64 << 33) - 100;
    assert_eq!(u.unwrap(top), top as i64);
    assert_eq!(u.unwrap(50), (1i64 << 33) + 50);
    // A slightly earlier value from the other track, still before the wrap.
    assert_eq!(u.unwrap(top - 10), top as i64 - 10);
    assert_eq!(Unwrap33::diff(10, (1 << 33) - 20), 30);
    assert_eq!(Unwrap33::diff((1 << 33) - 20, 10), -30);
}

#[test]
fn garbage_between_packets_is_skipped_and_counted() {
    let (clean, _) = demux_chunked(H264_AAC, 1316);
    let mut dirty = b"not a transport stream at all".to_vec();
    for (n, packet) in H264_AAC.chunks(PACKET).enumerate() {
        dirty.extend_from_slice(packet);
        if n % 500 == 250 {
            // Garbage with stray sync bytes in it, as a bad link might deliver.
            dirty.extend_from_slice(&[0x47, 1, 2, 3, 0x47, 0x47, 9]);
        }
    }
    let (inputs, stats) = demux_chunked(&dirty, 1316);
    assert!(stats.skipped_bytes >= 29, "{stats:?}");
    assert_eq!(inputs, clean, "every packet was still found");
}

#[test]
fn lost_packets_are_counted_and_survived() {
    let mut lossy = Vec::new();
    for (n, packet) in H264_AAC.chunks(PACKET).enumerate() {
        if n % 97 != 96 {
            lossy.extend_from_slice(packet);
        }
    }
    let (inputs, stats) = demux_chunked(&lossy, 1316);
    assert!(stats.continuity_errors > 0, "{stats:?}");
    assert!(stats.dropped_pes > 0, "{stats:?}");
    let v = frames(&inputs, TrackKind::Video);
    assert!(v.len() > 60 && v.len() < 120, "{} video frames", v.len());
    assert!(v.windows(2).all(|w| w[1].dts > w[0].dts));
}

#[test]
fn a_truncated_file_gives_what_it_holds() {
    let cut = &H264_AAC[..H264_AAC.len() / 2 + 77];
    let (inputs, stats) = demux_chunked(cut, 4096);
    let v = frames(&inputs, TrackKind::Video);
    assert!(v.len() > 40 && v.len() < 80, "{} video frames", v.len());
    assert!(
        stats.skipped_bytes > 0,
        "the partial last packet is counted"
    );
}

#[test]
fn annexb_splitting_handles_both_start_codes() {
    let data = [
        0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 4, 5,
    ];
    let nals = annexb_nal_units(&data);
    assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]);
    assert!(annexb_nal_units(&[0, 0, 1]).is_empty());
    assert!(annexb_nal_units(&[]).is_empty());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
        let mut d = TsDemuxer::new();
        let _ = d.push(&bytes);
        let _ = d.flush();
    }

    #[test]
    fn corrupted_streams_never_panic(
        flips in proptest::collection::vec((0..H264_AAC.len() / 4, any::<u8>()), 1..40),
        chunk in 1usize..3000,
    ) {
        let mut data = H264_AAC[..H264_AAC.len() / 4].to_vec();
        for (at, byte) in flips {
            data[at] = byte;
        }
        let (inputs, _) = demux_chunked(&data, chunk);
        // Whatever survives is well formed: samples are whole length-prefixed NAL units.
        for f in frames(&inputs, TrackKind::Video) {
            let mut rest = &f.data[..];
            while rest.len() >= 4 {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                prop_assert!(len > 0 && 4 + len <= rest.len());
                rest = &rest[4 + len..];
            }
            prop_assert!(rest.is_empty());
        }
    }
}

fn time_us(f: &Frame) -> i64 {
    let rate = if f.track == TrackKind::Video {
        90_000
    } else {
        48_000
    };
    f.dts * 1_000_000 / rate
}

#[test]
fn tracks_come_out_in_time_order_though_the_muxer_sends_audio_late() {
    // ffmpeg's muxer sends AAC up to 0.7 s after the video of the same time; without
    // reordering, audio would come out hundreds of ms behind the video.
    let (inputs, _) = demux_chunked(H264_AAC, 1316);
    let times: Vec<i64> = inputs
        .iter()
        .filter_map(|i| match i {
            Input::Frame(f) => Some(time_us(f)),
            _ => None,
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[1] >= w[0]),
        "frames across tracks are in time order"
    );
}

#[test]
fn a_track_that_never_comes_holds_the_other_back_one_second_at_most() {
    // The PMT lists audio, but no audio packet arrives.
    let audio_pid = {
        let mut d = TsDemuxer::new();
        d.push(H264_AAC);
        d.ctx.audio_pid.expect("audio listed")
    };
    let video_only: Vec<u8> = H264_AAC
        .chunks(PACKET)
        .filter(|p| (u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])) != audio_pid)
        .flatten()
        .copied()
        .collect();
    let mut d = TsDemuxer::new();
    let mut released = Vec::new();
    for piece in video_only.chunks(1316) {
        released.extend(d.push(piece));
    }
    // 4 s of video in: all but the last second (30 frames) is out before the end.
    let before_flush = frames(&released, TrackKind::Video).len();
    assert!(
        (88..=92).contains(&before_flush),
        "{before_flush} of 120 frames came out before the end"
    );
    released.extend(d.flush());
    assert_eq!(frames(&released, TrackKind::Video).len(), 120);
    assert!(frames(&released, TrackKind::Audio).is_empty());
}

#[test]
fn a_track_whose_clock_went_back_does_not_hold_the_other_without_bound() {
    let frame = |track, dts| {
        Input::Frame(Frame {
            track,
            dts,
            cts: 0,
            keyframe: true,
            data: Bytes::new(),
        })
    };
    let mut i = Interleaver::default();
    let mut out = Vec::new();
    // Audio stuck at 0 s, video far ahead: by time alone video would wait forever.
    i.queue(1, frame(TrackKind::Audio, 0), 0);
    for n in 0..1_000i64 {
        let at = 100_000_000 + n * 33_333;
        i.queue(0, frame(TrackKind::Video, at * 9 / 100), at);
        i.release([true, true], &mut out);
    }
    assert!(
        out.len() >= 1_000 - MAX_INTERLEAVE_QUEUE,
        "{} of 1001 frames released",
        out.len()
    );
    assert!(i.queues[0].len() <= MAX_INTERLEAVE_QUEUE + 1);
}
