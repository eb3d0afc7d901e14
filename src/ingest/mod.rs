//! Ingest adapters: each turns a connection into `Feed`s for a channel's origin.

pub(crate) mod rtmp;
pub(crate) mod srt;
pub(crate) mod srt_caller;
pub(crate) mod srt_front;
