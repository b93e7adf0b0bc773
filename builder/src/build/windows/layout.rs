//! The disk: GPT (ESP, MSR, Windows) streamed into the VHDX writer, and what the manifest
//! records of the files the build placed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use images::disk::{self, ATTR_NO_AUTO, Partition, types};
use images::vhdx::Extent;
use sha2::{Digest, Sha256};

use super::{DiskFacts, Error, Ids, MSR_SIZE, Plan, io_err};
use crate::build::stage;
use crate::events::Events;
use crate::recipe::Recipe;
use crate::recipe::windows::{FIRSTBOOT_PATH, IMAGE_JSON_PATH, UNATTEND_PATH, WinContent, Windows};
use crate::sources::{Fetched, hex};

pub(super) fn make_disk(
    recipe: &Recipe,
    plan: &Plan,
    ids: &Ids,
    ntfs_dir: &Path,
    esp_dir: &Path,
    dir: &Path,
    events: &Events,
) -> Result<(), crate::build::Error> {
    let file_extent = |path: PathBuf| -> Result<Extent, Error> {
        let file = std::fs::File::open(&path).map_err(io_err("open", &path))?;
        let len = file.metadata().map_err(io_err("stat", &path))?.len();
        Ok(Extent::File {
            file: Arc::new(file),
            offset: 0,
            len,
        })
    };
    let partition = |type_guid, unique_guid, name: &str, attributes, content, size| Partition {
        type_guid,
        unique_guid,
        name: name.to_owned(),
        attributes,
        content: vec![content],
        size: Some(size),
    };
    let mut layout = disk::Layout::new(ids.disk);
    layout.disk_size = Some(*recipe.disk.size.get_ref());
    layout.partitions = vec![
        partition(
            types::ESP,
            ids.esp,
            "EFI system partition",
            ATTR_NO_AUTO,
            file_extent(esp_dir.join("esp.img"))?,
            plan.esp_size,
        ),
        partition(
            types::MSR,
            ids.msr,
            "Microsoft reserved partition",
            ATTR_NO_AUTO,
            Extent::Zero(MSR_SIZE),
            MSR_SIZE,
        ),
        partition(
            types::BASIC_DATA,
            ids.windows,
            "Windows",
            0,
            file_extent(ntfs_dir.join("ntfs.img"))?,
            plan.ntfs_size,
        ),
    ];
    let laid = disk::layout(layout)?;
    // The volume's boot sector records where it starts: the layout must agree with the plan.
    let offsets: Vec<u64> = laid.partitions.iter().map(|p| p.offset).collect();
    let planned = vec![
        plan.esp_offset,
        plan.esp_offset + plan.esp_size,
        plan.ntfs_offset,
    ];
    if offsets != planned {
        return Err(Error::MatchLayout {
            planned,
            found: offsets,
        }
        .into());
    }
    let partitions = crate::build::partition_facts(&laid, &["vfat", "msr", "ntfs"]);
    let (summary, sha256) =
        crate::build::write_vhdx(&laid, ids.vhdx, recipe.disk.block_size, dir, events)?;
    let bcd = esp_dir.join("BCD");
    let bcd_sha256 = hex(&Sha256::digest(
        std::fs::read(&bcd).map_err(io_err("read", &bcd))?,
    ));
    stage::write_facts(
        dir,
        "win-disk",
        &DiskFacts {
            partitions,
            virtual_size: summary.virtual_size,
            file_size: summary.file_size,
            sha256,
            bcd_sha256,
        },
    )
}

/// The files the build placed, as `C:\...` path → sha256 (directories: `dir`).
pub(super) fn placed_files(
    win: &Windows,
    inputs: &BTreeMap<String, Fetched>,
    unattend: Option<&str>,
    image_json: &str,
) -> BTreeMap<String, String> {
    let digest = |bytes: &[u8]| hex(&Sha256::digest(bytes));
    let mut out = BTreeMap::new();
    out.insert(
        FIRSTBOOT_PATH.to_owned(),
        inputs[win.firstboot.get_ref()].sha256.clone(),
    );
    out.insert(IMAGE_JSON_PATH.to_owned(), digest(image_json.as_bytes()));
    if let Some(text) = unattend {
        out.insert(UNATTEND_PATH.to_owned(), digest(text.as_bytes()));
    }
    for layer in &win.layers {
        out.insert(
            format!("{}\\", layer.into),
            format!("layer {}", inputs[layer.source.get_ref()].sha256),
        );
    }
    for file in &win.files {
        let what = match &file.content {
            WinContent::Source(name) => inputs[name].sha256.clone(),
            WinContent::Text(text) => digest(text.as_bytes()),
            WinContent::Dir => "dir".to_owned(),
        };
        out.insert(file.path.to_string(), what);
    }
    out
}
