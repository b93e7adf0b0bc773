//! The Windows volume's content: the base image's chosen edition with the recipe's layers and
//! files added (as a working WIM), applied into a fresh NTFS volume, then the registry edited
//! hive by hive and the build's own security descriptors set. See the parent module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ntfs::{self, Access};
use super::{Error, NTFS_OVERHEAD, NtfsFacts, Plan, SLIPWAY_DIR, file_of, io_err, registry, wim};
use crate::build::stage;
use crate::recipe::Recipe;
use crate::recipe::windows::{
    self as spec, FIRSTBOOT_PATH, IMAGE_JSON_PATH, UNATTEND_PATH, WinContent, WinPath, Windows,
};
use crate::sources::Fetched;

/// What goes into the volume besides the base image.
pub(super) struct Content<'a> {
    pub(super) recipe: &'a Recipe,
    pub(super) win: &'a Windows,
    pub(super) inputs: &'a BTreeMap<String, Fetched>,
    pub(super) unattend: Option<&'a str>,
    pub(super) image_json: &'a str,
}

/// One entry of the staging tree: path on the volume, and its bytes (`None`: a directory).
type Placed = (WinPath, Option<Placement>);

enum Placement {
    Copy(PathBuf),
    Bytes(Vec<u8>),
}

fn placements(content: &Content<'_>) -> Result<Vec<Placed>, Error> {
    let win = content.win;
    let mut out = Vec::new();
    let path = |text: &str| {
        WinPath::new(text).map_err(|why| Error::EscapePath {
            path: text.to_owned(),
            why,
        })
    };
    out.push((
        path(FIRSTBOOT_PATH)?,
        Some(Placement::Copy(file_of(
            &content.inputs[win.firstboot.get_ref()],
        )?)),
    ));
    out.push((
        path(IMAGE_JSON_PATH)?,
        Some(Placement::Bytes(content.image_json.as_bytes().to_vec())),
    ));
    if let Some(unattend) = content.unattend {
        out.push((
            path(UNATTEND_PATH)?,
            Some(Placement::Bytes(unattend.as_bytes().to_vec())),
        ));
    }
    for file in &win.files {
        let placement = match &file.content {
            WinContent::Source(name) => Some(Placement::Copy(file_of(&content.inputs[name])?)),
            WinContent::Text(text) => Some(Placement::Bytes(text.as_bytes().to_vec())),
            WinContent::Dir => None,
        };
        out.push((file.path.clone(), placement));
    }
    Ok(out)
}

pub(super) fn make_ntfs(
    content: &Content<'_>,
    base: &Path,
    plan: &Plan,
    serial: u64,
    dir: &Path,
    epoch: u64,
) -> Result<(), Error> {
    let win = content.win;
    let recipe = content.recipe;
    let image = wim::select(base, &win.base.select)?;
    let listing = wim::paths(base, image.index)?;
    let needed = image.total_bytes.saturating_add(NTFS_OVERHEAD);
    if needed > plan.ntfs_size {
        return Err(recipe
            .error_at(
                &recipe.disk.size.span(),
                format!(
                    "the Windows volume would be {}, but image {} holds {} of files: raise [disk] size",
                    crate::size::human(plan.ntfs_size),
                    image.index,
                    crate::size::human(image.total_bytes)
                ),
            )
            .into());
    }
    // Every hive an edit names must be in the image before anything is made.
    let hives = registry::hives(&win.registry, &win.services);
    for hive in &hives {
        if !listing.has(&hive.path()) {
            let at = win
                .registry
                .iter()
                .find(|e| e.hive == *hive)
                .map(|e| e.span.clone())
                .or_else(|| win.services.first().map(|s| s.span.clone()))
                .unwrap_or(0..0);
            return Err(recipe
                .error_at(
                    &at,
                    format!(
                        "the base image has no {} hive (C:\\Windows\\System32\\config\\{}) to edit",
                        hive.file(),
                        hive.file()
                    ),
                )
                .into());
        }
    }

    // The staging tree, spelled as the image spells its existing directories: layers first,
    // then the files (which may replace what a layer brought).
    let staging = dir.join("staging");
    std::fs::create_dir(&staging).map_err(io_err("create", &staging))?;
    for layer in &win.layers {
        let into = listing.spelled(&layer.into.slash());
        let target = staging.join(into.trim_start_matches('/'));
        std::fs::create_dir_all(&target).map_err(io_err("create", &target))?;
        crate::build::tree::Tree::new(&staging)
            .unpack(
                &content.inputs[layer.source.get_ref()],
                Path::new(into.trim_start_matches('/')),
            )
            .map_err(|e| Error::StageFile {
                action: "unpack a layer into",
                path: target.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
    }
    for (path, placement) in placements(content)? {
        let spelled = listing.spelled(&path.slash());
        let host = staging.join(spelled.trim_start_matches('/'));
        let parent = match placement {
            None => host.clone(),
            Some(_) => host
                .parent()
                .map(Path::to_owned)
                .unwrap_or_else(|| staging.clone()),
        };
        std::fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
        match placement {
            None => {}
            Some(Placement::Copy(from)) => {
                std::fs::copy(&from, &host).map_err(io_err("copy", &from))?;
            }
            Some(Placement::Bytes(bytes)) => {
                std::fs::write(&host, bytes).map_err(io_err("write", &host))?;
            }
        }
    }
    // What the build adds gets its own security descriptor: every file (a replaced file is a
    // new one), and every directory the base did not have.
    let mut security = Vec::new();
    for (path, is_dir) in walk(&staging, &staging)? {
        if !is_dir || !listing.has(&path) {
            let access = access_of(&path);
            security.push((path, is_dir, access));
        }
    }
    pin_times(&staging, epoch)?;

    let work = dir.join("work.wim");
    wim::export(base, image.index, &work, epoch)?;
    wim::add_tree(&work, &staging, epoch)?;
    let volume = dir.join("ntfs.img");
    ntfs::make(&volume, plan.ntfs_size, plan.ntfs_offset, serial)?;
    wim::apply(&work, &volume, epoch)?;
    std::fs::remove_file(&work).map_err(io_err("remove", &work))?;
    std::fs::remove_dir_all(&staging).map_err(io_err("remove", &staging))?;

    // Registry values and services, hive by hive.
    let mut registry_facts = BTreeMap::new();
    let mut service_facts = BTreeMap::new();
    let mut control_set = String::from("ControlSet001");
    for hive in &hives {
        let copy = dir.join(hive.file());
        ntfs::read(&volume, &hive.path(), &copy)?;
        if *hive == spec::Hive::System {
            control_set = registry::current_control_set(&copy)?;
        }
        let mut edits = registry::entries(&win.registry, *hive, &control_set);
        if *hive == spec::Hive::System {
            for service in &win.services {
                edits.extend(registry::service(service, &control_set));
                service_facts.insert(service.name.clone(), service.image_path());
            }
        }
        registry::merge(&copy, &edits, epoch)?;
        ntfs::write(&volume, &copy, &hive.path(), epoch)?;
        std::fs::remove_file(&copy).map_err(io_err("remove", &copy))?;
        let _ = std::fs::remove_file(copy.with_extension("reg"));
    }
    for entry in &win.registry {
        let mut key = entry.key.clone();
        if entry.hive == spec::Hive::System
            && key
                .first()
                .is_some_and(|k| k.eq_ignore_ascii_case("CurrentControlSet"))
        {
            key[0] = control_set.clone();
        }
        let name = if entry.name.is_empty() {
            "@"
        } else {
            &entry.name
        };
        registry_facts.insert(
            format!("{}\\{}\\{name}", entry.hive.file(), key.join("\\")),
            registry::describe(&entry.data),
        );
    }
    ntfs::set_security(&volume, &security, &dir.join("security.txt"), epoch)?;
    stage::write_facts(
        dir,
        "ntfs",
        &NtfsFacts {
            index: image.index,
            edition: image.name,
            registry: registry_facts,
            services: service_facts,
        },
    )
    .map_err(|e| Error::StageFile {
        action: "record",
        path: dir.join("facts.json"),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Every entry under `dir` as (`/relative/path`, is a directory), parents first; links and
/// special files (a layer could carry them) are refused.
fn walk(root: &Path, dir: &Path) -> Result<Vec<(String, bool)>, Error> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err("read", dir))?
        .collect::<Result<_, _>>()
        .map_err(io_err("read", dir))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        let rel = format!(
            "/{}",
            path.strip_prefix(root).unwrap_or(&path).to_string_lossy()
        );
        if meta.is_dir() {
            out.push((rel, true));
            out.extend(walk(root, &path)?);
        } else if meta.is_file() {
            out.push((rel, false));
        } else {
            return Err(Error::EscapePath {
                path: rel,
                why: "a layer holds a link or a special file; Windows images take files and \
                      directories only"
                    .into(),
            });
        }
    }
    Ok(out)
}

/// Slipway's own directory, and what is in it, is private.
fn access_of(path: &str) -> Access {
    let private = WinPath::new(SLIPWAY_DIR)
        .map(|p| p.folded())
        .unwrap_or_default();
    let folded = path.to_uppercase();
    if folded == private || folded.starts_with(&format!("{private}/")) {
        Access::Private
    } else {
        Access::Program
    }
}

/// Sets every staged file's and directory's times to the epoch (wimlib records them).
fn pin_times(dir: &Path, epoch: u64) -> Result<(), Error> {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    let entries = std::fs::read_dir(dir).map_err(io_err("read", dir))?;
    for entry in entries {
        let path = entry.map_err(io_err("read", dir))?.path();
        if path.is_dir() {
            pin_times(&path, epoch)?;
        }
        let file = std::fs::File::open(&path).map_err(io_err("open", &path))?;
        file.set_times(
            std::fs::FileTimes::new()
                .set_modified(when)
                .set_accessed(when),
        )
        .map_err(io_err("set the times of", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slipways_directory_is_private() {
        assert_eq!(access_of("/ProgramData/Slipway"), Access::Private);
        assert_eq!(
            access_of("/programdata/slipway/kubeadm.yaml"),
            Access::Private
        );
        assert_eq!(access_of("/ProgramData/SlipwayX"), Access::Program);
        assert_eq!(access_of("/k/kubelet.exe"), Access::Program);
    }
}
