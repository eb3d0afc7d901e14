//! Codec facts: what a decoder configuration record says about a stream (size, frame
//! rate, RFC 6381 codec string), and the sample entry the CMAF muxer writes for it.

pub mod aac;
pub mod av1;
pub mod bits;
pub mod h264;
pub mod hevc;

/// A configuration record or parameter set that cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("{what} is truncated")]
    Truncated { what: &'static str },
    #[error("{what} is invalid: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("{what} is not supported: {reason}")]
    Unsupported { what: &'static str, reason: String },
}
