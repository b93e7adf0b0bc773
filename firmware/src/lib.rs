//! UEFI firmware for Slipway node VMs.
//!
//! Finds the OVMF code and variable-store images a host's `ovmf` package installs. Per-VM
//! variable stores and Secure Boot key enrolment build on this.

use std::path::{Path, PathBuf};

/// Where Debian's `ovmf` package puts its images.
pub const DEFAULT_SEARCH_DIRS: &[&str] = &["/usr/share/OVMF", "/usr/share/ovmf"];

/// A matching pair of OVMF images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    /// The read-only firmware code.
    pub code: PathBuf,
    /// The template variable store, copied once per VM.
    pub vars: PathBuf,
}

/// Why no firmware was found.
#[derive(Debug, thiserror::Error)]
#[error(
    "no OVMF firmware (OVMF_CODE_4M.fd with OVMF_VARS_4M.fd) in {searched}; install Debian's ovmf package"
)]
pub struct FindFirmwareError {
    searched: String,
}

/// [`find_ovmf`] in [`DEFAULT_SEARCH_DIRS`]: where this host's `ovmf` package put it.
pub fn find_default_ovmf() -> Result<Ovmf, FindFirmwareError> {
    let dirs: Vec<&Path> = DEFAULT_SEARCH_DIRS.iter().map(Path::new).collect();
    find_ovmf(&dirs)
}

/// The 4 MiB OVMF build (the one with Secure Boot support in Debian), from the first
/// directory that has both the code and the variable-store template.
pub fn find_ovmf(dirs: &[&Path]) -> Result<Ovmf, FindFirmwareError> {
    dirs.iter()
        .map(|dir| Ovmf {
            code: dir.join("OVMF_CODE_4M.fd"),
            vars: dir.join("OVMF_VARS_4M.fd"),
        })
        .find(|o| o.code.is_file() && o.vars.is_file())
        .ok_or_else(|| FindFirmwareError {
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_complete_pair() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("OVMF_CODE_4M.fd"), b"code").unwrap();
        let err = find_ovmf(&[a.path()]).unwrap_err().to_string();
        assert!(err.contains("install Debian's ovmf package"), "{err}");
        for f in ["OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"] {
            std::fs::write(b.path().join(f), b"x").unwrap();
        }
        assert_eq!(
            find_ovmf(&[a.path(), b.path()]).unwrap().code,
            b.path().join("OVMF_CODE_4M.fd")
        );
    }
}
