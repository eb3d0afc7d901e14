//! Sluice's media core, sans-IO: no sockets, no files, no clock. Time is an argument.
//!
//! ```text
//! flv (RTMP tag bodies, .flv files) --Input--> packager::Packager --Output--> caller
//!        |                                          |  cmaf: init + moof/mdat per part
//!        codec: avcC / hvcC / av1C / ASC facts      v
//!                              playlist::MediaPlaylist (live window) -> m3u8 text
//!                              playlist::blocking::decide (LL-HLS blocking reload)
//! ```
//!
//! Layout: `frame` (the model), `codec` (configuration records), `flv` (tag parsing and
//! the RTMP/FLV demuxer), `rtmp` (an RTMP publish: handshake and session, sans-IO),
//! `ts` (the MPEG-TS demuxer), `srt_datagram` (what the SRT library may be given),
//! `cmaf` (fMP4 writing), `packager` (parts and segments), `playlist` (media and
//! multivariant playlists, blocking-reload decision).
//!
//! One ingest is one rendition with audio and video muxed in the same fragments. Sluice
//! does not transcode, so there is nothing to switch between; muxing keeps audio and
//! video parts aligned by construction and halves the blocking playlist requests a
//! low-latency client makes (one media playlist, no `EXT-X-MEDIA` audio group).

pub mod cmaf;
pub mod codec;
pub mod flv;
pub mod frame;
pub mod packager;
pub mod playlist;
pub mod rtmp;
pub mod srt_datagram;
#[cfg(test)]
pub(crate) mod testing;
pub mod ts;

pub use frame::{AudioConfig, Frame, TrackConfig, TrackKind, VideoCodec, VideoConfig};
pub use packager::{
    Input, Output, Packager, PackagerError, PackagerSettings, PART_TARGET_MS_RANGE,
};
