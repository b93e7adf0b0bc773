//! The node-image manifest: what an image is, what went into it and how its disk is laid out.
//! The builder writes it beside the VHDX; hosts read it (signed) before they boot anything.
//!
//! Compatibility rule: `schema` names the format. Readers refuse a schema they do not know.
//! Fields may be added within a schema (readers ignore unknown fields); renaming or removing a
//! field, or changing its meaning, takes a new schema name.
//!
//! v2 ([`SCHEMA`], written for Windows images) is v1 ([`SCHEMA_V1`]) with `os` a closed set
//! (`linux`, `windows`), and the Linux-only facts made optional: `disk.verity` and
//! `boot.kernel`/`cmdline`/`uki_sha256` are present for Linux images only (a Linux manifest
//! without them is refused), and `windows` for Windows images only. Every v1 manifest reads as
//! the v2 manifest it would be, and is written back byte for byte (its schema kept). Linux
//! images are still written as v1 (their manifests have v1's shape), so a host running an
//! older slipwayd takes them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The schema this build writes for Windows images (and reads).
pub const SCHEMA: &str = "slipway.node-image.v2";
/// The first schema: still read, and written for Linux images.
pub const SCHEMA_V1: &str = "slipway.node-image.v1";

/// Errors reading a manifest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read manifest {path}")]
    ReadManifest {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a manifest.
    #[error("{path} is not a node-image manifest")]
    ParseManifest {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Another schema.
    #[error("{path} has schema {found:?}; this build reads {SCHEMA_V1:?} and {SCHEMA:?}")]
    MatchSchema {
        /// The file.
        path: std::path::PathBuf,
        /// Schema found.
        found: String,
    },
    /// The facts do not fit the image's operating system.
    #[error("{path}: {why}")]
    CheckFacts {
        /// The file.
        path: std::path::PathBuf,
        /// What is missing or extra.
        why: String,
    },
}

/// The operating system of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    /// Linux: a verity-protected root booted from a UKI.
    Linux,
    /// Windows: an NTFS volume booted by Windows Boot Manager (worker nodes only).
    Windows,
}

impl Os {
    /// The name manifests and recipes use.
    pub fn name(self) -> &'static str {
        match self {
            Os::Linux => "linux",
            Os::Windows => "windows",
        }
    }
}

impl std::fmt::Display for Os {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A node-image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SCHEMA`] (or [`SCHEMA_V1`] for a manifest written before it).
    pub schema: String,
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: String,
    /// Operating system.
    pub os: Os,
    /// CPU architecture (`x86_64`).
    pub arch: String,
    /// Kubernetes version, if the image carries one.
    pub kubernetes: Option<String>,
    /// Versions of the parts that matter to operators (`kernel`, `containerd`, ...).
    pub components: BTreeMap<String, String>,
    /// Every build input with its digest.
    pub inputs: Vec<Input>,
    /// Every Debian package installed in the root or initrd, as `name` → `version`.
    pub packages: BTreeMap<String, String>,
    /// Files the recipe placed, as image path → sha256 (links: `-> target`; dirs: `dir`).
    pub files: BTreeMap<String, String>,
    /// The disk.
    pub disk: DiskFacts,
    /// How the image boots.
    pub boot: Boot,
    /// How it was built.
    pub build: BuildFacts,
    /// Windows images: what the build did to the base image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowsFacts>,
}

/// Facts of a Windows image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsFacts {
    /// The base image's name in its WIM (`Windows Server 2022 SERVERDATACENTERCORE`).
    pub edition: String,
    /// Its index in the WIM.
    pub index: u32,
    /// Registry values the recipe set, as `HIVE\Key\Path\Name` → type and value text.
    pub registry: BTreeMap<String, String>,
    /// Services registered, as name → command line.
    pub services: BTreeMap<String, String>,
    /// The boot entry's identifier in the BCD store.
    pub loader: String,
    /// sha256 of the BCD store on the ESP.
    pub bcd_sha256: String,
}

/// One build input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// Source name in the recipe.
    pub name: String,
    /// `deb`, `debian`, `path` or `url`.
    pub kind: String,
    /// sha256 of what was used.
    pub sha256: String,
    /// Package, URL or path.
    pub origin: String,
    /// Package version, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Disk facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskFacts {
    /// The VHDX file name.
    pub file: String,
    /// sha256 of the VHDX file.
    pub sha256: String,
    /// Size of the VHDX file.
    pub file_size: u64,
    /// Guest-visible size.
    pub virtual_size: u64,
    /// VHDX block size.
    pub block_size: u32,
    /// Logical sector size.
    pub logical_sector_size: u32,
    /// GPT disk GUID.
    pub disk_guid: String,
    /// Partitions in table order.
    pub partitions: Vec<PartitionFacts>,
    /// dm-verity of the root partition (Linux images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verity: Option<VerityFacts>,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionFacts {
    /// Partition number (1-based).
    pub number: usize,
    /// GPT name.
    pub name: String,
    /// Type GUID.
    pub type_guid: String,
    /// Unique GUID.
    pub guid: String,
    /// Offset in bytes.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Filesystem or content (`vfat`, `erofs`, `ext4`, `verity`).
    pub content: String,
}

/// dm-verity parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerityFacts {
    /// Root hash, lowercase hex.
    pub root_hash: String,
    /// Salt, lowercase hex.
    pub salt: String,
    /// Hash algorithm.
    pub algorithm: String,
    /// Data block size.
    pub data_block_size: u32,
    /// Hash block size.
    pub hash_block_size: u32,
    /// Data blocks covered.
    pub data_blocks: u64,
}

/// Boot facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Boot {
    /// `uefi`.
    pub firmware: String,
    /// The Secure Boot keys the image needs: `none` (Linux, until the UKI is signed) or
    /// `MicrosoftWindows` (Hyper-V's template for Windows Boot Manager).
    pub secure_boot: String,
    /// Kernel version (`uname -r`; Linux images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// The full kernel command line in the UKI (Linux images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// sha256 of the UKI (Linux images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uki_sha256: Option<String>,
}

/// Build facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFacts {
    /// The builder's version.
    pub slipway: String,
    /// Timestamp used for every file in the image.
    pub source_date_epoch: u64,
    /// The Debian package version of each host tool that shaped the image's bytes, as
    /// package → version (`erofs-utils`, `cryptsetup-bin`, `mtools`, ...). Added within
    /// [`SCHEMA`]: a manifest written before it reads as an empty map, and an empty map is
    /// not written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, String>,
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    pub fn read(path: &Path) -> Result<Manifest, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::ReadManifest {
            path: path.to_owned(),
            source,
        })?;
        Manifest::from_slice(&bytes).map_err(|e| match e {
            SliceError::Parse(source) => Error::ParseManifest {
                path: path.to_owned(),
                source,
            },
            SliceError::Schema(found) => Error::MatchSchema {
                path: path.to_owned(),
                found,
            },
            SliceError::Facts(why) => Error::CheckFacts {
                path: path.to_owned(),
                why,
            },
        })
    }

    /// Parses and checks manifest bytes; the error says why they are refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, String> {
        Manifest::from_slice(bytes).map_err(|e| match e {
            SliceError::Parse(e) => e.to_string(),
            SliceError::Schema(found) => {
                format!("schema {found:?}, expected {SCHEMA_V1:?} or {SCHEMA:?}")
            }
            SliceError::Facts(why) => why,
        })
    }

    fn from_slice(bytes: &[u8]) -> Result<Manifest, SliceError> {
        #[derive(Deserialize)]
        struct Head {
            schema: String,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(SliceError::Parse)?;
        if head.schema != SCHEMA && head.schema != SCHEMA_V1 {
            return Err(SliceError::Schema(head.schema));
        }
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(SliceError::Parse)?;
        manifest.check_facts().map_err(SliceError::Facts)?;
        Ok(manifest)
    }

    /// The facts an image of its operating system must have, and no others.
    fn check_facts(&self) -> Result<(), String> {
        let linux = [
            self.disk.verity.is_some(),
            self.boot.kernel.is_some(),
            self.boot.cmdline.is_some(),
            self.boot.uki_sha256.is_some(),
        ];
        match self.os {
            Os::Linux if linux.contains(&false) => Err(
                "a linux image's manifest needs disk.verity and boot.kernel, cmdline and \
                 uki_sha256"
                    .to_owned(),
            ),
            Os::Linux if self.windows.is_some() => {
                Err("a linux image's manifest has windows facts".to_owned())
            }
            Os::Windows if self.schema == SCHEMA_V1 => {
                Err(format!("a windows image needs schema {SCHEMA:?}"))
            }
            Os::Windows if linux.contains(&true) || self.windows.is_none() => Err(
                "a windows image's manifest needs windows facts and no verity, kernel, \
                 cmdline or UKI"
                    .to_owned(),
            ),
            _ => Ok(()),
        }
    }

    /// The dm-verity root hash a booted node must report: Linux images only (a Windows node
    /// has no verity root and reports none).
    pub fn root_hash(&self) -> &str {
        self.disk
            .verity
            .as_ref()
            .map_or("", |v| v.root_hash.as_str())
    }

    /// The canonical JSON text (pretty, keys in declaration order, trailing newline).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

enum SliceError {
    Parse(serde_json::Error),
    Schema(String),
    Facts(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as Slipway wrote them before `build.tools` (trimmed to what parsing needs).
    const BEFORE_TOOLS: &str = r#"{
  "schema": "slipway.node-image.v1",
  "name": "tiny-linux",
  "version": "2026.11.0",
  "os": "linux",
  "arch": "x86_64",
  "kubernetes": null,
  "components": {},
  "inputs": [],
  "packages": {},
  "files": {},
  "disk": {
    "file": "tiny-linux-2026.11.0.vhdx",
    "sha256": "00",
    "file_size": 1,
    "virtual_size": 1,
    "block_size": 1048576,
    "logical_sector_size": 512,
    "disk_guid": "",
    "partitions": [],
    "verity": {
      "root_hash": "",
      "salt": "",
      "algorithm": "sha256",
      "data_block_size": 4096,
      "hash_block_size": 4096,
      "data_blocks": 0
    }
  },
  "boot": {
    "firmware": "uefi",
    "secure_boot": "none",
    "kernel": "",
    "cmdline": "",
    "uki_sha256": ""
  },
  "build": {
    "slipway": "0.1.0",
    "source_date_epoch": 315532800
  }
}
"#;

    #[test]
    fn manifests_written_before_tools_were_recorded_still_read() {
        let manifest = Manifest::from_bytes(BEFORE_TOOLS.as_bytes()).unwrap();
        assert!(manifest.build.tools.is_empty());
        // And are written back as they were.
        assert_eq!(manifest.to_json(), BEFORE_TOOLS);
    }

    #[test]
    fn tool_versions_are_written_and_read_back() {
        let mut manifest = Manifest::from_bytes(BEFORE_TOOLS.as_bytes()).unwrap();
        manifest
            .build
            .tools
            .insert("erofs-utils".to_owned(), "1.5-1".to_owned());
        let text = manifest.to_json();
        assert!(
            text.contains("\"tools\": {\n      \"erofs-utils\": \"1.5-1\""),
            "{text}"
        );
        assert_eq!(Manifest::from_bytes(text.as_bytes()).unwrap(), manifest);
    }

    #[test]
    fn windows_manifests_are_v2_with_windows_facts_only() {
        let mut manifest = Manifest::from_bytes(BEFORE_TOOLS.as_bytes()).unwrap();
        assert_eq!(manifest.root_hash(), "");
        manifest.schema = SCHEMA.to_owned();
        manifest.os = Os::Windows;
        manifest.disk.verity = None;
        manifest.boot.kernel = None;
        manifest.boot.cmdline = None;
        manifest.boot.uki_sha256 = None;
        manifest.windows = Some(WindowsFacts {
            edition: "Windows Server 2022 SERVERDATACENTERCORE".into(),
            index: 1,
            registry: BTreeMap::new(),
            services: BTreeMap::new(),
            loader: "00000000-0000-0000-0000-000000000001".into(),
            bcd_sha256: "00".into(),
        });
        let text = manifest.to_json();
        assert!(
            !text.contains("verity") && !text.contains("uki_sha256"),
            "{text}"
        );
        assert_eq!(Manifest::from_bytes(text.as_bytes()).unwrap(), manifest);
        // Linux facts on a Windows image, a Windows image in v1, Windows facts on Linux: refused.
        let mut mixed = manifest.clone();
        mixed.boot.kernel = Some("6.1".into());
        assert!(Manifest::from_bytes(mixed.to_json().as_bytes()).is_err());
        let mut old = manifest.clone();
        old.schema = SCHEMA_V1.to_owned();
        assert!(Manifest::from_bytes(old.to_json().as_bytes()).is_err());
        let mut linux = Manifest::from_bytes(BEFORE_TOOLS.as_bytes()).unwrap();
        linux.windows = manifest.windows.clone();
        assert!(Manifest::from_bytes(linux.to_json().as_bytes()).is_err());
        let unknown = text.replace("\"windows\",\n  \"arch\"", "\"plan9\",\n  \"arch\"");
        assert_ne!(unknown, text);
        assert!(Manifest::from_bytes(unknown.as_bytes()).is_err());
    }
}
