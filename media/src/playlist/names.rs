//! Object names inside a generation's folder (DESIGN §5): `init.mp4` (later inits after
//! a decoder change: `init-N.mp4`), `{msn}.m4s` for a segment, `{msn}.{part}.m4s` for
//! a part. The playlist writes them, the HTTP layer parses them back.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectName {
    Init(u32),
    Segment(u64),
    Part(u64, u32),
}

pub fn init(index: u32) -> String {
    if index == 0 {
        "init.mp4".to_string()
    } else {
        format!("init-{index}.mp4")
    }
}

pub fn segment(msn: u64) -> String {
    format!("{msn}.m4s")
}

pub fn part(msn: u64, index: u32) -> String {
    format!("{msn}.{index}.m4s")
}

/// Parses an object name; anything else (including leading zeros) is `None`.
pub fn parse(name: &str) -> Option<ObjectName> {
    fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
        let canonical = !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        canonical.then(|| s.parse().ok()).flatten()
    }
    if name == "init.mp4" {
        return Some(ObjectName::Init(0));
    }
    if let Some(n) = name
        .strip_prefix("init-")
        .and_then(|r| r.strip_suffix(".mp4"))
    {
        return number(n).filter(|i| *i > 0).map(ObjectName::Init);
    }
    let stem = name.strip_suffix(".m4s")?;
    match stem.split_once('.') {
        None => number(stem).map(ObjectName::Segment),
        Some((msn, part)) => Some(ObjectName::Part(number(msn)?, number(part)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for o in [
            ObjectName::Init(0),
            ObjectName::Init(3),
            ObjectName::Segment(0),
            ObjectName::Segment(42),
            ObjectName::Part(42, 0),
            ObjectName::Part(7, 11),
        ] {
            let name = match o {
                ObjectName::Init(i) => init(i),
                ObjectName::Segment(m) => segment(m),
                ObjectName::Part(m, p) => part(m, p),
            };
            assert_eq!(parse(&name), Some(o), "{name}");
        }
    }

    #[test]
    fn other_names_are_refused() {
        for bad in [
            "",
            "init-0.mp4",
            "01.m4s",
            "1..m4s",
            "1.2.3.m4s",
            "x.m4s",
            "5.m4",
            "../5.m4s",
            "-1.m4s",
            "99999999999999999999999.m4s",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
