//! `slipway build`: recipe → sources → root tree → filesystem + dm-verity → initrd → UKI on an
//! EFI system partition → GPT disk streamed into the VHDX writer → manifest and SBOM.
//!
//! Each stage is cached under the digest of its inputs ([`stage`]); a rebuild with nothing
//! changed reuses every stage, and a changed file reruns only the stages that depend on it.

pub mod fs;
mod identity;
pub mod initrd;
mod output;
mod record;
mod stage;
pub mod tree;
pub(crate) mod windows;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use images::disk::{self, ATTR_READ_ONLY, Partition, types};
use images::guid::Guid;
use images::manifest::{self, Manifest};
use images::vhdx::{self, Extent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::events::Events;
use crate::lock::Lock;
use crate::recipe::{self, Content, Filesystem, Recipe};
use crate::sources::{self, Artifact, Fetched, Policy, hex};
use images::uki;
use stage::{Key, Stages};

/// Bumped whenever a stage's output for the same inputs changes, to invalidate caches.
const STAGE_FORMAT: &str = "slipway-stages-3";

/// Timestamps in images when `SOURCE_DATE_EPOCH` is not set: 1980-01-01, the FAT epoch.
pub const DEFAULT_EPOCH: u64 = 315_532_800;

/// Where systemd-boot-efi puts the x86-64 UKI stub.
const STUB_PATH: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// The mode of the image's root directory.
const ROOT_DIR_MODE: u32 = 0o755;

/// GPT names the initrd looks for.
const ROOT_NAME: &str = "slipway-root";
const VERITY_NAME: &str = "slipway-root-verity";

/// Errors of a build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The recipe is invalid.
    #[error(transparent)]
    Recipe(#[from] recipe::Error),
    /// The lock file.
    #[error(transparent)]
    Lock(#[from] crate::lock::Error),
    /// Fetching sources.
    #[error(transparent)]
    Sources(#[from] sources::Error),
    /// Assembling a tree.
    #[error(transparent)]
    Tree(#[from] tree::Error),
    /// Making a filesystem.
    #[error(transparent)]
    Fs(#[from] fs::Error),
    /// Making the initrd.
    #[error(transparent)]
    Initrd(#[from] initrd::Error),
    /// Making the UKI.
    #[error("cannot build the unified kernel image")]
    Uki(#[from] uki::Error),
    /// The stub package has no stub.
    #[error("source {0} has no {STUB_PATH}: is it systemd-boot-efi?")]
    FindStub(String),
    /// Laying out the disk.
    #[error("cannot lay out the disk")]
    Disk(#[from] disk::Error),
    /// Writing the VHDX.
    #[error("cannot write the VHDX")]
    Vhdx(#[from] vhdx::writer::Error),
    /// A Windows image's stages.
    #[error(transparent)]
    Windows(#[from] windows::Error),
    /// A stage's files.
    #[error("stage {stage}: cannot {action} {path}")]
    StageIo {
        /// Stage name.
        stage: &'static str,
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a build is asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    /// The recipe file.
    pub recipe: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Cache directory.
    pub cache: PathBuf,
    /// How to treat the lock.
    pub policy: Policy,
}

/// What a build produced.
#[derive(Debug, Clone, Serialize)]
pub struct Built {
    /// The VHDX.
    pub vhdx: PathBuf,
    /// The manifest.
    pub manifest_path: PathBuf,
    /// The SBOM.
    pub sbom: PathBuf,
    /// The manifest's content.
    pub manifest: Manifest,
    /// Stages taken from the cache.
    pub cached_stages: usize,
    /// Stages run.
    pub run_stages: usize,
}

/// Image timestamps: `SOURCE_DATE_EPOCH` when set, else [`DEFAULT_EPOCH`].
pub fn epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_EPOCH)
}

/// Facts the root stage records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RootFacts {
    verity: fs::Verity,
}

/// Facts the initrd stage records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KernelFacts {
    version: String,
}

/// Facts the ESP stage records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EspFacts {
    cmdline: String,
    uki_sha256: String,
}

/// Facts the disk stage records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DiskStageFacts {
    disk_guid: String,
    partitions: Vec<manifest::PartitionFacts>,
    virtual_size: u64,
    file_size: u64,
    sha256: String,
}

/// Runs a build.
pub fn build(request: &Request, events: &Events) -> Result<Built, Error> {
    let recipe = Recipe::load(&request.recipe)?;
    let lock = Lock::read(&recipe.lock_path())?;
    let (inputs, new_lock) = sources::fetch_all(
        &recipe,
        lock.as_ref(),
        request.policy,
        &request.cache,
        events,
    )?;
    if request.policy != Policy::Locked && lock.as_ref() != Some(&new_lock) {
        new_lock.write(&recipe.lock_path())?;
        tracing::info!(lock = %recipe.lock_path().display(), "lock file updated");
    }
    let epoch = epoch();
    let stages = Stages::open(&request.cache.join("stages"))?;
    // The tools' versions and ours are inputs of every stage.
    let toolchain = fs::toolchain();
    let tools = tools_key(&toolchain);
    if let Some(win) = &recipe.windows {
        return windows::build(
            &recipe,
            win,
            &inputs,
            &request.out,
            &stages,
            events,
            &toolchain,
        );
    }
    let as_root = rustix::process::geteuid().is_root();
    if !as_root && recipe.root.files.iter().any(|f| f.uid != 0 || f.gid != 0) {
        tracing::warn!("not running as root: every file in the image will be owned by root");
    }
    let stem = recipe.stem();

    // Root filesystem and its verity hash tree.
    let mut key = Key::new(STAGE_FORMAT, "root");
    key.add(&tools)
        .add(if as_root { "owners kept" } else { "all root" })
        .add(&epoch.to_string())
        .add(&stem)
        .add(&format!("{:?}", recipe.root.filesystem));
    for layer in &recipe.root.layers {
        let into = layer.into.as_ref().map_or("/", |p| p.as_str());
        key.add(layer.source.get_ref())
            .add(into)
            .add(&inputs[layer.source.get_ref()].sha256);
    }
    for file in &recipe.root.files {
        key.add(&format!(
            "{:?} {:o} {}:{}",
            file, file.mode, file.uid, file.gid
        ));
        if let Content::Source(name) = &file.content {
            key.add(&inputs[name].sha256);
        }
    }
    let root_key = key.finish();
    let root_dir = stages.get_or_make("root", &root_key, events, |dir| {
        make_root(&recipe, &inputs, dir, epoch, &root_key, !as_root)
    })?;
    let root_facts: RootFacts = stage::read_facts(&root_dir, "root")?;

    // Kernel and initrd.
    let kernel_input = &inputs[recipe.kernel.source.get_ref()];
    let mut key = Key::new(STAGE_FORMAT, "initrd");
    key.add(&tools)
        .add(&epoch.to_string())
        .add(&kernel_input.sha256)
        .add(initrd::INIT);
    for layer in &recipe.kernel.initrd {
        key.add(&inputs[layer.get_ref()].sha256);
    }
    for module in &recipe.kernel.modules {
        key.add(module);
    }
    let initrd_key = key.finish();
    let initrd_dir = stages.get_or_make("initrd", &initrd_key, events, |dir| {
        make_initrd(&recipe, &inputs, dir, epoch)
    })?;
    let kernel_facts: KernelFacts = stage::read_facts(&initrd_dir, "initrd")?;

    // UKI on the EFI system partition.
    let cmdline = format!(
        "{} slipway.roothash={} slipway.verity={}:{} slipway.rootfs={}",
        recipe.kernel.cmdline.trim(),
        root_facts.verity.root_hash,
        root_facts.verity.data_blocks,
        root_facts.verity.salt,
        fs_name(recipe.root.filesystem),
    );
    let osrel = os_release(&recipe);
    let stub_input = &inputs[recipe.kernel.stub.get_ref()];
    let mut key = Key::new(STAGE_FORMAT, "esp");
    key.add(&tools)
        .add(&epoch.to_string())
        .add(&initrd_key)
        .add(&stub_input.sha256)
        .add(&cmdline)
        .add(&osrel)
        .add(&recipe.disk.esp_size.get_ref().to_string());
    let esp_key = key.finish();
    let esp_dir = stages.get_or_make("esp", &esp_key, events, |dir| {
        let esp = Esp {
            size: *recipe.disk.esp_size.get_ref(),
            stub: stub_input,
            initrd_dir: &initrd_dir,
            kernel: &kernel_facts,
            cmdline: &cmdline,
            osrel: &osrel,
            epoch,
            key: &esp_key,
        };
        make_esp(&esp, dir)
    })?;
    let esp_facts: EspFacts = stage::read_facts(&esp_dir, "esp")?;

    // GPT disk streamed into the VHDX writer.
    let mut key = Key::new(STAGE_FORMAT, "disk");
    key.add(&tools)
        .add(&root_key)
        .add(&esp_key)
        .add(&stem)
        .add(&recipe.disk.size.get_ref().to_string())
        .add(&recipe.disk.block_size.to_string());
    let disk_key = key.finish();
    let disk_dir = stages.get_or_make("disk", &disk_key, events, |dir| {
        make_disk(&recipe, &root_dir, &root_facts, &esp_dir, dir, events)
    })?;
    let disk_facts: DiskStageFacts = stage::read_facts(&disk_dir, "disk")?;

    let manifest = Manifest {
        // A Linux image's manifest has v1's shape: written as v1, hosts whose slipwayd predates
        // v2 still take it (a rolling upgrade of slipwayd and images in either order).
        schema: manifest::SCHEMA_V1.to_owned(),
        name: recipe.image.name.get_ref().clone(),
        version: recipe.image.version.get_ref().clone(),
        os: recipe.image.os,
        arch: recipe.image.arch.name().to_owned(),
        kubernetes: Some(recipe.image.kubernetes.get_ref().clone()).filter(|k| k != "none"),
        components: record::components(&recipe, &inputs, &kernel_facts.version),
        inputs: record::inputs(&inputs),
        packages: record::packages(&recipe, &inputs),
        files: record::placed_files(&recipe, &inputs),
        disk: manifest::DiskFacts {
            file: format!("{stem}.vhdx"),
            sha256: disk_facts.sha256.clone(),
            file_size: disk_facts.file_size,
            virtual_size: disk_facts.virtual_size,
            block_size: recipe.disk.block_size,
            logical_sector_size: 512,
            disk_guid: disk_facts.disk_guid.clone(),
            partitions: disk_facts.partitions.clone(),
            verity: Some(manifest::VerityFacts {
                root_hash: root_facts.verity.root_hash.clone(),
                salt: root_facts.verity.salt.clone(),
                algorithm: "sha256".to_owned(),
                data_block_size: 4096,
                hash_block_size: 4096,
                data_blocks: root_facts.verity.data_blocks,
            }),
        },
        boot: manifest::Boot {
            firmware: "uefi".to_owned(),
            secure_boot: "none".to_owned(),
            kernel: Some(kernel_facts.version.clone()),
            cmdline: Some(esp_facts.cmdline.clone()),
            uki_sha256: Some(esp_facts.uki_sha256.clone()),
        },
        build: manifest::BuildFacts {
            slipway: env!("CARGO_PKG_VERSION").to_owned(),
            source_date_epoch: epoch,
            tools: record::tools(&recipe, &toolchain),
        },
        windows: None,
    };
    let (vhdx, manifest_path, sbom) =
        output::publish(&request.out, &stem, &disk_dir.join("image.vhdx"), &manifest)?;
    Ok(Built {
        vhdx,
        manifest_path,
        sbom,
        manifest,
        cached_stages: stages.cached(),
        run_stages: stages.run(),
    })
}

/// Streams the laid-out disk into `dir/image.vhdx` (progress as the `vhdx` stage); its
/// summary and sha256.
fn write_vhdx(
    laid: &disk::Disk,
    identity: vhdx::Identity,
    block_size: u32,
    dir: &Path,
    events: &Events,
) -> Result<(vhdx::writer::Summary, String), Error> {
    let mut options = vhdx::Options::new(identity);
    options.block_size = block_size;
    let stage = events.stage("vhdx", Some(laid.size));
    let path = dir.join("image.vhdx");
    let summary =
        vhdx::writer::write_file(&path, &laid.extents, &options, &mut |n| stage.progress(n))?;
    stage.done();
    let sha256 = sources::digest_file(&path)?;
    Ok((summary, sha256))
}

/// Slipway's version and each tool package's, one per line: an input of every stage.
fn tools_key(toolchain: &BTreeMap<String, String>) -> String {
    let mut tools = format!("slipway {}\n", env!("CARGO_PKG_VERSION"));
    for (package, version) in toolchain {
        tools.push_str(&format!("{package} {version}\n"));
    }
    tools
}

/// The manifest's record of each laid-out partition, with what it holds.
fn partition_facts(laid: &disk::Disk, contents: &[&str]) -> Vec<manifest::PartitionFacts> {
    laid.partitions
        .iter()
        .zip(contents)
        .map(|(p, content)| manifest::PartitionFacts {
            number: p.number,
            name: p.name.clone(),
            type_guid: p.type_guid.to_string(),
            guid: p.unique_guid.to_string(),
            offset: p.offset,
            size: p.size,
            content: (*content).to_owned(),
        })
        .collect()
}

fn fs_name(filesystem: Filesystem) -> &'static str {
    match filesystem {
        Filesystem::Erofs => "erofs",
        Filesystem::Ext4 => "ext4",
    }
}

/// A GUID or salt derived from a stage key (a digest of everything the stage reads): stable
/// across builds of the same inputs, different when any input differs. The disk's own
/// identifiers come from its content instead ([`identity`]).
fn derived(what: &str, key: &str) -> Guid {
    Guid::derived(&format!("slipway.build.{what}"), key.as_bytes())
}

fn io_err(
    stage: &'static str,
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::StageIo {
        stage,
        action,
        path,
        source,
    }
}

fn make_root(
    recipe: &Recipe,
    inputs: &BTreeMap<String, Fetched>,
    dir: &Path,
    epoch: u64,
    key: &str,
    all_root: bool,
) -> Result<(), Error> {
    let staging = dir.join("tree");
    std::fs::create_dir(&staging).map_err(io_err("root", "create", &staging))?;
    // The staging directory is the image's `/`: its mode is the image's, not the umask's.
    let root_mode = std::fs::Permissions::from_mode(ROOT_DIR_MODE);
    std::fs::set_permissions(&staging, root_mode).map_err(io_err("root", "chmod", &staging))?;
    let tree = tree::Tree::new(&staging);
    for layer in &recipe.root.layers {
        let into = layer.into.as_ref().map_or("", |p| p.relative());
        tree.unpack(&inputs[layer.source.get_ref()], Path::new(into))?;
    }
    for file in &recipe.root.files {
        let source = match &file.content {
            Content::Source(name) => match &inputs[name].artifact {
                Artifact::File(path) => Some(path.as_path()),
                _ => return Err(Error::Tree(tree::Error::UseFileAsLayer(name.clone()))),
            },
            _ => None,
        };
        tree.place(file, source)?;
    }
    let env = format!(
        "SLIPWAY_IMAGE_NAME={}\nSLIPWAY_IMAGE_VERSION={}\n",
        recipe.image.name.get_ref(),
        recipe.image.version.get_ref()
    );
    tree.write_file("etc/slipway/image.env", env.as_bytes())?;
    let image = dir.join("root.img");
    let uuid = derived("root-fs-uuid", key);
    match recipe.root.filesystem {
        Filesystem::Erofs => fs::erofs(&staging, &image, uuid, epoch, all_root)?,
        Filesystem::Ext4 => fs::ext4(&staging, &image, uuid, epoch, all_root)?,
    }
    std::fs::remove_dir_all(&staging).map_err(io_err("root", "remove", &staging))?;
    let salt = hex(&Sha256::digest(
        format!("slipway.verity-salt {key}").as_bytes(),
    ));
    let verity = fs::verity(
        &image,
        &dir.join("verity.img"),
        &salt,
        derived("verity-uuid", key),
    )?;
    stage::write_facts(dir, "root", &RootFacts { verity })
}

fn make_initrd(
    recipe: &Recipe,
    inputs: &BTreeMap<String, Fetched>,
    dir: &Path,
    epoch: u64,
) -> Result<(), Error> {
    let kernel_root = dir.join("kernel-package");
    let initrd_root = dir.join("initrd-tree");
    for d in [&kernel_root, &initrd_root] {
        std::fs::create_dir(d).map_err(io_err("initrd", "create", d))?;
    }
    tree::Tree::new(&kernel_root).unpack(&inputs[recipe.kernel.source.get_ref()], Path::new(""))?;
    let kernel = initrd::Kernel::find(&kernel_root)?;
    let modules = kernel.modules(&recipe.kernel.modules)?;
    let initrd_tree = tree::Tree::new(&initrd_root);
    for layer in &recipe.kernel.initrd {
        initrd_tree.unpack(&inputs[layer.get_ref()], Path::new(""))?;
    }
    let archive = initrd::archive(&initrd_root, &kernel, &modules, epoch)?;
    let initrd_path = dir.join("initrd.cpio");
    std::fs::write(&initrd_path, archive).map_err(io_err("initrd", "write", &initrd_path))?;
    let vmlinuz = dir.join("vmlinuz");
    // Read through the package tree's descriptors: its links are never followed to the host.
    let image = kernel.read_image()?;
    std::fs::write(&vmlinuz, image).map_err(io_err("initrd", "write", &vmlinuz))?;
    for d in [&kernel_root, &initrd_root] {
        std::fs::remove_dir_all(d).map_err(io_err("initrd", "remove", d))?;
    }
    stage::write_facts(
        dir,
        "initrd",
        &KernelFacts {
            version: kernel.version,
        },
    )
}

/// What the ESP stage reads.
struct Esp<'a> {
    /// Partition size.
    size: u64,
    /// The systemd-boot-efi package.
    stub: &'a Fetched,
    /// The initrd stage (kernel and initrd).
    initrd_dir: &'a Path,
    kernel: &'a KernelFacts,
    cmdline: &'a str,
    osrel: &'a str,
    epoch: u64,
    /// The stage key (seeds the FAT volume ID).
    key: &'a str,
}

fn make_esp(esp: &Esp<'_>, dir: &Path) -> Result<(), Error> {
    let Esp {
        size,
        stub: stub_input,
        initrd_dir,
        kernel,
        cmdline,
        osrel,
        epoch,
        key,
    } = *esp;
    let stub_root = dir.join("stub-package");
    std::fs::create_dir(&stub_root).map_err(io_err("esp", "create", &stub_root))?;
    tree::Tree::new(&stub_root).unpack(stub_input, Path::new(""))?;
    // Read through the package tree's descriptors: its links are never followed to the host.
    let stub = tree::Tree::new(&stub_root)
        .read_file(Path::new(STUB_PATH))?
        .ok_or_else(|| Error::FindStub(stub_input.name.clone()))?;
    let read = |name: &str| {
        let path = initrd_dir.join(name);
        std::fs::read(&path).map_err(io_err("esp", "read", &path))
    };
    let (linux, initrd) = (read("vmlinuz")?, read("initrd.cpio")?);
    let uname = format!("{}\n", kernel.version);
    let sections = [
        uki::Section {
            name: ".osrel",
            data: osrel.as_bytes(),
        },
        uki::Section {
            name: ".cmdline",
            data: cmdline.as_bytes(),
        },
        uki::Section {
            name: ".uname",
            data: uname.as_bytes(),
        },
        uki::Section {
            name: ".initrd",
            data: &initrd,
        },
        uki::Section {
            name: ".linux",
            data: &linux,
        },
    ];
    let image = uki::build(&stub, &sections)?;
    let uki_sha256 = hex(&Sha256::digest(&image));
    let uki_path = dir.join("BOOTX64.EFI");
    std::fs::write(&uki_path, &image).map_err(io_err("esp", "write", &uki_path))?;
    std::fs::remove_dir_all(&stub_root).map_err(io_err("esp", "remove", &stub_root))?;
    let volume_id = u32::from_le_bytes(
        derived("esp-volume-id", key).to_bytes()[..4]
            .try_into()
            .unwrap_or([0; 4]),
    );
    fs::vfat(
        &dir.join("esp.img"),
        size,
        volume_id,
        &[("::/EFI/BOOT/BOOTX64.EFI", &uki_path)],
        epoch,
    )?;
    stage::write_facts(
        dir,
        "esp",
        &EspFacts {
            cmdline: cmdline.to_owned(),
            uki_sha256,
        },
    )
}

fn make_disk(
    recipe: &Recipe,
    root_dir: &Path,
    root: &RootFacts,
    esp_dir: &Path,
    dir: &Path,
    events: &Events,
) -> Result<(), Error> {
    let file_extent = |path: PathBuf| -> Result<Extent, Error> {
        let file = std::fs::File::open(&path).map_err(io_err("disk", "open", &path))?;
        let len = file
            .metadata()
            .map_err(io_err("disk", "stat", &path))?
            .len();
        Ok(Extent::File {
            file: Arc::new(file),
            offset: 0,
            len,
        })
    };
    let ids = disk_ids(recipe, root_dir, root, esp_dir)?;
    let partition = |type_guid, name: &str, attributes, content: Extent, size| Partition {
        type_guid,
        unique_guid: ids.partition(name),
        name: name.to_owned(),
        attributes,
        content: vec![content],
        size,
    };
    let mut layout = disk::Layout::new(ids.disk);
    layout.disk_size = Some(*recipe.disk.size.get_ref());
    layout.partitions = vec![
        partition(
            types::ESP,
            "ESP",
            0,
            file_extent(esp_dir.join("esp.img"))?,
            None,
        ),
        partition(
            types::ROOT_X86_64,
            ROOT_NAME,
            ATTR_READ_ONLY,
            file_extent(root_dir.join("root.img"))?,
            None,
        ),
        partition(
            types::ROOT_X86_64_VERITY,
            VERITY_NAME,
            ATTR_READ_ONLY,
            file_extent(root_dir.join("verity.img"))?,
            None,
        ),
    ];
    let laid = match disk::layout(layout) {
        Ok(laid) => laid,
        Err(disk::Error::FitPartitions { needed, disk_size }) => {
            return Err(Error::Recipe(recipe.error_at(
                &recipe.disk.size.span(),
                format!(
                    "the disk is too small for its content: {} needed, size is {}; raise [disk] size",
                    crate::size::human(needed),
                    crate::size::human(disk_size)
                ),
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let partitions = partition_facts(&laid, &["vfat", fs_name(recipe.root.filesystem), "verity"]);
    let (summary, sha256) = write_vhdx(&laid, ids.vhdx, recipe.disk.block_size, dir, events)?;
    stage::write_facts(
        dir,
        "disk",
        &DiskStageFacts {
            disk_guid: ids.disk.to_string(),
            partitions,
            virtual_size: summary.virtual_size,
            file_size: summary.file_size,
            sha256,
        },
    )
}

/// The disk's identifiers, from digests of every partition's bytes: the ESP's and the verity
/// hash tree's sha256, and for the root the dm-verity root hash (a digest of all its blocks)
/// with its salt and length.
fn disk_ids(
    recipe: &Recipe,
    root_dir: &Path,
    root: &RootFacts,
    esp_dir: &Path,
) -> Result<identity::DiskIds, Error> {
    let root_image = root_dir.join("root.img");
    let root_len = std::fs::metadata(&root_image)
        .map_err(io_err("disk", "stat", &root_image))?
        .len();
    let verity = &root.verity;
    let content = identity::Content {
        stem: recipe.stem(),
        disk_size: *recipe.disk.size.get_ref(),
        block_size: recipe.disk.block_size,
        partitions: vec![
            (
                "ESP".to_owned(),
                sources::digest_file(&esp_dir.join("esp.img"))?,
            ),
            (
                ROOT_NAME.to_owned(),
                format!(
                    "dm-verity {} salt {} blocks {} bytes {root_len}",
                    verity.root_hash, verity.salt, verity.data_blocks
                ),
            ),
            (
                VERITY_NAME.to_owned(),
                sources::digest_file(&root_dir.join("verity.img"))?,
            ),
        ],
    };
    Ok(identity::DiskIds::of(&content))
}

fn os_release(recipe: &Recipe) -> String {
    format!(
        "ID=slipway\nNAME=\"Slipway {name}\"\nPRETTY_NAME=\"Slipway {name} {version}\"\n\
         IMAGE_ID={name}\nIMAGE_VERSION={version}\n",
        name = recipe.image.name.get_ref(),
        version = recipe.image.version.get_ref()
    )
}
