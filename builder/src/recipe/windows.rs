//! The `[windows]` section of a recipe (`os = "windows"`): the base image, files placed at
//! Windows paths, typed registry edits, services, the unattend.xml template and the first-boot
//! script. Everything is validated here: a Windows path cannot leave the system volume or name
//! a device, a registry edit names a hive the build knows, a service's command line is built
//! from parts that cannot break its quoting.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// Where the first-boot script is placed.
pub const FIRSTBOOT_PATH: &str = r"C:\ProgramData\Slipway\firstboot.ps1";
/// Where the rendered unattend.xml is placed (Windows reads it when it specialises).
pub const UNATTEND_PATH: &str = r"C:\Windows\Panther\Unattend.xml";
/// Where the image's identity is placed for the first-boot script.
pub const IMAGE_JSON_PATH: &str = r"C:\ProgramData\Slipway\image.json";

/// The Windows part of a recipe.
#[derive(Debug, Clone)]
pub struct Windows {
    /// The image the node starts from.
    pub base: Base,
    /// Archives (or directories) unpacked onto the Windows volume, in order, before the files.
    pub layers: Vec<WinLayer>,
    /// Files and directories placed on the Windows volume.
    pub files: Vec<WinFile>,
    /// Registry values set offline.
    pub registry: Vec<RegEntry>,
    /// Services registered offline.
    pub services: Vec<Service>,
    /// Source holding the unattend.xml template, placed at [`UNATTEND_PATH`].
    pub unattend: Option<Spanned<String>>,
    /// Source holding the first-boot script, placed at [`FIRSTBOOT_PATH`].
    pub firstboot: Spanned<String>,
}

/// The base image.
#[derive(Debug, Clone)]
pub struct Base {
    /// The source holding the install.wim, or the sysprepped VHDX (pinned by sha256).
    pub source: Spanned<String>,
    /// Which image of the WIM.
    pub select: Select,
}

/// An image of a WIM, by number or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// 1-based index.
    Index(u32),
    /// The image's name (`Windows Server 2022 SERVERDATACENTERCORE`).
    Edition(String),
    /// The base is a sysprepped Windows VHDX: its Windows partition is the image.
    Vhdx,
}

impl fmt::Display for Select {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Select::Index(i) => write!(f, "{i}"),
            Select::Edition(name) => f.write_str(name),
            Select::Vhdx => f.write_str("the Windows partition of a VHDX"),
        }
    }
}

/// A path on the Windows volume, `C:\Dir\File`: components checked against Windows' rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WinPath {
    components: Vec<String>,
}

impl WinPath {
    /// Validates `text`; the error says why it was refused.
    pub fn new(text: &str) -> Result<WinPath, String> {
        let Some(rest) = text
            .strip_prefix("C:\\")
            .or_else(|| text.strip_prefix("c:\\"))
        else {
            return Err(format!(
                "Windows path {text:?} must start with C:\\ (the Windows volume)"
            ));
        };
        let mut components = Vec::new();
        for part in rest.split('\\') {
            check_component(part).map_err(|why| format!("Windows path {text:?}: {why}"))?;
            components.push(part.to_owned());
        }
        Ok(WinPath { components })
    }

    /// The path as wimlib and the ntfs-3g tools name it: `/Dir/File`.
    pub fn slash(&self) -> String {
        self.components.iter().map(|c| format!("/{c}")).collect()
    }

    /// The path upper-cased, as NTFS compares names.
    pub fn folded(&self) -> String {
        self.slash().to_uppercase()
    }
}

impl fmt::Display for WinPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "C:\\{}", self.components.join("\\"))
    }
}

/// Windows' rules for one name: not empty, no reserved characters, no trailing dot or space,
/// no device name, not `.` or `..`.
pub(crate) fn check_component(part: &str) -> Result<(), String> {
    const RESERVED: &[&str] = &[
        "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
        "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
    ];
    if part.is_empty() {
        return Err("empty component (doubled or trailing backslash)".to_owned());
    }
    if part == "." || part == ".." {
        return Err(format!("component {part:?} is not allowed"));
    }
    if let Some(c) = part
        .chars()
        .find(|c| matches!(c, '<' | '>' | ':' | '"' | '/' | '|' | '?' | '*') || c.is_control())
    {
        return Err(format!(
            "{part:?} holds {c:?}, which Windows does not allow in names (':' would name a stream)"
        ));
    }
    if part.ends_with(['.', ' ']) {
        return Err(format!("{part:?} ends with a dot or a space"));
    }
    let stem = part.split('.').next().unwrap_or(part).to_ascii_uppercase();
    if RESERVED.contains(&stem.trim_end()) {
        return Err(format!("{part:?} is a device name"));
    }
    if part.chars().count() > 255 {
        return Err(format!("{part:?} is longer than 255 characters"));
    }
    Ok(())
}

/// A source unpacked onto the Windows volume.
#[derive(Debug, Clone)]
pub struct WinLayer {
    /// The source (a tar archive, optionally gzip-compressed, or a directory).
    pub source: Spanned<String>,
    /// Where its content goes.
    pub into: WinPath,
    /// Keep it from Users (SYSTEM and Administrators only).
    pub private: bool,
}

/// One entry placed on the Windows volume.
#[derive(Debug, Clone)]
pub struct WinFile {
    /// Where it is declared.
    pub span: Range<usize>,
    /// Destination.
    pub path: WinPath,
    /// What to place.
    pub content: WinContent,
    /// Keep it (and, for a directory, what it will hold) from Users: SYSTEM and
    /// Administrators only. For what will hold credentials (the kubelet's, the join token).
    pub private: bool,
}

/// What a [`WinFile`] places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WinContent {
    /// The content of a `path` or `url` source (a file).
    Source(String),
    /// Inline text, written as it is (UTF-8).
    Text(String),
    /// An empty directory.
    Dir,
}

/// A registry hive the build edits, as found under `Windows\System32\config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Hive {
    /// `HKLM\SYSTEM` (services, control sets).
    System,
    /// `HKLM\SOFTWARE`.
    Software,
    /// LocalSystem's profile (`HKU\.DEFAULT`; new users' profiles come from
    /// `C:\Users\Default\NTUSER.DAT`, not from this hive).
    Default,
}

impl Hive {
    /// The hive file's name under `Windows\System32\config`.
    pub fn file(self) -> &'static str {
        match self {
            Hive::System => "SYSTEM",
            Hive::Software => "SOFTWARE",
            Hive::Default => "DEFAULT",
        }
    }

    /// The hive file's path on the volume.
    pub fn path(self) -> String {
        format!("/Windows/System32/config/{}", self.file())
    }
}

/// One registry value set by the recipe.
#[derive(Debug, Clone)]
pub struct RegEntry {
    /// Where it is declared.
    pub span: Range<usize>,
    /// The hive.
    pub hive: Hive,
    /// The key's path from the hive's root (in SYSTEM, `CurrentControlSet` is resolved to the
    /// hive's current control set).
    pub key: Vec<String>,
    /// Value name; empty for the key's default value.
    pub name: String,
    /// The value.
    pub data: RegData,
}

impl RegEntry {
    /// `HIVE\Key\Path` for messages and manifests.
    pub fn key_text(&self) -> String {
        format!("{}\\{}", self.hive.file(), self.key.join("\\"))
    }
}

/// A typed registry value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegData {
    /// `REG_SZ`.
    Sz(String),
    /// `REG_EXPAND_SZ`.
    ExpandSz(String),
    /// `REG_DWORD`.
    Dword(u32),
    /// `REG_QWORD`.
    Qword(u64),
    /// `REG_MULTI_SZ`.
    MultiSz(Vec<String>),
    /// `REG_BINARY`.
    Binary(Vec<u8>),
}

impl RegData {
    /// The registry type number and the bytes as the registry stores them.
    pub fn encode(&self) -> (u32, Vec<u8>) {
        use images::regf::{kind, utf16z};
        match self {
            RegData::Sz(text) => (kind::SZ, utf16z(text)),
            RegData::ExpandSz(text) => (kind::EXPAND_SZ, utf16z(text)),
            RegData::Dword(n) => (kind::DWORD, n.to_le_bytes().to_vec()),
            RegData::Qword(n) => (kind::QWORD, n.to_le_bytes().to_vec()),
            RegData::MultiSz(items) => {
                let mut bytes: Vec<u8> = items.iter().flat_map(|s| utf16z(s)).collect();
                bytes.extend_from_slice(&[0, 0]);
                (kind::MULTI_SZ, bytes)
            }
            RegData::Binary(bytes) => (kind::BINARY, bytes.clone()),
        }
    }
}

/// How a service starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// At boot (`Start` = 2).
    Auto,
    /// At boot, after the automatic ones (`Start` = 2, `DelayedAutostart` = 1).
    DelayedAuto,
    /// When asked (`Start` = 3): the first-boot script starts it.
    Demand,
    /// Never (`Start` = 4).
    Disabled,
}

/// A service registered offline in the SYSTEM hive.
#[derive(Debug, Clone)]
pub struct Service {
    /// Where it is declared.
    pub span: Range<usize>,
    /// The service's key name.
    pub name: String,
    /// The program.
    pub program: WinPath,
    /// Its arguments.
    pub args: Vec<String>,
    /// How it starts.
    pub start: Start,
    /// Shown name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// Services it needs running first.
    pub depends_on: Vec<String>,
}

impl Service {
    /// The command line Windows runs, quoted as `CommandLineToArgvW` reads it back: the
    /// program always quoted; an argument quoted when it holds a space or a tab, its trailing
    /// backslashes doubled so the closing quote stays a quote (validation refused quotes and
    /// line breaks inside arguments). `%NAME%` in an argument is expanded by Windows: the
    /// value is a `REG_EXPAND_SZ`.
    pub fn image_path(&self) -> String {
        let mut line = format!("\"{}\"", self.program);
        for arg in &self.args {
            line.push(' ');
            if arg.contains([' ', '\t']) {
                let trailing = arg.len() - arg.trim_end_matches('\\').len();
                line.push('"');
                line.push_str(arg);
                line.push_str(&"\\".repeat(trailing));
                line.push('"');
            } else {
                line.push_str(arg);
            }
        }
        line
    }
}

/// The shapes serde reads.
pub(crate) mod raw {
    use serde::Deserialize;
    use toml::Spanned;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Windows {
        pub base: Spanned<Base>,
        #[serde(default)]
        pub layers: Vec<Spanned<Layer>>,
        #[serde(default)]
        pub files: Vec<Spanned<File>>,
        #[serde(default)]
        pub registry: Vec<Spanned<Reg>>,
        #[serde(default)]
        pub services: Vec<Spanned<Service>>,
        pub unattend: Option<Spanned<String>>,
        pub firstboot: Spanned<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Base {
        pub source: Spanned<String>,
        pub index: Option<u32>,
        pub edition: Option<String>,
        #[serde(default)]
        pub vhdx: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Layer {
        pub source: Spanned<String>,
        pub into: Spanned<String>,
        #[serde(default)]
        pub private: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub path: Spanned<String>,
        pub source: Option<Spanned<String>>,
        pub text: Option<String>,
        pub dir: Option<bool>,
        #[serde(default)]
        pub private: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Reg {
        pub hive: super::Hive,
        pub key: Spanned<String>,
        #[serde(default)]
        pub name: String,
        #[serde(rename = "type")]
        pub kind: Spanned<String>,
        pub value: Spanned<toml::Value>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Service {
        pub name: Spanned<String>,
        pub path: Spanned<String>,
        #[serde(default)]
        pub args: Vec<String>,
        pub start: super::Start,
        pub display_name: Option<String>,
        #[serde(default)]
        pub description: String,
        #[serde(default)]
        pub depends_on: Vec<String>,
    }
}

/// Checks a registry key path's components: printable ASCII, no backslash inside a component.
pub(crate) fn registry_key(text: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = text.split('\\').map(str::to_owned).collect();
    for part in &parts {
        registry_name(part).map_err(|why| format!("registry key {text:?}: {why}"))?;
    }
    Ok(parts)
}

/// Registry names the build writes: 1 to 255 printable ASCII characters, no backslash.
pub(crate) fn registry_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .bytes()
            .all(|b| (0x20..0x7F).contains(&b) && b != b'\\')
    {
        return Err(format!(
            "{name:?} is not a registry name: 1 to 255 printable ASCII characters without '\\'"
        ));
    }
    Ok(())
}

/// Reads a typed value from TOML.
pub(crate) fn reg_data(kind: &str, value: &toml::Value) -> Result<RegData, String> {
    let text = |v: &toml::Value| v.as_str().map(str::to_owned);
    let number = |v: &toml::Value| v.as_integer().and_then(|n| u64::try_from(n).ok());
    let data = match kind {
        "sz" => text(value).map(RegData::Sz),
        "expand-sz" => text(value).map(RegData::ExpandSz),
        "dword" => number(value)
            .and_then(|n| u32::try_from(n).ok())
            .map(RegData::Dword),
        "qword" => number(value).map(RegData::Qword),
        "multi-sz" => value
            .as_array()
            .and_then(|items| items.iter().map(text).collect::<Option<Vec<_>>>())
            .map(RegData::MultiSz),
        "binary" => value.as_str().and_then(hex_bytes).map(RegData::Binary),
        _ => {
            return Err(format!(
                "registry type {kind:?} is not one of sz, expand-sz, dword, qword, multi-sz, binary"
            ));
        }
    };
    let data = data.ok_or_else(|| {
        format!(
            "a {kind} value must be {}",
            match kind {
                "sz" | "expand-sz" => "a string",
                "dword" => "an integer from 0 to 4294967295",
                "qword" => "a non-negative integer",
                "multi-sz" => "an array of strings",
                _ => "a string of hex digit pairs (\"0a1b\")",
            }
        )
    })?;
    if let RegData::Sz(s) | RegData::ExpandSz(s) = &data
        && s.contains('\0')
    {
        return Err("a string value cannot hold NUL".to_owned());
    }
    if let RegData::MultiSz(items) = &data
        && items.iter().any(|s| s.is_empty() || s.contains('\0'))
    {
        return Err("multi-sz strings must be non-empty and hold no NUL".to_owned());
    }
    Ok(data)
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Two entries naming the same path (NTFS compares names ignoring case).
pub(crate) fn duplicate_path(files: &[WinFile]) -> Option<&WinFile> {
    let mut seen = BTreeSet::new();
    files.iter().find(|f| !seen.insert(f.path.folded()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths_stay_on_the_volume_and_follow_windows_rules() {
        let ok = WinPath::new(r"C:\Program Files\containerd\containerd.exe").unwrap();
        assert_eq!(ok.slash(), "/Program Files/containerd/containerd.exe");
        assert_eq!(
            ok.to_string(),
            r"C:\Program Files\containerd\containerd.exe"
        );
        for bad in [
            r"D:\x",
            r"\x",
            r"C:\..\x",
            r"C:\a\.\b",
            r"C:\a\\b",
            r"C:\a\",
            r"C:\a:stream",
            r"C:\a/b",
            r"C:\NUL.txt",
            r"C:\com1",
            r"C:\a.",
            r"C:\a ",
        ] {
            assert!(WinPath::new(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn registry_values_are_typed() {
        assert_eq!(
            reg_data("dword", &toml::Value::Integer(7))
                .unwrap()
                .encode(),
            (4, vec![7, 0, 0, 0])
        );
        assert!(reg_data("dword", &toml::Value::Integer(1 << 33)).is_err());
        assert!(reg_data("dword", &toml::Value::Integer(-1)).is_err());
        assert!(reg_data("sz", &toml::Value::Integer(1)).is_err());
        assert!(reg_data("reg_sz", &toml::Value::String("x".into())).is_err());
        let multi = toml::Value::Array(vec!["a".into(), "b".into()]);
        assert_eq!(
            reg_data("multi-sz", &multi).unwrap().encode().1,
            vec![b'a', 0, 0, 0, b'b', 0, 0, 0, 0, 0]
        );
        assert_eq!(
            reg_data("binary", &toml::Value::String("0aff".into())).unwrap(),
            RegData::Binary(vec![10, 255])
        );
        assert!(reg_data("binary", &toml::Value::String("0g".into())).is_err());
        assert!(registry_key(r"Microsoft\Windows NT\CurrentVersion").is_ok());
        assert!(registry_key(r"a\\b").is_err());
    }

    #[test]
    fn service_command_lines_quote_the_program_and_spaced_arguments() {
        let service = Service {
            span: 0..0,
            name: "kubelet".into(),
            program: WinPath::new(r"C:\k\kubelet.exe").unwrap(),
            args: vec!["--windows-service".into(), "--config=C:\\a b\\c".into()],
            start: Start::Auto,
            display_name: "kubelet".into(),
            description: String::new(),
            depends_on: vec![],
        };
        assert_eq!(
            service.image_path(),
            r#""C:\k\kubelet.exe" --windows-service "--config=C:\a b\c""#
        );
        // A trailing backslash inside quotes is doubled: `\"` would be a literal quote.
        let service = Service {
            args: vec!["--root=C:\\a b\\".into(), "x\ty".into()],
            ..service
        };
        assert_eq!(
            service.image_path(),
            "\"C:\\k\\kubelet.exe\" \"--root=C:\\a b\\\\\" \"x\ty\""
        );
    }
}
