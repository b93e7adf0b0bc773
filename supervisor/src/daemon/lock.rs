//! The host lock: one process at a time acts on a state directory (`slipwayd run`, `down`, a
//! purge with no supervisor). An advisory lock on `STATE/slipwayd.lock`, released when its
//! holder exits, even by `kill -9`; the file holds the holder's pid for the message another
//! one gives.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, bail};

/// The lock, held while this value lives.
pub struct HostLock {
    _file: File,
}

impl HostLock {
    /// Takes the lock of `state_dir`, or fails naming the supervisor that holds it and what
    /// could not be done (`what`).
    pub fn take(state_dir: &Path, what: &str) -> anyhow::Result<HostLock> {
        match HostLock::try_take(state_dir)? {
            Some(lock) => Ok(lock),
            None => {
                let path = state_dir.join("slipwayd.lock");
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                bail!(
                    "cannot {what}: slipwayd run (pid {}) supervises {}; stop it first (SIGTERM leaves the VMs running)",
                    holder.trim(),
                    state_dir.display()
                )
            }
        }
    }

    /// The lock, or None when another process holds it.
    pub fn try_take(state_dir: &Path) -> anyhow::Result<Option<HostLock>> {
        crate::persist::private_dir(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let path = state_dir.join("slipwayd.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if file.try_lock().is_err() {
            return Ok(None);
        }
        file.set_len(0)
            .and_then(|()| std::fs::write(&path, std::process::id().to_string()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Some(HostLock { _file: file }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = HostLock::take(dir.path(), "run").unwrap();
        assert!(HostLock::try_take(dir.path()).unwrap().is_none());
        let e = HostLock::take(dir.path(), "purge").err().unwrap();
        let text = format!("{e:#}");
        assert!(
            text.contains("cannot purge") && text.contains(&std::process::id().to_string()),
            "{text}"
        );
        drop(first);
        assert!(HostLock::try_take(dir.path()).unwrap().is_some());
    }
}
