//! `sluice config check FILE`: what would stop a node from starting with this
//! configuration, or make it misbehave, said before it runs. `sluice serve` makes the
//! same checks on the configuration it resolves.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};

use super::Config;

/// One problem: the key it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Problem {
    pub(crate) key: String,
    pub(crate) message: String,
}

fn problem(key: &str, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

fn check_range(out: &mut Vec<Problem>, key: &str, value: i128, min: i128, max: i128) {
    if !(min..=max).contains(&value) {
        out.push(problem(key, format!("{value} is outside {min}..={max}")));
    }
}

fn check_url(out: &mut Vec<Problem>, key: &str, value: Option<&str>) {
    let Some(v) = value else { return };
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
        _ => out.push(problem(
            key,
            format!("{v:?} is not an http:// or https:// URL with a host"),
        )),
    }
}

/// Whether two TCP listeners would take the same port.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn check_file(out: &mut Vec<Problem>, key: &str, path: Option<&Path>) {
    let Some(path) = path else { return };
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
            out.push(problem(key, format!("{} is empty", path.display())))
        }
        Ok(_) => {}
        Err(e) => out.push(problem(
            key,
            format!("{} cannot be read: {e}", path.display()),
        )),
    }
}

/// Every problem of a resolved configuration; `files: false` leaves out whether the
/// secret and certificate files can be read (they exist only where the node runs).
pub(crate) fn check(c: &Config, files: bool) -> Vec<Problem> {
    let mut out = Vec::new();
    check_name(&mut out, c);
    check_ports(&mut out, c);
    check_url(&mut out, "join", c.join.as_deref());
    check_url(
        &mut out,
        "advertise_cluster",
        c.advertise_cluster.as_deref(),
    );
    check_url(&mut out, "advertise_http", c.advertise_http.as_deref());
    check_cluster_secret(&mut out, c);
    for (key, value, min, max) in ranges(c) {
        check_range(&mut out, key, value, min, max);
    }
    check_rtmp_app(&mut out, c);
    if !c.hlsjs_url.starts_with('/') {
        check_url(&mut out, "hlsjs_url", Some(&c.hlsjs_url));
    }
    check_tls(&mut out, c);
    for (key, value, min, max) in limit_ranges(&c.limits) {
        check_range(&mut out, key, value, min, max);
    }
    check_cluster_tls(&mut out, c);
    check_public_host(&mut out, c);
    if files {
        for (key, path) in [
            ("cluster_secret_file", &c.cluster_secret_file),
            ("tls_cert", &c.tls_cert),
            ("tls_key", &c.tls_key),
            ("cluster_tls_cert", &c.cluster_tls_cert),
            ("cluster_tls_key", &c.cluster_tls_key),
            ("cluster_ca", &c.cluster_ca),
        ] {
            check_file(&mut out, key, path.as_deref());
        }
    }
    out
}

/// Every numeric key with the range it must be in: (key, value, min, max).
fn ranges(c: &Config) -> [(&'static str, i128, i128, i128); 9] {
    [
        ("lease_ttl_ms", c.lease_ttl_ms.into(), 1_000, 120_000),
        (
            "reconnect_grace_ms",
            c.reconnect_grace_ms.into(),
            0,
            86_400_000,
        ),
        (
            "edge_upstream_timeout_ms",
            c.edge_upstream_timeout_ms.into(),
            1_000,
            600_000,
        ),
        (
            "edge_cache_bytes",
            c.edge_cache_bytes.into(),
            1 << 20,
            1 << 40,
        ),
        (
            "publisher_timeout_ms",
            c.publisher_timeout_ms.into(),
            1_000,
            600_000,
        ),
        ("srt_latency_ms", c.srt_latency_ms.into(), 20, 8_000),
        (
            "spool_retention_s",
            c.spool_retention_s.into(),
            10,
            31_536_000,
        ),
        (
            "sdi.simulated_ports",
            c.sdi.simulated_ports.into(),
            0,
            crate::sdi::MAX_SIMULATED.into(),
        ),
        (
            "spool_prune_interval_s",
            c.spool_prune_interval_s.into(),
            1,
            3_600,
        ),
    ]
}

/// The `[limits]` table's keys with their ranges.
fn limit_ranges(l: &crate::limits::LimitsConfig) -> [(&'static str, i128, i128, i128); 8] {
    [
        (
            "limits.connections_per_ip",
            l.connections_per_ip.into(),
            1,
            1_000_000,
        ),
        (
            "limits.publishers_per_node",
            l.publishers_per_node.into(),
            1,
            100_000,
        ),
        (
            "limits.failed_publishes_per_ip_per_minute",
            l.failed_publishes_per_ip_per_minute.into(),
            1,
            100_000,
        ),
        (
            "limits.http_max_header_bytes",
            l.http_max_header_bytes.into(),
            8_192,
            1 << 20,
        ),
        (
            "limits.http_max_body_bytes",
            l.http_max_body_bytes.into(),
            4_096,
            1 << 30,
        ),
        (
            "limits.http_idle_timeout_ms",
            l.http_idle_timeout_ms.into(),
            1_000,
            3_600_000,
        ),
        (
            "limits.slow_client_timeout_ms",
            l.slow_client_timeout_ms.into(),
            1_000,
            3_600_000,
        ),
        (
            "limits.blocking_requests_per_client",
            l.blocking_requests_per_client.into(),
            1,
            1_000_000,
        ),
    ]
}

fn check_name(out: &mut Vec<Problem>, c: &Config) {
    if let Some(name) = &c.name {
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            out.push(problem("name", "must be 1 to 64 printable characters"));
        }
    }
}

/// No two TCP listeners on one port.
fn check_ports(out: &mut Vec<Problem>, c: &Config) {
    let tcp = [("http", c.http), ("cluster", c.cluster), ("rtmp", c.rtmp)];
    for (i, (a_key, a)) in tcp.iter().enumerate() {
        for (b_key, b) in &tcp[i + 1..] {
            if clash(*a, *b) {
                out.push(problem(
                    b_key,
                    format!("{b} takes the same TCP port as {a_key} ({a})"),
                ));
            }
        }
    }
}

/// A node that joins, or waits to be added, needs the cluster's secret.
fn check_cluster_secret(out: &mut Vec<Problem>, c: &Config) {
    if c.join.is_some() && c.cluster_secret_file.is_none() {
        out.push(problem(
            "cluster_secret_file",
            "join needs the cluster's secret (a member's data_dir/cluster.secret)",
        ));
    }
    if !c.bootstrap && c.cluster_secret_file.is_none() {
        out.push(problem(
            "cluster_secret_file",
            "bootstrap = false needs the cluster's secret to be added later",
        ));
    }
}

fn check_rtmp_app(out: &mut Vec<Problem>, c: &Config) {
    let app_ok = (1..=64).contains(&c.rtmp_app.len())
        && c.rtmp_app
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !app_ok {
        out.push(problem(
            "rtmp_app",
            "must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'",
        ));
    }
}

fn check_tls(out: &mut Vec<Problem>, c: &Config) {
    if c.tls_cert.is_some() != c.tls_key.is_some() {
        out.push(problem("tls_key", "tls_cert and tls_key go together"));
    }
    if c.rtmps.is_some() && c.tls_cert.is_none() {
        out.push(problem(
            "rtmps",
            "RTMPS needs tls_cert and tls_key (the certificate encoders see)",
        ));
    }
}

fn check_cluster_tls(out: &mut Vec<Problem>, c: &Config) {
    let cluster_tls = [&c.cluster_tls_cert, &c.cluster_tls_key, &c.cluster_ca];
    if cluster_tls.iter().any(|f| f.is_some()) && !cluster_tls.iter().all(|f| f.is_some()) {
        out.push(problem(
            "cluster_ca",
            "cluster_tls_cert, cluster_tls_key and cluster_ca go together",
        ));
    }
}

fn check_public_host(out: &mut Vec<Problem>, c: &Config) {
    if let Some(host) = &c.public_host {
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            out.push(problem(
                "public_host",
                "must be a host name or address, without a scheme or path",
            ));
        }
    }
}

/// Reads and checks a configuration file: its problems (an unknown key or a value of
/// the wrong type is one, named with its line), or none.
pub(crate) fn check_file_at(path: &Path, files: bool) -> Result<Vec<Problem>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match toml::from_str::<Config>(&text) {
        Ok(c) => Ok(check(&c, files)),
        Err(e) => Ok(vec![problem(
            "",
            format!("{}: {}", path.display(), e.to_string().trim()),
        )]),
    }
}

/// The command: prints `ok`, or every problem and exits with status 1.
pub(crate) fn run(path: &Path, skip_files: bool, json: bool) -> Result<()> {
    let problems = check_file_at(path, !skip_files)?;
    if json {
        println!(
            "{}",
            serde_json::json!({"file": path.display().to_string(), "ok": problems.is_empty(), "problems": problems})
        );
    } else if problems.is_empty() {
        println!("{}: ok", path.display());
    } else {
        for p in &problems {
            if p.key.is_empty() {
                eprintln!("{}", p.message);
            } else {
                eprintln!("{}: {}: {}", path.display(), p.key, p.message);
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        if !json {
            eprintln!("{} problem(s) in {}", problems.len(), path.display());
        }
        // The problems are the message: exit without an error report on top.
        std::process::exit(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(c: &Config, files: bool) -> Vec<String> {
        check(c, files).into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn the_defaults_are_fine() {
        assert_eq!(check(&Config::default(), true), vec![]);
    }

    #[test]
    fn each_bad_value_is_named() {
        let mut c = Config {
            lease_ttl_ms: 10,
            rtmp_app: "live/x".into(),
            join: Some("10.0.0.1:7000".into()),
            hlsjs_url: "cdn.example/hls.js".into(),
            tls_cert: Some("/nonexistent/cert.pem".into()),
            ..Config::default()
        };
        c.rtmp = c.http;
        assert_eq!(
            keys(&c, true),
            vec![
                "rtmp",
                "join",
                "cluster_secret_file",
                "lease_ttl_ms",
                "rtmp_app",
                "hlsjs_url",
                "tls_key",
                "tls_cert"
            ]
        );
        // Without the files, the unreadable certificate is not looked at.
        assert!(!keys(&c, false).contains(&"tls_cert".to_string()));
    }

    #[test]
    fn listeners_clash_only_on_overlapping_addresses() {
        let a: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let b: SocketAddr = "127.0.0.2:8080".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert!(!clash(a, b));
        assert!(clash(a, any));
        assert!(clash(a, a));
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key_and_line() {
        let dir = std::env::temp_dir().join(format!("sluice-config-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("bad.toml");
        std::fs::write(&path, "http = \"0.0.0.0:8080\"\nlease_tll_ms = 3000\n").expect("write");
        let problems = check_file_at(&path, true).expect("read");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("lease_tll_ms") && problems[0].message.contains("line 2"),
            "{problems:?}"
        );
        std::fs::write(&path, "http = \"not an address\"\n").expect("write");
        let problems = check_file_at(&path, true).expect("read");
        assert!(problems[0].message.contains("http"), "{problems:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
