//! The peer: nginx with libnginx-mod-rtmp (RTMP in, classic HLS out, files served by
//! nginx's own HTTP server), and CPU/memory readings of a server's processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sluice_e2e::node::{free_port, wait_for, Http};

const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

pub(crate) struct Nginx {
    child: Option<Child>,
    pub(crate) rtmp: u16,
    pub(crate) http: u16,
    /// Files served at `/`.
    pub(crate) www: PathBuf,
    dir: PathBuf,
}

impl Nginx {
    /// nginx in the foreground with `workers` worker processes: RTMP application
    /// `live` writing HLS (`fragment_s` fragments) served under `/hls/`, and `www/`
    /// served at `/`.
    pub(crate) fn start(dir: &Path, workers: u32, fragment_s: u32) -> Result<Self> {
        if !Path::new(RTMP_MODULE).exists() {
            bail!("{RTMP_MODULE} is missing: install nginx and libnginx-mod-rtmp");
        }
        std::fs::create_dir_all(dir.join("hls"))?;
        std::fs::create_dir_all(dir.join("www"))?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        let (rtmp, http) = (free_port()?, free_port()?);
        // Running as root, nginx's workers would otherwise switch to nobody and could
        // not write into this folder.
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        let d = dir.display();
        let playlist_s = fragment_s * 3;
        let conf = format!(
            r#"load_module {RTMP_MODULE};
{user}
daemon off;
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16000; }}
rtmp {{
  server {{
    listen 127.0.0.1:{rtmp};
    chunk_size 4096;
    application live {{
      live on;
      hls on;
      hls_path {d}/hls;
      hls_fragment {fragment_s}s;
      hls_playlist_length {playlist_s}s;
    }}
  }}
}}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  client_body_temp_path {d}/tmp;
  proxy_temp_path {d}/tmp;
  fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp;
  scgi_temp_path {d}/tmp;
  types {{
    application/vnd.apple.mpegurl m3u8;
    video/mp2t ts;
    video/iso.segment m4s;
    video/mp4 mp4;
  }}
  server {{
    listen 127.0.0.1:{http};
    add_header Access-Control-Allow-Origin *;
    location /hls/ {{
      alias {d}/hls/;
      add_header Cache-Control no-cache;
      add_header Access-Control-Allow-Origin *;
    }}
    location / {{ root {d}/www; }}
  }}
}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let log = std::fs::File::create(dir.join("stderr.log"))?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting nginx (install nginx and libnginx-mod-rtmp)")?;
        let me = Self {
            child: Some(child),
            rtmp,
            http,
            www: dir.join("www"),
            dir: dir.to_path_buf(),
        };
        std::fs::write(me.www.join("up"), "up")?;
        let client = Http::new(None)?;
        wait_for(Duration::from_secs(10), "nginx to answer", || {
            let r = client.get(&me.url("/up"), &[]).ok()?;
            (r.status == 200).then_some(())
        })
        .with_context(|| me.errors())?;
        Ok(me)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    pub(crate) fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.rtmp)
    }

    pub(crate) fn hls_url(&self, key: &str) -> String {
        self.url(&format!("/hls/{key}.m3u8"))
    }

    pub(crate) fn errors(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    /// The master and its workers.
    pub(crate) fn processes(&self) -> Processes {
        let master = self.child.as_ref().map(Child::id);
        Processes::tree(master)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut master) = self.child.take() else {
            return;
        };
        // Its workers, found while they are still its children.
        let workers = children_of(master.id());
        // SIGTERM: nginx's fast shutdown, workers included.
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(master.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if matches!(master.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = master.kill();
        let _ = master.wait();
        for pid in workers {
            // Gone already, or ended now. SAFETY: plain kill(2).
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_fields(*pid).is_some_and(|f| f.get(1) == Some(&parent.to_string())))
        .collect()
}

/// The fields of /proc/PID/stat after the command name (field 3 onwards).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    Some(after.split_whitespace().map(String::from).collect())
}

/// A server's processes, for CPU time and resident memory.
pub(crate) struct Processes(Vec<u32>);

impl Processes {
    pub(crate) fn one(pid: Option<u32>) -> Self {
        Self(pid.into_iter().collect())
    }

    /// A process and its children.
    pub(crate) fn tree(pid: Option<u32>) -> Self {
        let mut pids: Vec<u32> = pid.into_iter().collect();
        if let Some(p) = pid {
            pids.extend(children_of(p));
        }
        Self(pids)
    }

    /// User + system CPU seconds used so far, all processes together.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.0
            .iter()
            .filter_map(|pid| {
                let f = stat_fields(*pid)?;
                // utime and stime are fields 14 and 15: indexes 11 and 12 here.
                let user: f64 = f.get(11)?.parse().ok()?;
                let system: f64 = f.get(12)?.parse().ok()?;
                Some((user + system) / ticks)
            })
            .sum()
    }

    /// Resident memory in MiB, all processes together.
    pub(crate) fn rss_mib(&self) -> f64 {
        self.0
            .iter()
            .filter_map(|pid| sluice_e2e::node::rss_bytes(*pid))
            .map(|bytes| bytes as f64 / (1024.0 * 1024.0))
            .sum()
    }
}
