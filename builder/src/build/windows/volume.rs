//! The Windows volume's content: the base image's chosen edition with the recipe's layers and
//! files added (as a working WIM), applied into a fresh NTFS volume, then the registry edited
//! hive by hive and the build's own security descriptors set. See the parent module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ntfs::{self, Access};
use super::{Error, NTFS_OVERHEAD, NtfsFacts, Plan, SLIPWAY_DIR, file_of, io_err, registry, wim};
use crate::build::stage;
use crate::events::Events;
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
    /// The image of the base WIM to start from.
    pub(super) select: &'a spec::Select,
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
    events: &Events,
) -> Result<(), Error> {
    let win = content.win;
    let recipe = content.recipe;
    let image = wim::select(base, content.select)?;
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
    // then the files (which may replace what a layer brought). After each layer the tree is
    // checked to hold only files and directories: the writes that follow go through paths,
    // and a link a layer brought would lead them out of the stage.
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
            .map_err(|source| Error::UnpackLayer {
                source_name: layer.source.get_ref().clone(),
                source,
            })?;
        walk(&staging, &staging)?;
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
    // new one), every directory the base did not have, and the directories the recipe (or
    // Slipway) keeps private, whatever the base gave them. Names are spelled as the base
    // spells them, and two spellings of one name are refused: Windows compares names
    // ignoring case, wimlib does not, and the second spelling would become a second directory.
    let private = private_dirs(win);
    let mut security = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (path, is_dir) in walk(&staging, &staging)? {
        let folded = path.to_uppercase();
        let known = listing.spelled(&path);
        if known != path {
            return Err(Error::SpellName { path, other: known });
        }
        if let Some(other) = seen.insert(folded.clone(), path.clone()) {
            return Err(Error::SpellName { path, other });
        }
        let access = access_of(&path, &private);
        if !is_dir || !listing.has(&path) || access == Access::Private {
            security.push((path, is_dir, access));
        }
    }
    pin_times(&staging, epoch)?;

    let work = dir.join("work.wim");
    let step = events.stage("wim-export", None);
    wim::export(base, image.index, &work, epoch)?;
    step.done();
    let step = events.stage("wim-add", None);
    wim::add_tree(&work, &staging, epoch)?;
    step.done();
    let volume = dir.join("ntfs.img");
    let step = events.stage("ntfs-apply", None);
    ntfs::make(&volume, plan.ntfs_size, plan.ntfs_offset, serial)?;
    wim::apply(&work, &volume, epoch)?;
    step.done();
    let step = events.stage("registry", None);
    std::fs::remove_file(&work).map_err(io_err("remove", &work))?;
    std::fs::remove_dir_all(&staging).map_err(io_err("remove", &staging))?;

    // Registry values and services, hive by hive.
    let mut registry_facts = BTreeMap::new();
    let mut service_facts = BTreeMap::new();
    let mut control_set = String::from("ControlSet001");
    for hive in &hives {
        let copy = dir.join(hive.file());
        ntfs::read(&volume, &hive.path(), &copy)?;
        registry::check_clean(&copy, hive.file())?;
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
    step.done();
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
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Err(why) = crate::recipe::windows::check_component(&name) {
            return Err(Error::EscapePath {
                path: rel,
                why: format!("a layer holds a name Windows cannot: {why}"),
            });
        }
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

/// The directories kept from Users (upper-cased `/A/B`): Slipway's own, and those the recipe
/// marks `private = true`.
fn private_dirs(win: &Windows) -> Vec<String> {
    let mut dirs = vec![
        WinPath::new(SLIPWAY_DIR)
            .map(|p| p.folded())
            .unwrap_or_default(),
    ];
    dirs.extend(
        win.files
            .iter()
            .filter(|f| f.private)
            .map(|f| f.path.folded()),
    );
    dirs.extend(
        win.layers
            .iter()
            .filter(|l| l.private)
            .map(|l| l.into.folded()),
    );
    dirs
}

/// Private inside a private directory; else Users may read and run.
fn access_of(path: &str, private: &[String]) -> Access {
    let folded = path.to_uppercase();
    let inside = |dir: &String| folded == *dir || folded.starts_with(&format!("{dir}/"));
    if private.iter().any(inside) {
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
    fn private_directories_hold_private_things() {
        let private = vec![
            "/PROGRAMDATA/SLIPWAY".to_owned(),
            "/ETC/KUBERNETES".to_owned(),
        ];
        assert_eq!(access_of("/ProgramData/Slipway", &private), Access::Private);
        assert_eq!(
            access_of("/programdata/slipway/kubeadm.yaml", &private),
            Access::Private
        );
        assert_eq!(access_of("/etc/kubernetes/pki", &private), Access::Private);
        assert_eq!(
            access_of("/ProgramData/SlipwayX", &private),
            Access::Program
        );
        assert_eq!(access_of("/k/kubelet.exe", &private), Access::Program);
    }
}
