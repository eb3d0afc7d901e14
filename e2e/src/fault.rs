//! A TCP proxy in front of a server that the test switches between passing traffic,
//! answering every request with HTTP 500, and stalling (accepting, reading, never
//! answering): faults injected in the harness, since the kernel offers no netem here.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass = 0,
    Error = 1,
    Stall = 2,
}

struct Shared {
    mode: AtomicU8,
    stop: AtomicBool,
    /// Bytes passed from the server to clients so far.
    passed: AtomicU64,
    /// Connections open now, closed when the mode changes so none carries on in the
    /// old one.
    open: Mutex<Vec<TcpStream>>,
}

pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `127.0.0.1:target`.
    pub fn start(target: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(Mode::Pass as u8),
            stop: AtomicBool::new(false),
            passed: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                if let (Ok(mut open), Ok(c)) = (s.open.lock(), client.try_clone()) {
                    open.push(c);
                }
                let s = s.clone();
                std::thread::spawn(move || serve(client, target, &s));
            }
        });
        Ok(Self { port, shared })
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Bytes the server has sent through the proxy so far: a player behind it has
    /// loaded media once this grows past the playlists' size.
    pub fn passed_bytes(&self) -> u64 {
        self.shared.passed.load(Ordering::Relaxed)
    }

    pub fn set(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
        if let Ok(mut open) = self.shared.open.lock() {
            for c in open.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.set(Mode::Pass);
        // Wake the accept loop so it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut client: TcpStream, target: u16, s: &Shared) {
    match s.mode.load(Ordering::SeqCst) {
        0 => {
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                return;
            };
            if let (Ok(mut open), Ok(u)) = (s.open.lock(), upstream.try_clone()) {
                open.push(u);
            }
            let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
                return;
            };
            let mut upstream = upstream;
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut u2);
                let _ = u2.shutdown(Shutdown::Write);
            });
            let mut buf = [0u8; 16384];
            while let Ok(n) = upstream.read(&mut buf) {
                if n == 0 || client.write_all(&buf[..n]).is_err() {
                    break;
                }
                s.passed.fetch_add(n as u64, Ordering::Relaxed);
            }
            let _ = client.shutdown(Shutdown::Both);
            let _ = up.join();
        }
        1 => {
            let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            // Answer each request head on the connection with a 500.
            let mut seen = Vec::new();
            while let Ok(n) = client.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    seen.drain(..end + 4);
                    let body = "injected failure\n";
                    let reply = format!(
                        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if client.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            }
        }
        _ => {
            // Read and never answer, until the peer or a mode change closes it.
            let mut buf = [0u8; 8192];
            while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}
