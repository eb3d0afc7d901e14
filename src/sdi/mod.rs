//! SDI capture ports on this node (DESIGN §3 CapturePort). A port is a physical input:
//! found on the hardware (or simulated: `--sdi-simulated-ports N`), reported to the
//! cluster, which creates it once; operators enable, label and bind it. An enabled port
//! runs a standby pipeline that reports its signal and video mode; a bound one with a
//! signal is its channel's ingest, encoded and fed to the same packager as RTMP.
//!
//! ```text
//! scan (start, every 10 s) --ReportCapturePorts--> cluster
//! state: ports of this node, enabled --> one task per port
//!   task: capture thread (GStreamer) --Sample--> FLV tag bodies --> FlvDemuxer
//!         --> Origins::publish_captured(channel) --> packaging loop
//!   signal lost / pipeline error --> publisher dropped (reconnecting), status reported,
//!   retried; signal back within the grace --> same playlist, a discontinuity
//! ```
//!
//! Without the `sdi` cargo feature there is no GStreamer: the node reports no ports and
//! refuses simulated ones at start.

#[cfg(feature = "sdi")]
mod capture;
#[cfg(feature = "sdi")]
mod port;

use std::collections::HashSet;
use std::sync::Mutex;

/// Simulated ports' device numbers start here (a DeckLink card numbers its inputs from 0).
pub(crate) const SIMULATED_BASE: u32 = 1000;
/// Most simulated ports a node may have.
pub(crate) const MAX_SIMULATED: u32 = 16;

/// What the API may do to this node's ports while it runs.
pub(crate) struct Control {
    simulated: u32,
    /// Simulated ports whose signal an operator cut (for tests and demos).
    signal_off: Mutex<HashSet<u32>>,
}

impl Control {
    pub(crate) fn new(simulated: u32) -> Self {
        Self {
            simulated,
            signal_off: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn is_simulated(&self, device: u32) -> bool {
        (SIMULATED_BASE..SIMULATED_BASE + self.simulated).contains(&device)
    }

    /// Cuts or restores a simulated port's signal; `Err` for a port that is not one.
    pub(crate) fn set_simulated_signal(&self, device: u32, present: bool) -> Result<(), String> {
        if !self.is_simulated(device) {
            return Err(format!(
                "device {device} is not a simulated port of this node (those are {SIMULATED_BASE}..{})",
                SIMULATED_BASE + self.simulated
            ));
        }
        if let Ok(mut off) = self.signal_off.lock() {
            if present {
                off.remove(&device);
            } else {
                off.insert(device);
            }
        }
        Ok(())
    }

    #[cfg_attr(not(feature = "sdi"), allow(dead_code))]
    pub(crate) fn signal_cut(&self, device: u32) -> bool {
        self.signal_off
            .lock()
            .map(|off| off.contains(&device))
            .unwrap_or(false)
    }
}

/// Whether this build can capture SDI.
pub(crate) const AVAILABLE: bool = cfg!(feature = "sdi");

#[cfg(feature = "sdi")]
pub(crate) use port::run;

/// Without the `sdi` feature: nothing to capture, nothing to report.
#[cfg(not(feature = "sdi"))]
pub(crate) async fn run(
    _handle: sluice_cluster::handle::ClusterHandle,
    _origins: std::sync::Arc<crate::origin::Origins>,
    _control: std::sync::Arc<Control>,
    _shutdown: tokio::sync::watch::Receiver<bool>,
) {
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_simulated_ports_have_a_signal_to_cut() {
        let c = Control::new(2);
        assert!(c.set_simulated_signal(0, false).is_err());
        assert!(c.set_simulated_signal(SIMULATED_BASE + 2, false).is_err());
        c.set_simulated_signal(SIMULATED_BASE + 1, false)
            .expect("simulated");
        assert!(c.signal_cut(SIMULATED_BASE + 1) && !c.signal_cut(SIMULATED_BASE));
        c.set_simulated_signal(SIMULATED_BASE + 1, true)
            .expect("simulated");
        assert!(!c.signal_cut(SIMULATED_BASE + 1));
    }
}
