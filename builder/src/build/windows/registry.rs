//! Registry edits, offline: the recipe's values and services become a `.reg` file that
//! `hivexregedit --merge` applies to a hive copied out of the volume. Every value is written as
//! `hex(TYPE):` bytes, so no text encoding stands between the recipe and the hive.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use super::{Error, pinned_time};
use crate::build::fs;
use crate::recipe::windows::{Hive, RegData, RegEntry, Service, Start};

/// One value to set: key path from the hive's root, value name (empty: the default value),
/// registry type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Key path components.
    pub key: Vec<String>,
    /// Value name.
    pub name: String,
    /// Registry type.
    pub kind: u32,
    /// Data.
    pub data: Vec<u8>,
}

/// The `.reg` text that creates every key on the way and sets every value.
pub fn reg_file(edits: &[Edit]) -> String {
    let mut keys: BTreeMap<Vec<String>, Vec<&Edit>> = BTreeMap::new();
    for edit in edits {
        // Parents first: hivexregedit creates a key only under an existing one.
        for depth in 1..edit.key.len() {
            keys.entry(edit.key[..depth].to_vec()).or_default();
        }
        keys.entry(edit.key.clone()).or_default().push(edit);
    }
    let mut text = String::from("Windows Registry Editor Version 5.00\n\n");
    for (key, values) in &keys {
        let _ = writeln!(text, "[\\{}]", key.join("\\"));
        for value in values {
            let name = if value.name.is_empty() {
                "@".to_owned()
            } else {
                format!(
                    "\"{}\"",
                    value.name.replace('\\', "\\\\").replace('"', "\\\"")
                )
            };
            let bytes: Vec<String> = value.data.iter().map(|b| format!("{b:02x}")).collect();
            let _ = writeln!(text, "{name}=hex({:x}):{}", value.kind, bytes.join(","));
        }
        text.push('\n');
    }
    text
}

/// Applies `edits` to the hive file `hive` (under the build's pinned clock).
pub fn merge(hive: &Path, edits: &[Edit], epoch: u64) -> Result<(), Error> {
    let reg = hive.with_extension("reg");
    std::fs::write(&reg, reg_file(edits)).map_err(super::io_err("write", &reg))?;
    pinned_time(
        "hivexregedit",
        ["--merge".as_ref(), hive.as_os_str(), reg.as_os_str()],
        epoch,
    )
}

/// The control set `Select\Current` names in a SYSTEM hive (`ControlSet001`).
pub fn current_control_set(system: &Path) -> Result<String, Error> {
    let text = fs::run(
        "hivexget",
        [system.as_os_str(), "\\Select".as_ref(), "Current".as_ref()],
        &[],
    )
    .map_err(|e| Error::ReadControlSet { why: e.to_string() })?;
    let current: u32 = text.trim().parse().map_err(|_| Error::ReadControlSet {
        why: format!("hivexget printed {:?}", text.trim()),
    })?;
    if !(1..=999).contains(&current) {
        return Err(Error::ReadControlSet {
            why: format!("it is {current}"),
        });
    }
    Ok(format!("ControlSet{current:03}"))
}

/// Refuses a hive whose base block's two sequence numbers differ (a dirty hive: Windows would
/// replay its `.LOG1`/`.LOG2` files over what the build wrote).
pub fn check_clean(hive: &Path, name: &str) -> Result<(), Error> {
    let bytes = std::fs::read(hive).map_err(super::io_err("read", hive))?;
    let word = |at: usize| bytes.get(at..at + 4).map(|b| [b[0], b[1], b[2], b[3]]);
    match (bytes.get(..4), word(4), word(8)) {
        (Some(b"regf"), Some(primary), Some(secondary)) if primary == secondary => Ok(()),
        _ => Err(Error::CheckHive {
            hive: name.to_owned(),
        }),
    }
}

/// The recipe's registry entries for `hive`, `CurrentControlSet` resolved to `control_set`.
pub fn entries(entries: &[RegEntry], hive: Hive, control_set: &str) -> Vec<Edit> {
    entries
        .iter()
        .filter(|e| e.hive == hive)
        .map(|e| {
            let (kind, data) = e.data.encode();
            let mut key = e.key.clone();
            if hive == Hive::System
                && let Some(first) = key.first_mut()
                && first.eq_ignore_ascii_case("CurrentControlSet")
            {
                control_set.clone_into(first);
            }
            Edit {
                key,
                name: e.name.clone(),
                kind,
                data,
            }
        })
        .collect()
}

/// The SYSTEM hive values that register `service` (what `sc create` writes).
pub fn service(service: &Service, control_set: &str) -> Vec<Edit> {
    /// SERVICE_WIN32_OWN_PROCESS.
    const OWN_PROCESS: u32 = 0x10;
    /// SERVICE_ERROR_NORMAL.
    const ERROR_NORMAL: u32 = 1;
    let key = vec![
        control_set.to_owned(),
        "Services".to_owned(),
        service.name.clone(),
    ];
    let start = match service.start {
        Start::Auto | Start::DelayedAuto => 2,
        Start::Demand => 3,
        Start::Disabled => 4,
    };
    let mut values = vec![
        ("Type", RegData::Dword(OWN_PROCESS)),
        ("Start", RegData::Dword(start)),
        ("ErrorControl", RegData::Dword(ERROR_NORMAL)),
        ("ImagePath", RegData::ExpandSz(service.image_path())),
        ("DisplayName", RegData::Sz(service.display_name.clone())),
        ("ObjectName", RegData::Sz("LocalSystem".to_owned())),
    ];
    if !service.description.is_empty() {
        values.push(("Description", RegData::Sz(service.description.clone())));
    }
    if !service.depends_on.is_empty() {
        values.push((
            "DependOnService",
            RegData::MultiSz(service.depends_on.clone()),
        ));
    }
    if service.start == Start::DelayedAuto {
        values.push(("DelayedAutostart", RegData::Dword(1)));
    }
    values
        .into_iter()
        .map(|(name, data)| {
            let (kind, data) = data.encode();
            Edit {
                key: key.clone(),
                name: name.to_owned(),
                kind,
                data,
            }
        })
        .collect()
}

/// The hives the recipe edits.
pub fn hives(entries: &[RegEntry], services: &[Service]) -> BTreeSet<Hive> {
    let mut hives: BTreeSet<Hive> = entries.iter().map(|e| e.hive).collect();
    if !services.is_empty() {
        hives.insert(Hive::System);
    }
    hives
}

/// A value as the manifest records it: `type:text`.
pub fn describe(data: &RegData) -> String {
    match data {
        RegData::Sz(s) => format!("sz:{s}"),
        RegData::ExpandSz(s) => format!("expand-sz:{s}"),
        RegData::Dword(n) => format!("dword:{n}"),
        RegData::Qword(n) => format!("qword:{n}"),
        RegData::MultiSz(items) => format!("multi-sz:{}", items.join("|")),
        RegData::Binary(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("binary:{hex}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reg_files_create_parents_first_and_escape_names() {
        let text = reg_file(&[Edit {
            key: vec!["A".into(), "B C".into()],
            name: "q\"\\".into(),
            kind: 4,
            data: vec![1, 0, 0, 0],
        }]);
        assert_eq!(
            text,
            "Windows Registry Editor Version 5.00\n\n[\\A]\n\n[\\A\\B C]\n\"q\\\"\\\\\"=hex(4):01,00,00,00\n\n"
        );
    }
}
