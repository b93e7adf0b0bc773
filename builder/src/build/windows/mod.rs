//! `slipway build` for `os = "windows"`: install.wim → NTFS → bootable Generation 2 VHDX, on
//! Linux, offline, without mounting anything.
//!
//! Stages, each cached under the digest of its inputs like the Linux ones:
//! - `ntfs`: the chosen image of the base WIM is exported alone to a working WIM, the recipe's
//!   files (and the first-boot script, unattend.xml, image.json) are added to it with
//!   `wimlib-imagex update`, and it is applied by libntfs-3g straight into a volume file made by
//!   `mkntfs`. Then the registry: each hive the recipe edits is copied out with `ntfscat`,
//!   edited with `hivexregedit --merge` (values and services), and written back over itself
//!   with `ntfscp` (inode, attributes and security descriptor kept). What the build placed
//!   gets a security descriptor of its own (`ntfssecaudit -s`); otherwise libntfs-3g would
//!   give it one that lets everyone write.
//! - `win-esp`: the image's own boot files and a BCD store naming the disk's GUIDs ([`boot`]).
//! - `win-disk`: GPT (ESP, 16 MiB MSR, Windows) streamed into the VHDX writer, 32 MiB blocks.
//!
//! The disk's and partitions' GUIDs are derived from the `ntfs` stage's key (everything that
//! went into the volume), not from the partitions' bytes as for Linux: the ESP's BCD store
//! names them, so they must be known before the ESP exists.
//!
//! Deterministic: every tool that writes the volume, the WIM or a hive runs under
//! `faketime` frozen at the build's epoch (libntfs-3g stamps the MFT change time with the
//! clock, whatever the WIM says), mkntfs zeroes its own times, the volume serial is derived.

mod base;
pub(crate) use base::copy_partition;
mod boot;
mod layout;
mod ntfs;
mod registry;
mod volume;
mod wim;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use images::disk;
use images::guid::Guid;
use images::manifest::{self, Manifest};
use images::vhdx;
use serde::{Deserialize, Serialize};

use super::stage::{self, Key, Stages};
use super::{Built, STAGE_FORMAT, record};
use crate::events::Events;
use crate::recipe::Recipe;
use crate::recipe::windows::{Select, WinContent, Windows};
use crate::sources::{Artifact, Fetched};

/// Size of the Microsoft Reserved Partition Windows expects on a GPT disk.
const MSR_SIZE: u64 = 16 << 20;
/// Partition alignment (and room left for the backup GPT at the end).
const ALIGN: u64 = 1 << 20;
/// Room the volume needs beyond the image's file data: NTFS metadata, the MFT, slack.
const NTFS_OVERHEAD: u64 = 64 << 20;
/// Slipway's own directory on the volume (kept from everyone but SYSTEM and Administrators).
const SLIPWAY_DIR: &str = r"C:\ProgramData\Slipway";

/// Errors of a Windows build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool failed.
    #[error(transparent)]
    Tool(#[from] crate::build::fs::Error),
    /// Files of a stage.
    #[error("cannot {action} {path}")]
    StageFile {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The base WIM has no such image.
    #[error(
        "{wim} has no image {select} (it has: {available}); set [windows] base index or edition"
    )]
    SelectImage {
        /// The WIM.
        wim: PathBuf,
        /// What the recipe asked for.
        select: String,
        /// What the WIM holds.
        available: String,
    },
    /// A path of the base image could lead out of where it belongs.
    #[error("refusing the base image: {path}: {why}")]
    EscapePath {
        /// The path.
        path: String,
        /// Why.
        why: String,
    },
    /// Two spellings of one name (Windows compares names ignoring case).
    #[error(
        "{path} and {other} name the same file on Windows (names compare ignoring case): spell \
         it one way in the recipe and its layers, as the base image does"
    )]
    SpellName {
        /// One spelling.
        path: String,
        /// The other.
        other: String,
    },
    /// The base VHDX could not be read.
    #[error("cannot take the base VHDX's Windows partition: {why}")]
    ReadBaseVhdx {
        /// Why.
        why: String,
    },
    /// A layer could not be unpacked.
    #[error("cannot unpack layer {source_name}")]
    UnpackLayer {
        /// The source.
        source_name: String,
        /// The cause.
        #[source]
        source: crate::build::tree::Error,
    },
    /// A file could not be read out of the image.
    #[error("cannot read {path} from the base image: {stderr}")]
    ReadImageFile {
        /// The path in the image.
        path: String,
        /// What the tool said.
        stderr: String,
    },
    /// The base image lacks a boot file.
    #[error("the base image has no {what}: is it a Windows image for UEFI?")]
    FindBootFile {
        /// The missing file.
        what: String,
    },
    /// The BCD store's content.
    #[error("cannot write the BCD store")]
    Bcd(#[from] images::bcd::Error),
    /// The SYSTEM hive names no current control set.
    #[error("the SYSTEM hive has no usable Select\\Current value (1 to 999): {why}")]
    ReadControlSet {
        /// What hivexget said, or what it printed.
        why: String,
    },
    /// A hive of the base was not closed cleanly.
    #[error(
        "the base image's {hive} hive was not closed cleanly (its sequence numbers differ: its \
         transaction logs hold changes Windows would replay over the build's edits); make the \
         base from a cleanly shut down Windows"
    )]
    CheckHive {
        /// The hive.
        hive: String,
    },
    /// The disk layout does not put the partitions where the volumes were made for.
    #[error("internal error: the GPT layout put the partitions at {found:?}, not at {planned:?}")]
    MatchLayout {
        /// Offsets planned.
        planned: Vec<u64>,
        /// Offsets laid out.
        found: Vec<u64>,
    },
    /// The unattend template is not what the build can render.
    #[error("unattend template {source_name}: {why}")]
    RenderUnattend {
        /// The source.
        source_name: String,
        /// Why.
        why: String,
    },
    /// A recipe problem found while building (located).
    #[error(transparent)]
    Recipe(#[from] crate::recipe::Error),
    /// Laying out the disk.
    #[error("cannot lay out the disk")]
    Disk(#[from] disk::Error),
    /// Writing the VHDX.
    #[error("cannot write the VHDX")]
    Vhdx(#[from] vhdx::writer::Error),
}

pub(super) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::StageFile {
        action,
        path,
        source,
    }
}

/// Runs `program` and writes what it prints to `to`; a failure is [`Error::ReadImageFile`] for
/// `path` (the file of the image being read).
fn read_out<I, S>(program: &str, args: I, path: &str, to: &Path) -> Result<(), Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|source| crate::build::fs::Error::RunTool {
            tool: program.into(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::ReadImageFile {
            path: path.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    std::fs::write(to, &out.stdout).map_err(io_err("write", to))
}

/// Runs `tool` with the clock frozen at `epoch` (`faketime -f`), in UTC.
fn pinned_time<I, S>(tool: &str, args: I, epoch: u64) -> Result<(), Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let when = civil(epoch);
    let mut all: Vec<std::ffi::OsString> = vec!["-f".into(), when.into(), tool.into()];
    all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
    // Errors name the tool, not the clock that wrapped it.
    match crate::build::fs::run("faketime", all, &[("TZ", "UTC".to_owned())]) {
        Ok(_) => Ok(()),
        Err(crate::build::fs::Error::FailTool { stderr, .. }) => {
            Err(crate::build::fs::Error::FailTool {
                tool: tool.to_owned(),
                stderr,
            }
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for Unix seconds, as faketime reads it.
fn civil(epoch: u64) -> String {
    crate::sbom::rfc3339(epoch)
        .trim_end_matches('Z')
        .replacen('T', " ", 1)
}

/// The disk's identifiers, derived from the `ntfs` stage's key and the image's stem.
struct Ids {
    disk: Guid,
    esp: Guid,
    msr: Guid,
    windows: Guid,
    loader: Guid,
    vhdx: images::vhdx::Identity,
    serial: u64,
    esp_volume_id: u32,
}

impl Ids {
    fn of(ntfs_key: &str, stem: &str) -> Ids {
        let id = |what: &str| {
            Guid::derived(
                &format!("slipway.windows.{what}"),
                format!("{stem} {ntfs_key}").as_bytes(),
            )
        };
        let serial_bytes = id("ntfs-serial").to_bytes();
        let esp_bytes = id("esp-volume-id").to_bytes();
        Ids {
            disk: id("disk"),
            esp: id("esp"),
            msr: id("msr"),
            windows: id("windows"),
            loader: id("loader"),
            vhdx: images::vhdx::Identity::derived(&format!("windows {stem} {ntfs_key}")),
            serial: u64::from_le_bytes(serial_bytes[..8].try_into().unwrap_or([0; 8])),
            esp_volume_id: u32::from_le_bytes(esp_bytes[..4].try_into().unwrap_or([0; 4])),
        }
    }
}

/// Facts the `ntfs` stage records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NtfsFacts {
    index: u32,
    edition: String,
    registry: BTreeMap<String, String>,
    services: BTreeMap<String, String>,
}

/// Facts the `win-disk` stage records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DiskFacts {
    partitions: Vec<manifest::PartitionFacts>,
    virtual_size: u64,
    file_size: u64,
    sha256: String,
    bcd_sha256: String,
}

/// Where the partitions go: ESP at 1 MiB, then the MSR, then Windows up to the last MiB.
struct Plan {
    esp_offset: u64,
    esp_size: u64,
    ntfs_offset: u64,
    ntfs_size: u64,
}

fn plan(recipe: &Recipe) -> Result<Plan, Error> {
    let size = *recipe.disk.size.get_ref();
    let too_small = |needed: Option<u64>| {
        recipe.error_at(
            &recipe.disk.size.span(),
            format!(
                "the disk is too small: the ESP and MSR take {}, leaving no room for Windows",
                needed.map_or_else(|| "more than the disk".to_owned(), crate::size::human)
            ),
        )
    };
    let esp_size = recipe
        .disk
        .esp_size
        .get_ref()
        .checked_next_multiple_of(ALIGN)
        .ok_or_else(|| too_small(None))?;
    let ntfs_offset = ALIGN
        .checked_add(esp_size)
        .and_then(|n| n.checked_add(MSR_SIZE))
        .ok_or_else(|| too_small(None))?;
    let ntfs_size = size
        .checked_sub(ntfs_offset + ALIGN)
        .filter(|s| *s >= NTFS_OVERHEAD)
        .ok_or_else(|| too_small(ntfs_offset.checked_add(ALIGN)))?;
    Ok(Plan {
        esp_offset: ALIGN,
        esp_size,
        ntfs_offset,
        ntfs_size: ntfs_size / ALIGN * ALIGN,
    })
}

/// Runs the Windows stages and publishes the image.
pub(super) fn build(
    recipe: &Recipe,
    win: &Windows,
    inputs: &BTreeMap<String, Fetched>,
    out: &Path,
    stages: &Stages,
    events: &Events,
    toolchain: &BTreeMap<String, String>,
) -> Result<Built, super::Error> {
    let epoch = super::epoch();
    let stem = recipe.stem();
    // Slipway's version and every tool package's: part of every stage key, as for Linux.
    let tools = super::tools_key(toolchain);
    let base_input = &inputs[win.base.source.get_ref()];
    // A base VHDX is captured into a WIM first (its own stage), then built from like one.
    let (base, select) = match &win.base.select {
        Select::Vhdx => {
            let mut key = Key::new(STAGE_FORMAT, "win-base");
            key.add(&tools)
                .add(&epoch.to_string())
                .add(&base_input.sha256);
            let source = file_of(base_input)?;
            let dir = stages.get_or_make("win-base", &key.finish(), events, |dir| {
                base::capture(&source, dir, epoch).map_err(Into::into)
            })?;
            (dir.join("base.wim"), Select::Index(1))
        }
        other => (file_of(base_input)?, other.clone()),
    };
    let plan = plan(recipe)?;
    let unattend = match &win.unattend {
        Some(name) => Some(render_unattend(
            recipe,
            name.get_ref(),
            &inputs[name.get_ref()],
        )?),
        None => None,
    };
    let image_json = image_json(recipe);

    let mut key = Key::new(STAGE_FORMAT, "ntfs");
    key.add(&tools)
        .add(&epoch.to_string())
        .add(&inputs[win.base.source.get_ref()].sha256)
        .add(&win.base.select.to_string())
        .add(&plan.ntfs_size.to_string())
        .add(&plan.ntfs_offset.to_string())
        .add(&image_json)
        .add(unattend.as_deref().unwrap_or(""))
        .add(&inputs[win.firstboot.get_ref()].sha256);
    for layer in &win.layers {
        key.add(&format!(
            "layer {} {} private {}",
            layer.source.get_ref(),
            layer.into,
            layer.private
        ))
        .add(&inputs[layer.source.get_ref()].sha256);
    }
    for file in &win.files {
        key.add(&format!(
            "{} {:?} private {}",
            file.path, file.content, file.private
        ));
        if let WinContent::Source(name) = &file.content {
            key.add(&inputs[name].sha256);
        }
    }
    for entry in &win.registry {
        key.add(&format!(
            "{} {} {:?}",
            entry.key_text(),
            entry.name,
            entry.data
        ));
    }
    // Each service by what it registers (never its place in the recipe's text).
    for service in &win.services {
        key.add(&format!(
            "service {} {:?} {:?} {:?} {:?} {:?}",
            service.name,
            service.image_path(),
            service.start,
            service.display_name,
            service.description,
            service.depends_on
        ));
    }
    let ntfs_key = key.finish();
    let ids = Ids::of(&ntfs_key, &stem);
    let ntfs_dir = stages.get_or_make("ntfs", &ntfs_key, events, |dir| {
        let content = volume::Content {
            recipe,
            win,
            inputs,
            unattend: unattend.as_deref(),
            image_json: &image_json,
            select: &select,
        };
        volume::make_ntfs(&content, &base, &plan, ids.serial, dir, epoch, events)
            .map_err(Into::into)
    })?;
    let ntfs_facts: NtfsFacts = stage::read_facts(&ntfs_dir, "ntfs")?;

    let mut key = Key::new(STAGE_FORMAT, "win-esp");
    key.add(&tools)
        .add(&epoch.to_string())
        .add(&ntfs_key)
        .add(&stem)
        .add(&plan.esp_size.to_string());
    let esp_key = key.finish();
    let description = format!(
        "{} {}",
        recipe.image.name.get_ref(),
        recipe.image.version.get_ref()
    );
    let esp_dir = stages.get_or_make("win-esp", &esp_key, events, |dir| {
        let boot_spec = boot::Spec {
            disk: ids.disk,
            esp: ids.esp,
            windows: ids.windows,
            loader: ids.loader,
            description: description.clone(),
        };
        boot::make(
            &base,
            ntfs_facts.index,
            &boot_spec,
            plan.esp_size,
            ids.esp_volume_id,
            dir,
            epoch,
        )?;
        Ok(())
    })?;

    let mut key = Key::new(STAGE_FORMAT, "win-disk");
    key.add(&ntfs_key)
        .add(&esp_key)
        .add(&recipe.disk.size.get_ref().to_string())
        .add(&recipe.disk.block_size.to_string());
    let disk_key = key.finish();
    let disk_dir = stages.get_or_make("win-disk", &disk_key, events, |dir| {
        layout::make_disk(recipe, &plan, &ids, &ntfs_dir, &esp_dir, dir, events)
    })?;
    let disk: DiskFacts = stage::read_facts(&disk_dir, "win-disk")?;

    let mut components = BTreeMap::new();
    components.insert("windows".to_owned(), ntfs_facts.edition.clone());
    if recipe.image.kubernetes.get_ref() != "none" {
        components.insert(
            "kubernetes".to_owned(),
            recipe.image.kubernetes.get_ref().clone(),
        );
    }
    let manifest = Manifest {
        schema: manifest::SCHEMA.to_owned(),
        name: recipe.image.name.get_ref().clone(),
        version: recipe.image.version.get_ref().clone(),
        os: recipe.image.os,
        arch: recipe.image.arch.name().to_owned(),
        kubernetes: Some(recipe.image.kubernetes.get_ref().clone()).filter(|k| k != "none"),
        components,
        inputs: record::inputs(inputs),
        packages: BTreeMap::new(),
        files: layout::placed_files(win, inputs, unattend.as_deref(), &image_json),
        disk: manifest::DiskFacts {
            file: format!("{stem}.vhdx"),
            sha256: disk.sha256.clone(),
            file_size: disk.file_size,
            virtual_size: disk.virtual_size,
            block_size: recipe.disk.block_size,
            logical_sector_size: 512,
            disk_guid: ids.disk.to_string(),
            partitions: disk.partitions.clone(),
            verity: None,
        },
        boot: manifest::Boot {
            firmware: "uefi".to_owned(),
            secure_boot: "MicrosoftWindows".to_owned(),
            kernel: None,
            cmdline: None,
            uki_sha256: None,
        },
        build: manifest::BuildFacts {
            slipway: env!("CARGO_PKG_VERSION").to_owned(),
            source_date_epoch: epoch,
            tools: toolchain
                .iter()
                .filter(|(p, _)| WINDOWS_TOOLS.contains(&p.as_str()))
                .map(|(p, v)| (p.clone(), v.clone()))
                .collect(),
        },
        windows: Some(manifest::WindowsFacts {
            edition: ntfs_facts.edition,
            index: ntfs_facts.index,
            registry: ntfs_facts.registry,
            services: ntfs_facts.services,
            loader: ids.loader.to_string(),
            bcd_sha256: disk.bcd_sha256,
        }),
    };
    let (vhdx, manifest_path, sbom) =
        super::output::publish(out, &stem, &disk_dir.join("image.vhdx"), &manifest)?;
    Ok(Built {
        vhdx,
        manifest_path,
        sbom,
        manifest,
        cached_stages: stages.cached(),
        run_stages: stages.run(),
    })
}

/// The tool packages whose output is in a Windows image's bytes.
pub const WINDOWS_TOOLS: &[&str] = &[
    "wimtools",
    "ntfs-3g",
    "libhivex-bin",
    "libwin-hivex-perl",
    "faketime",
    "dosfstools",
    "mtools",
];

fn file_of(fetched: &Fetched) -> Result<PathBuf, Error> {
    match &fetched.artifact {
        Artifact::File(path) => Ok(path.clone()),
        _ => Err(Error::EscapePath {
            path: fetched.name.clone(),
            why: "expected a file source".to_owned(),
        }),
    }
}

/// `image.json`: what the first-boot script reports as the image.
fn image_json(recipe: &Recipe) -> String {
    let k8s = recipe.image.kubernetes.get_ref();
    let kubernetes = if k8s == "none" {
        String::new()
    } else {
        format!("v{}", k8s.trim_start_matches('v'))
    };
    let mut text = serde_json::to_string_pretty(&serde_json::json!({
        "name": recipe.image.name.get_ref(),
        "version": recipe.image.version.get_ref(),
        "kubernetes": kubernetes,
    }))
    .unwrap_or_default();
    text.push('\n');
    text
}

/// The unattend template with `{{image.name}}` and `{{image.version}}` filled in.
fn render_unattend(recipe: &Recipe, name: &str, fetched: &Fetched) -> Result<String, Error> {
    let path = file_of(fetched)?;
    let text = std::fs::read_to_string(&path).map_err(|e| Error::RenderUnattend {
        source_name: name.to_owned(),
        why: format!("cannot read it as UTF-8 text: {e}"),
    })?;
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let rendered = text
        .replace("{{image.name}}", &escape(recipe.image.name.get_ref()))
        .replace("{{image.version}}", &escape(recipe.image.version.get_ref()));
    if let Some(at) = rendered.find("{{") {
        let rest: String = rendered[at..].chars().take(40).collect();
        return Err(Error::RenderUnattend {
            source_name: name.to_owned(),
            why: format!(
                "unknown placeholder at {rest:?}: only {{{{image.name}}}} and {{{{image.version}}}} are filled in"
            ),
        });
    }
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_become_utc_dates() {
        assert_eq!(civil(0), "1970-01-01 00:00:00");
        assert_eq!(civil(315_532_800), "1980-01-01 00:00:00");
        assert_eq!(civil(1_764_460_800 + 3661), "2025-11-30 01:01:01");
        assert_eq!(civil(951_782_400), "2000-02-29 00:00:00");
    }
}
