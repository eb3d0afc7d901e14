//! What every layer of the binary may use, importing nothing of the crate: the wall
//! clock, random ids, secret files, the data dir's permissions, stop signals, the
//! service manager's notifications and TLS set-up.

pub(crate) mod notify;
pub(crate) mod tls;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// 32 random bytes as hex, from the system's generator (through ring).
pub(crate) fn random_hex() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random generator failed"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The data dir holds signing keys, passphrases and secrets: it is 0700 and its files
/// 0600. Looser modes (an older version, a copied backup, a umask) are fixed, with a
/// warning unless `quiet` (a data dir made just now); the paths fixed are returned.
pub(crate) fn tighten_data_dir(dir: &Path, quiet: bool) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let mut fixed = Vec::new();
    let mut tighten = |path: &Path, mode: u32| -> Result<()> {
        let meta = std::fs::symlink_metadata(path)
            .with_context(|| format!("reading {}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            if !quiet {
                tracing::warn!(path = %path.display(), was = format!("{:o}", meta.permissions().mode() & 0o777),
                now = format!("{mode:o}"), "the data dir was readable by others: fixed");
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("restricting {}", path.display()))?;
            fixed.push(path.to_path_buf());
        }
        Ok(())
    };
    tighten(dir, 0o700)?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            tighten(&entry.path(), 0o600)?;
        }
    }
    Ok(fixed)
}

/// Writes a secret readable by its owner only.
pub(crate) fn write_secret(path: &Path, value: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{value}")?;
    Ok(())
}

/// A secret file's contents, trimmed; an empty file is an error.
pub(crate) fn read_secret(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value = text.trim().to_string();
    if value.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(value)
}

/// Waits for Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data dir left readable by others (an older version, a restored backup) is
    /// made 0700 with 0600 files at start; a tight one is left alone.
    #[test]
    fn a_loose_data_dir_is_tightened() -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sluice-perm-{}", random_hex()?));
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        for name in ["raft.redb", "cluster.secret", "main.stream-key"] {
            std::fs::write(dir.join(name), "x")?;
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644))?;
        }
        std::fs::create_dir(dir.join("spool"))?;
        let fixed = tighten_data_dir(&dir, false)?;
        assert_eq!(fixed.len(), 4, "{fixed:?}");
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode(&dir)?, 0o700);
        assert_eq!(mode(&dir.join("raft.redb"))?, 0o600);
        assert_eq!(mode(&dir.join("main.stream-key"))?, 0o600);
        assert!(
            tighten_data_dir(&dir, false)?.is_empty(),
            "a tight dir is left alone"
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn random_hex_is_32_fresh_bytes() -> Result<()> {
        let (a, b) = (random_hex()?, random_hex()?);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        Ok(())
    }
}
