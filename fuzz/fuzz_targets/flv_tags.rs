//! FLV / Enhanced RTMP tag bodies: the tag parsers on the whole input, then the input
//! as a stream of tags through `FlvDemuxer` and the packager. An input starting with
//! `FLV` is read as an `.flv` file (`FlvFile`); any other as records of
//! `[type: 8 audio, else video][timestamp ms: u32 BE][length: u16 BE][body]`.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_fuzz::Packaging;
use sluice_media::flv::{parse_audio_tag, parse_video_tag, FlvDemuxer, FlvFile};

fn push(d: &mut FlvDemuxer, p: &mut Packaging, audio: bool, ts_ms: u32, body: &Bytes) {
    let parsed = if audio {
        d.push_audio(ts_ms, body)
    } else {
        d.push_video(ts_ms, body)
    };
    if let Ok(Some(input)) = parsed {
        p.push(input, i64::from(ts_ms));
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = Bytes::copy_from_slice(data);
    let _ = parse_video_tag(&whole);
    let _ = parse_audio_tag(&whole);

    let mut demuxer = FlvDemuxer::new();
    let mut packaging = Packaging::new();
    if let Ok(mut file) = FlvFile::new(whole.clone()) {
        while let Ok(Some(tag)) = file.next_tag() {
            match tag.tag_type {
                8 | 9 => push(
                    &mut demuxer,
                    &mut packaging,
                    tag.tag_type == 8,
                    tag.timestamp_ms,
                    &tag.body,
                ),
                _ => {}
            }
        }
    } else {
        let mut pos = 0;
        while let Some(head) = whole.get(pos..pos + 7) {
            let ts_ms = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
            let len = usize::from(u16::from_be_bytes([head[5], head[6]]));
            let end = (pos + 7 + len).min(whole.len());
            let body = whole.slice(pos + 7..end);
            push(&mut demuxer, &mut packaging, head[0] == 8, ts_ms, &body);
            pos = end;
        }
    }
    let _ = demuxer.video_config();
    let _ = demuxer.audio_config();
    packaging.finish();
});
