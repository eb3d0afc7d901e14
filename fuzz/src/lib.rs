//! Helpers shared by the fuzz targets (`fuzz_targets/`): input chunking and the
//! packaging a demuxer's output goes through in the server.

use sluice_media::playlist::{MediaPlaylist, PlaylistSettings, Skip};
use sluice_media::{Input, Packager, PackagerSettings};

/// Splits `data` into pieces of 1 to 4096 bytes whose sizes follow `seed`, as reads
/// from a socket would.
pub fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x100;
    let mut rest = data;
    let mut out = Vec::new();
    while !rest.is_empty() {
        // A small xorshift: varied sizes, the same for the same seed.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = match state % 4 {
            0 => 1 + (state >> 8) as usize % 8,
            1 => 1 + (state >> 8) as usize % 188,
            _ => 1 + (state >> 8) as usize % 4096,
        };
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out
}

/// A packager and playlist fed as the server's channel loop feeds them: the first
/// error ends the stream.
pub struct Packaging {
    packager: Option<Packager>,
    playlist: MediaPlaylist,
}

impl Default for Packaging {
    fn default() -> Self {
        Self::new()
    }
}

impl Packaging {
    pub fn new() -> Self {
        let settings = PackagerSettings::default();
        let playlist = MediaPlaylist::new(PlaylistSettings {
            target_duration_s: settings.target_duration_s(),
            part_target_ms: settings.part_target_ms,
            window_segments: 3,
            uri_prefix: String::new(),
        });
        Self {
            packager: Packager::new(settings).ok(),
            playlist,
        }
    }

    /// Feeds one input at `now_ms` (wall clock, ms since the epoch).
    pub fn push(&mut self, input: Input, now_ms: i64) {
        if let Some(p) = self.packager.as_mut() {
            if p.push(input, now_ms).is_err() {
                self.packager = None;
            }
        }
        self.drain();
    }

    /// The end of the stream: the open part and segment close, the playlist is written.
    pub fn finish(mut self) {
        if let Some(p) = self.packager.as_mut() {
            let _ = p.finish();
            let _ = p.variant("v.m3u8".into());
        }
        self.drain();
        self.playlist.end();
        let _ = self.playlist.render(Skip::No, &[]);
    }

    fn drain(&mut self) {
        if let Some(p) = self.packager.as_mut() {
            while let Some(output) = p.poll_output() {
                self.playlist.apply(&output);
            }
        }
    }
}
