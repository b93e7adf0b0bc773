//! `[hypervisor] kind = "hyperv"` in host.toml: how slipwayd reaches a Hyper-V host, the virtual
//! switch its node VMs plug into, and the directory on the host it keeps plans, images and VMs
//! under.
//!
//! ```toml
//! [hypervisor]
//! kind = "hyperv"
//! switch = "Slipway"                          # an existing Hyper-V virtual switch
//! root = 'D:\Slipway'                         # on the Hyper-V host
//! executor = { ssh = "slipway@hv-01.example", known-hosts = "/etc/slipway/hv-01.known_hosts",
//!              identity = "/etc/slipway/hv-01.key" }
//! # executor = "local"                        # slipwayd runs on the Hyper-V host itself
//! ```
//!
//! A cluster's `[clusters.network] vlan` tags its nodes' adapters on the switch.

use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// A Hyper-V host as slipwayd drives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HyperVHost {
    /// How plans reach the host.
    pub executor: Executor,
    /// The Hyper-V virtual switch node VMs plug into.
    pub switch: String,
    /// The directory on the Hyper-V host that holds `plans\`, `images\` and `vms\` (a Windows
    /// path, drive-absolute, without a trailing backslash).
    pub root: String,
}

/// How plans reach the Hyper-V host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executor {
    /// slipwayd runs on the Hyper-V host: `powershell.exe` directly.
    Local,
    /// slipwayd runs elsewhere (a Linux management VM): `ssh` to the host's OpenSSH server.
    Ssh(SshTarget),
}

/// `executor = { ssh = "user@host", ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// `user@host`.
    pub target: String,
    /// The server's port (ssh's default, 22, when absent).
    pub port: Option<u16>,
    /// The private key to log in with (ssh's own defaults when absent).
    pub identity: Option<PathBuf>,
    /// A known_hosts file holding the host's key (ssh's own when absent). Unknown host keys
    /// are always refused.
    pub known_hosts: Option<PathBuf>,
}

/// `executor` as written: `"local"` or a table.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawExecutor {
    Word(String),
    Ssh(RawSsh),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawSsh {
    ssh: String,
    port: Option<u16>,
    identity: Option<String>,
    known_hosts: Option<String>,
}

/// The Hyper-V keys of `[hypervisor]` as written.
pub(super) struct Raw<'a> {
    pub(super) executor: Option<&'a Spanned<RawExecutor>>,
    pub(super) switch: Option<&'a Spanned<String>>,
    pub(super) root: Option<&'a Spanned<String>>,
    /// Where `[hypervisor]`'s `kind` is (missing keys are reported there).
    pub(super) kind: Range<usize>,
}

impl Raw<'_> {
    /// The host, or the span and message of the first bad key.
    pub(super) fn validate(&self) -> Result<HyperVHost, (Range<usize>, String)> {
        let missing = |key: &str, example: &str| {
            (
                self.kind.clone(),
                format!("kind = \"hyperv\" needs {key} (e.g. {key} = {example})"),
            )
        };
        let executor = self
            .executor
            .ok_or_else(|| missing("executor", "{ ssh = \"slipway@hv-01\" } or \"local\""))?;
        let switch = self
            .switch
            .ok_or_else(|| missing("switch", "\"Slipway\""))?;
        let root = self.root.ok_or_else(|| missing("root", "'D:\\Slipway'"))?;
        let executor = match executor.get_ref() {
            RawExecutor::Word(word) if word == "local" => {
                if !cfg!(windows) {
                    return Err((
                        executor.span(),
                        "executor \"local\" runs powershell.exe on the Hyper-V host itself, and this \
                         slipwayd is not a Windows build: use executor = { ssh = \"user@host\" }"
                            .into(),
                    ));
                }
                Executor::Local
            }
            RawExecutor::Word(word) => {
                return Err((
                    executor.span(),
                    format!("executor {word:?}: expected \"local\" or {{ ssh = \"user@host\" }}"),
                ));
            }
            RawExecutor::Ssh(ssh) => {
                Executor::Ssh(ssh_target(ssh).map_err(|why| (executor.span(), why))?)
            }
        };
        let name = switch.get_ref();
        if name.trim().is_empty() || name.len() > 128 || !plain(name) {
            return Err((
                switch.span(),
                format!(
                    "switch {name:?}: expected the name of a Hyper-V virtual switch (Get-VMSwitch), \
                     at most 128 characters, not starting with '-', without quotes, %, !, ^, &, |, \
                     <, >, $, backquotes or control characters"
                ),
            ));
        }
        Ok(HyperVHost {
            executor,
            switch: name.clone(),
            root: windows_root(root.get_ref()).map_err(|why| (root.span(), why))?,
        })
    }
}

/// Whether a plan may be given `text` as a value (the executors refuse the rest: cmd.exe,
/// PowerShell's binder or a shell would read them).
fn plain(text: &str) -> bool {
    crate::driver::hyperv::plan::check_value("", text).is_ok()
}

fn ssh_target(raw: &RawSsh) -> Result<SshTarget, String> {
    let (user, host) = raw.ssh.split_once('@').unwrap_or(("", raw.ssh.as_str()));
    let word = |s: &str| {
        !s.is_empty()
            && !s.starts_with('-')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !word(host) || (raw.ssh.contains('@') && !word(user)) {
        return Err(format!(
            "ssh {:?}: expected user@host (letters, digits, '-', '_', '.'; a host name or IPv4 \
             address: sftp would read an IPv6 address's ':' as a path)",
            raw.ssh
        ));
    }
    if raw.port == Some(0) {
        return Err("port 0: expected the SSH server's port, 1 to 65535".into());
    }
    let absolute = |key: &str, path: &Option<String>| match path {
        Some(p) if !p.starts_with('/') => Err(format!("{key} {p:?}: expected an absolute path")),
        // ssh splits its options' values at spaces and expands % and ~ in them.
        Some(p) if p.contains(|c: char| c.is_whitespace() || c.is_control() || c == '%') => Err(
            format!("{key} {p:?}: expected a path without spaces, control characters or '%'"),
        ),
        Some(p) => Ok(Some(PathBuf::from(p))),
        None => Ok(None),
    };
    Ok(SshTarget {
        target: raw.ssh.clone(),
        port: raw.port,
        identity: absolute("identity", &raw.identity)?,
        known_hosts: absolute("known-hosts", &raw.known_hosts)?,
    })
}

/// `root` checked: a drive-absolute Windows path (`D:\Slipway`), no `..` or `.` component, no
/// character a plan's value may not hold; returned without a trailing backslash.
fn windows_root(root: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "root {root:?}: expected a directory on the Hyper-V host as a drive-absolute Windows path \
             like 'D:\\Slipway' (single quotes in TOML keep the backslashes), without '..', '/', \
             quotes, %, !, ^, &, |, <, >, $, backquotes, [, ], *, ? or control characters"
        )
    };
    let trimmed = root.trim_end_matches('\\');
    let mut chars = trimmed.chars();
    let drive = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest = chars.as_str();
    if !drive
        || !rest.starts_with(":\\")
        || rest.len() < 3
        || !plain(trimmed)
        || trimmed.contains(['/', '[', ']', '*', '?'])
        || trimmed[3..]
            .split('\\')
            .any(|part| part.is_empty() || part == "." || part == ".." || part.ends_with(' '))
    {
        return Err(bad());
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_drive_absolute_windows_paths() {
        assert_eq!(windows_root("D:\\Slipway\\").unwrap(), "D:\\Slipway");
        assert_eq!(
            windows_root("C:\\ClusterStorage\\Volume 1\\Slipway").unwrap(),
            "C:\\ClusterStorage\\Volume 1\\Slipway"
        );
        for bad in [
            "Slipway",
            "D:Slipway",
            "D:\\",
            "\\\\server\\share",
            "D:\\a\\..\\b",
            "D:\\a\\\\b",
            "D:/Slipway",
            "D:\\\"x\"",
            "D:\\100%",
            "D:\\a&b",
            "D:\\VMs [prod]",
            "D:\\Slip$way",
        ] {
            assert!(windows_root(bad).is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn ssh_targets_are_user_at_host_and_paths_absolute() {
        let raw = |ssh: &str| RawSsh {
            ssh: ssh.into(),
            port: None,
            identity: None,
            known_hosts: None,
        };
        assert_eq!(
            ssh_target(&raw("slipway@hv-01.example")).unwrap().target,
            "slipway@hv-01.example"
        );
        assert!(ssh_target(&raw("hv-01")).is_ok());
        for bad in [
            "-oProxyCommand=x",
            "a@-b",
            "a b@c",
            "@host",
            "u@",
            "u@h;x",
            "u@fe80::1",
        ] {
            assert!(ssh_target(&raw(bad)).is_err(), "{bad} was taken");
        }
        let relative = RawSsh {
            identity: Some("keys/hv".into()),
            ..raw("u@h")
        };
        assert!(ssh_target(&relative).unwrap_err().contains("absolute"));
        let spaced = RawSsh {
            known_hosts: Some("/etc/slipway/hv 01/kh".into()),
            ..raw("u@h")
        };
        assert!(ssh_target(&spaced).unwrap_err().contains("without spaces"));
    }
}
