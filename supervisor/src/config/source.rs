//! `[source]`: the repository images come from, the keys they must be signed with, and the
//! channel each node OS follows: `channel` for Linux nodes, `windows-channel` (Hyper-V hosts)
//! for Windows ones. A channel names one image, of one OS, so the two must differ, and a host
//! with an `os = "windows"` node needs `windows-channel` (checked with the nodes).

use std::path::PathBuf;

use toml::Spanned;

use super::{Error, Validator};

/// The image source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `oci:PATH` or `HOST[:PORT]/REPO`.
    pub reference: String,
    /// The channel Linux nodes follow.
    pub channel: String,
    /// `windows-channel`: the channel Windows nodes follow (same repository and keys); needed
    /// when a node has `os = "windows"`.
    pub windows_channel: Option<String>,
    /// Trusted public keys.
    pub keys: Vec<PathBuf>,
    /// Plain HTTP to the registry.
    pub plain_http: bool,
}

impl Validator<'_> {
    /// `[source]` as written, validated; `qemu`: the host's hypervisor is QEMU, which runs no
    /// Windows node (so follows no Windows channel).
    pub(super) fn source(&self, raw: &super::raw::Source, qemu: bool) -> Result<Source, Error> {
        let reference = raw.reference.get_ref();
        let reference_ok = reference.starts_with("oci:") || reference.contains('/');
        if !reference_ok || reference.contains(['@', ' ']) {
            return Err(self.error(
                &raw.reference.span(),
                format!(
                    "reference {reference:?}: expected oci:PATH or HOST[:PORT]/REPOSITORY (the channel picks the image)"
                ),
            ));
        }
        let channel = self.channel_name(&raw.channel, "channel")?;
        let windows_channel = match &raw.windows_channel {
            None => None,
            Some(name) => {
                let windows = self.channel_name(name, "windows-channel")?;
                if windows == channel {
                    return Err(self.error(
                        &name.span(),
                        format!(
                            "windows-channel {windows:?} is also channel: a channel names one \
                             image, of one OS; give the Windows nodes a channel of their own"
                        ),
                    ));
                }
                if qemu {
                    return Err(self.error(
                        &name.span(),
                        "windows-channel: Windows nodes run on Hyper-V hosts only ([hypervisor] \
                         kind = \"hyperv\"); remove it from a QEMU host's [source]",
                    ));
                }
                Some(windows)
            }
        };
        if raw.keys.get_ref().is_empty() {
            return Err(self.error(
                &raw.keys.span(),
                "keys: at least one trusted public key: slipwayd boots nothing unsigned",
            ));
        }
        Ok(Source {
            reference: reference.clone(),
            channel,
            windows_channel,
            keys: raw.keys.get_ref().iter().map(PathBuf::from).collect(),
            plain_http: raw.plain_http,
        })
    }

    /// A channel's name (`channel`, `windows-channel`): letters, digits, '-', '_' and '.'.
    fn channel_name(&self, name: &Spanned<String>, what: &str) -> Result<String, Error> {
        let n = name.get_ref();
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(self.error(
                &name.span(),
                format!("{what} {n:?}: letters, digits, '-', '_' and '.'"),
            ));
        }
        Ok(n.clone())
    }
}
