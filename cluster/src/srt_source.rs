//! A pulled channel's SRT source URL, read once for both uses: `apply` refuses a
//! channel whose URL a node could not call, and the node that pulls reads its options.

use std::time::Duration;

/// A pulled channel's source: `srt://HOST:PORT` with the options a libsrt URL uses:
/// `streamid`, `passphrase`, `pbkeylen` (16, 24, 32), `latency` (ms), `mode=caller`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtSource {
    pub host: String,
    pub port: u16,
    pub stream_id: Option<String>,
    pub passphrase: Option<String>,
    pub key_size: u16,
    pub latency: Option<Duration>,
}

impl SrtSource {
    /// Reads a source URL; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
        if url.scheme() != "srt" {
            return Err("must start with srt://".into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err("needs the source's host (srt://HOST:PORT)".into()),
        };
        let port = url
            .port()
            .filter(|p| *p != 0)
            .ok_or("needs the source's port (srt://HOST:PORT)")?;
        let mut source = SrtSource {
            host,
            port,
            stream_id: None,
            passphrase: None,
            key_size: 16,
            latency: None,
        };
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "streamid" => source.stream_id = Some(value.into_owned()),
                "passphrase" => {
                    if !(10..=79).contains(&value.len()) {
                        return Err("passphrase must be 10 to 79 characters".into());
                    }
                    source.passphrase = Some(value.into_owned());
                }
                "pbkeylen" => {
                    source.key_size = match value.as_ref() {
                        "16" => 16,
                        "24" => 24,
                        "32" => 32,
                        _ => return Err("pbkeylen must be 16, 24 or 32".into()),
                    }
                }
                "latency" => {
                    let ms: u64 = value
                        .parse()
                        .ok()
                        .filter(|ms| *ms <= 60_000)
                        .ok_or("latency must be milliseconds, at most 60000")?;
                    source.latency = Some(Duration::from_millis(ms));
                }
                "mode" if value == "caller" => {}
                "mode" => {
                    return Err(
                        "the cluster calls the source: mode must be caller (the source listens)"
                            .into(),
                    )
                }
                other => return Err(format!("unsupported option {other:?}")),
            }
        }
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_urls_are_read_with_their_options() {
        let s = SrtSource::parse(
            "srt://venue.example:9000?streamid=%23!::r=cam1,m=request&passphrase=0123456789ab&pbkeylen=32&latency=400",
        )
        .expect("parses");
        assert_eq!(
            s,
            SrtSource {
                host: "venue.example".into(),
                port: 9000,
                stream_id: Some("#!::r=cam1,m=request".into()),
                passphrase: Some("0123456789ab".into()),
                key_size: 32,
                latency: Some(Duration::from_millis(400)),
            }
        );
        let plain = SrtSource::parse("srt://127.0.0.1:4200").expect("plain");
        assert_eq!((plain.host.as_str(), plain.port), ("127.0.0.1", 4200));
        assert_eq!((plain.stream_id, plain.passphrase), (None, None));
        let v6 = SrtSource::parse("srt://[::1]:4200?mode=caller").expect("v6");
        assert_eq!(v6.host, "::1");
    }

    #[test]
    fn bad_source_urls_say_what_is_wrong() {
        for (url, says) in [
            ("http://venue:9000", "srt://"),
            ("srt://venue", "port"),
            ("srt://:9000", "host"),
            ("srt://venue:9000?passphrase=short", "passphrase"),
            ("srt://venue:9000?pbkeylen=8", "pbkeylen"),
            ("srt://venue:9000?latency=soon", "latency"),
            ("srt://venue:9000?mode=listener", "caller"),
            ("srt://venue:9000?congestion=file", "congestion"),
            ("not a url", "URL"),
        ] {
            let err = SrtSource::parse(url).expect_err(url);
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
