//! `slipway inspect IMAGE.vhdx`: what is inside a built image, read back from the VHDX itself
//! (not from its manifest): the partitions; for a Windows image the BCD store's boot entries
//! (their devices decoded), the services registered in the SYSTEM hive, and the registry values
//! the manifest says the recipe set, each read from its hive and compared.
//!
//! The partitions are copied out of the VHDX into sparse temporary files (blocks that hold no
//! data are skipped) and read with mtools, ntfs-3g's `ntfscat` and hivex's `hivexregedit`, so
//! nothing is mounted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::Args;
use images::bcd::{self, HiveValue, RegValue};
use images::disk::{self, Placed, types};
use images::manifest::Manifest;
use images::vhdx::Vhdx;

/// Arguments of `slipway inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image's VHDX (its manifest, NAME-VERSION.manifest.json beside it, names the
    /// registry values to read back).
    image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// What `inspect` found.
#[derive(Debug, Default, serde::Serialize)]
struct Report {
    partitions: Vec<PartitionRow>,
    boot_entries: Vec<BootRow>,
    services: Vec<ServiceRow>,
    registry: Vec<RegistryRow>,
}

#[derive(Debug, serde::Serialize)]
struct PartitionRow {
    number: usize,
    name: String,
    kind: String,
    guid: String,
    offset: u64,
    size: u64,
}

#[derive(Debug, serde::Serialize)]
struct BootRow {
    object: String,
    default: bool,
    description: String,
    device: String,
    os_device: String,
    path: String,
}

#[derive(Debug, serde::Serialize)]
struct ServiceRow {
    name: String,
    start: String,
    image_path: String,
}

#[derive(Debug, serde::Serialize)]
struct RegistryRow {
    value: String,
    recorded: String,
    found: String,
}

/// Runs `slipway inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let vhdx =
        Vhdx::open(&args.image).with_context(|| format!("cannot open {}", args.image.display()))?;
    let read =
        |offset: u64, buf: &mut [u8]| vhdx.read_at(buf, offset).map_err(std::io::Error::other);
    let partitions = disk::read_partitions(read).with_context(|| {
        format!(
            "{} holds no GPT disk Slipway can read",
            args.image.display()
        )
    })?;
    let mut report = Report::default();
    for p in &partitions {
        report.partitions.push(PartitionRow {
            number: p.number,
            name: p.name.clone(),
            kind: kind_name(p.type_guid).to_owned(),
            guid: p.unique_guid.to_string(),
            offset: p.offset,
            size: p.size,
        });
    }
    let work = tempfile::tempdir().context("cannot make a temporary directory")?;
    let find = |t| partitions.iter().find(|p| p.type_guid == t);
    if let (Some(esp), Some(_)) = (find(types::ESP), find(types::BASIC_DATA)) {
        let esp_file = copy_out(&vhdx, esp, &work.path().join("esp.img"))?;
        let bcd = work.path().join("BCD");
        tool(
            "mcopy",
            [
                "-n".as_ref(),
                "-i".as_ref(),
                esp_file.as_os_str(),
                "::/EFI/Microsoft/Boot/BCD".as_ref(),
                bcd.as_os_str(),
            ],
        )
        .context("the ESP holds no \\EFI\\Microsoft\\Boot\\BCD")?;
        report.boot_entries = boot_entries(&bcd)?;
    }
    if let Some(windows) = find(types::BASIC_DATA) {
        let volume = copy_out(&vhdx, windows, &work.path().join("windows.img"))?;
        let system = work.path().join("SYSTEM");
        ntfscat(&volume, "/Windows/System32/config/SYSTEM", &system)?;
        let control_set = current_control_set(&system)?;
        report.services = services(&system, &control_set)?;
        if let Some(manifest) = manifest_beside(&args.image)?
            && let Some(facts) = &manifest.windows
        {
            report.registry = registry(&volume, work.path(), &facts.registry)?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn kind_name(guid: images::guid::Guid) -> &'static str {
    match guid {
        g if g == types::ESP => "EFI system",
        g if g == types::MSR => "Microsoft reserved",
        g if g == types::BASIC_DATA => "Microsoft basic data",
        g if g == types::ROOT_X86_64 => "Linux root (x86-64)",
        g if g == types::ROOT_X86_64_VERITY => "Linux root verity (x86-64)",
        _ => "other",
    }
}

/// Copies partition `p` out of the VHDX into a sparse file, skipping blocks with no data.
fn copy_out(vhdx: &Vhdx, p: &Placed, to: &Path) -> anyhow::Result<PathBuf> {
    crate::build::windows::copy_partition(vhdx, p, to)
        .with_context(|| format!("cannot copy partition {} to {}", p.number, to.display()))?;
    Ok(to.to_owned())
}

fn tool<I, S>(program: &str, args: I) -> anyhow::Result<Vec<u8>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (./scripts/setup installs it)"))?;
    if !out.status.success() {
        bail!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn ntfscat(volume: &Path, path: &str, to: &Path) -> anyhow::Result<()> {
    let bytes = tool("ntfscat", [volume.as_os_str(), path.as_ref()])
        .with_context(|| format!("cannot read {path} from the Windows volume"))?;
    std::fs::write(to, bytes)?;
    Ok(())
}

/// Every value of the subtree `key` of `hive`, through `hivexregedit --export`.
fn export(hive: &Path, key: &str) -> anyhow::Result<Vec<HiveValue>> {
    let text = tool(
        "hivexregedit",
        ["--export".as_ref(), hive.as_os_str(), key.as_ref()],
    )?;
    parse_reg(&String::from_utf8_lossy(&text))
}

/// Parses `.reg` text as hivexregedit writes it: `[\key]`, then `"name"=hex(T):..`,
/// `"name"=dword:..`, `"name"=hex:..` or `"name"="text"` (and `@=` for the default value).
pub(crate) fn parse_reg(text: &str) -> anyhow::Result<Vec<HiveValue>> {
    let mut out = Vec::new();
    let mut key: Vec<String> = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        // A value may continue on the next line after a trailing backslash.
        if let Some(head) = line.strip_suffix('\\') {
            logical.push_str(head);
            continue;
        }
        logical.push_str(line.trim_start());
        let line = std::mem::take(&mut logical);
        if let Some(path) = line.strip_prefix("[\\").and_then(|l| l.strip_suffix(']')) {
            key = path.split('\\').map(str::to_owned).collect();
            continue;
        }
        let (name, value) = if let Some(rest) = line.strip_prefix("@=") {
            (String::new(), rest)
        } else if let Some(rest) = line.strip_prefix('"') {
            let (name, rest) = quoted(rest).with_context(|| format!("bad value line {line:?}"))?;
            let rest = rest
                .strip_prefix('=')
                .with_context(|| format!("bad value line {line:?}"))?;
            (name, rest)
        } else {
            continue;
        };
        let value = if let Some(hex) = value.strip_prefix("dword:") {
            RegValue {
                kind: 4,
                data: u32::from_str_radix(hex, 16)?.to_le_bytes().to_vec(),
            }
        } else if let Some(rest) = value.strip_prefix("hex(") {
            let (kind, bytes) = rest
                .split_once("):")
                .with_context(|| format!("bad value {value:?}"))?;
            RegValue {
                kind: u32::from_str_radix(kind, 16)?,
                data: hex_list(bytes)?,
            }
        } else if let Some(bytes) = value.strip_prefix("hex:") {
            RegValue {
                kind: 3,
                data: hex_list(bytes)?,
            }
        } else if let Some(rest) = value.strip_prefix('"') {
            let (text, _) = quoted(rest).with_context(|| format!("bad string {value:?}"))?;
            RegValue {
                kind: 1,
                data: images::regf::utf16z(&text),
            }
        } else {
            bail!("value type not understood: {value:?}");
        };
        out.push(HiveValue {
            key: key.clone(),
            name,
            value,
        });
    }
    Ok(out)
}

/// A `.reg` quoted string's text (after its opening quote) and what follows its closing one.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &text[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

fn hex_list(text: &str) -> anyhow::Result<Vec<u8>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|b| u8::from_str_radix(b.trim(), 16).with_context(|| format!("bad byte {b:?}")))
        .collect()
}

fn boot_entries(bcd_hive: &Path) -> anyhow::Result<Vec<BootRow>> {
    let values = export(bcd_hive, "\\Objects")?;
    // Keys as the store's reader expects them: from the hive's root.
    let store = bcd::read_store(&values).context("cannot read the BCD store")?;
    let entries = store
        .entries()
        .context("cannot list the BCD store's boot entries")?;
    Ok(entries
        .into_iter()
        .map(|e| BootRow {
            object: e.object.to_string(),
            default: e.is_default,
            description: e.description.unwrap_or_default(),
            device: e.device.map(|d| d.to_string()).unwrap_or_default(),
            os_device: e.os_device.map(|d| d.to_string()).unwrap_or_default(),
            path: e.path.unwrap_or_default(),
        })
        .collect())
}

fn current_control_set(system: &Path) -> anyhow::Result<String> {
    let text = tool(
        "hivexget",
        [system.as_os_str(), "\\Select".as_ref(), "Current".as_ref()],
    )
    .context("the SYSTEM hive has no Select\\Current")?;
    let n: u32 = String::from_utf8_lossy(&text).trim().parse()?;
    Ok(format!("ControlSet{n:03}"))
}

fn services(system: &Path, control_set: &str) -> anyhow::Result<Vec<ServiceRow>> {
    let values = export(system, &format!("\\{control_set}\\Services"))?;
    let mut rows: BTreeMap<String, ServiceRow> = BTreeMap::new();
    for v in values {
        // Only the service keys' own values: key = [ControlSetNNN, Services, NAME].
        let [_, _, name] = v.key.as_slice() else {
            continue;
        };
        let row = rows.entry(name.clone()).or_insert_with(|| ServiceRow {
            name: name.clone(),
            start: String::new(),
            image_path: String::new(),
        });
        match v.name.as_str() {
            "Start" => {
                row.start = match v.value.data.first() {
                    Some(0) => "boot",
                    Some(1) => "system",
                    Some(2) => "auto",
                    Some(3) => "demand",
                    Some(4) => "disabled",
                    _ => "?",
                }
                .to_owned();
            }
            "ImagePath" => row.image_path = utf16(&v.value.data),
            _ => {}
        }
    }
    Ok(rows.into_values().collect())
}

fn utf16(data: &[u8]) -> String {
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// The value as the manifest records it (`type:text`), from its registry type and bytes.
fn describe(kind: u32, data: &[u8]) -> String {
    let number = |n: usize| {
        let mut bytes = [0u8; 8];
        let len = data.len().min(n);
        bytes[..len].copy_from_slice(&data[..len]);
        u64::from_le_bytes(bytes)
    };
    match kind {
        1 => format!("sz:{}", utf16(data)),
        2 => format!("expand-sz:{}", utf16(data)),
        4 => format!("dword:{}", number(4)),
        11 => format!("qword:{}", number(8)),
        7 => {
            let items: Vec<String> = utf16_list(data);
            format!("multi-sz:{}", items.join("|"))
        }
        _ => format!(
            "binary:{}",
            data.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

fn utf16_list(data: &[u8]) -> Vec<String> {
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    units
        .split(|u| *u == 0)
        .filter(|s| !s.is_empty())
        .map(String::from_utf16_lossy)
        .collect()
}

fn registry(
    volume: &Path,
    work: &Path,
    recorded: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<RegistryRow>> {
    let mut hives: BTreeMap<String, Vec<HiveValue>> = BTreeMap::new();
    let mut rows = Vec::new();
    for (value, expected) in recorded {
        let mut parts: Vec<&str> = value.split('\\').collect();
        let (Some(hive), Some(name)) = (parts.first().copied(), parts.pop()) else {
            continue;
        };
        let key: Vec<String> = parts[1..].iter().map(|s| (*s).to_owned()).collect();
        if !hives.contains_key(hive) {
            let copy = work.join(format!("hive-{hive}"));
            ntfscat(volume, &format!("/Windows/System32/config/{hive}"), &copy)?;
            hives.insert(hive.to_owned(), export(&copy, "\\")?);
        }
        let name = if name == "@" { "" } else { name };
        let found = hives[hive]
            .iter()
            .find(|v| {
                v.name.eq_ignore_ascii_case(name)
                    && v.key.len() == key.len()
                    && v.key
                        .iter()
                        .zip(&key)
                        .all(|(a, b)| a.eq_ignore_ascii_case(b))
            })
            .map_or_else(
                || "(missing)".to_owned(),
                |v| describe(v.value.kind, &v.value.data),
            );
        rows.push(RegistryRow {
            value: value.clone(),
            recorded: expected.clone(),
            found,
        });
    }
    Ok(rows)
}

fn manifest_beside(image: &Path) -> anyhow::Result<Option<Manifest>> {
    let Some(stem) = image
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".vhdx"))
    else {
        return Ok(None);
    };
    let path = image.with_file_name(format!("{stem}.manifest.json"));
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(Manifest::read(&path)?))
}

fn render(report: &Report) -> String {
    let mut out = String::from("Partitions:\n");
    for p in &report.partitions {
        let _ = writeln!(
            out,
            "  {}  {:<28} {:<22} {}  offset {}  size {}",
            p.number,
            p.name,
            p.kind,
            p.guid,
            p.offset,
            crate::size::human(p.size)
        );
    }
    if !report.boot_entries.is_empty() {
        out.push_str("\nBoot entries (BCD):\n");
        for e in &report.boot_entries {
            let _ = writeln!(
                out,
                "  {}{} {:?}\n      path {}  device {}  osdevice {}",
                e.object,
                if e.default { " (default)" } else { "" },
                e.description,
                e.path,
                e.device,
                e.os_device
            );
        }
    }
    if !report.services.is_empty() {
        out.push_str("\nServices (SYSTEM):\n");
        for s in &report.services {
            let _ = writeln!(out, "  {:<24} {:<9} {}", s.name, s.start, s.image_path);
        }
    }
    if !report.registry.is_empty() {
        out.push_str("\nRegistry values the recipe set:\n");
        for r in &report.registry {
            let mark = if r.found == r.recorded {
                "ok"
            } else {
                "DIFFERS"
            };
            let _ = writeln!(out, "  {mark:<7} {} = {}", r.value, r.found);
            if r.found != r.recorded {
                let _ = writeln!(out, "          recorded {}", r.recorded);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reg_exports_are_read() {
        let text = "Windows Registry Editor Version 5.00\n\n[\\A\\B]\n@=hex(1):78,00,00,00\n\
                    \"N \\\"q\\\"\"=dword:0000002a\n\"Bin\"=hex:01,\\\n  02\n\"S\"=\"x\\\\y\"\n\
                    \"Q\"=hex(b):01,00,00,00,00,00,00,00\n";
        let values = parse_reg(text).unwrap();
        assert_eq!(values.len(), 5);
        assert_eq!(values[0].key, ["A", "B"]);
        assert_eq!(values[0].name, "");
        assert_eq!(values[1].name, "N \"q\"");
        assert_eq!(values[1].value.data, [42, 0, 0, 0]);
        assert_eq!(
            values[2].value,
            RegValue {
                kind: 3,
                data: vec![1, 2]
            }
        );
        assert_eq!(utf16(&values[3].value.data), "x\\y");
        assert_eq!(values[4].value.kind, 11);
        assert!(parse_reg("[\\A]\n\"x\"=weird:1\n").is_err());
    }

    #[test]
    fn values_are_described_as_the_manifest_records_them() {
        assert_eq!(describe(4, &[1, 0, 0, 0]), "dword:1");
        assert_eq!(
            describe(
                7,
                &images::regf::utf16z("a")
                    .into_iter()
                    .chain(images::regf::utf16z("b"))
                    .chain([0, 0])
                    .collect::<Vec<_>>()
            ),
            "multi-sz:a|b"
        );
        assert_eq!(describe(3, &[10, 255]), "binary:0aff");
    }
}
