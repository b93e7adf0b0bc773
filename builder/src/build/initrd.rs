//! The initrd: the recipe's initrd layers (busybox, dmsetup and its libraries), the kernel
//! modules it names with everything they depend on, and Slipway's `/init` (init.sh), which
//! opens the dm-verity root. Written as a deterministic newc cpio archive.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cpio::{self, Archive, Entry};

use super::fs::run;
use super::tree::{self, Tree};

/// Where a kernel package holds its modules, one directory per version.
const MODULES_DIR: &str = "lib/modules";

/// Where depmod looks for `VERSION` under its base directory: `lib/modules`, or, for a kmod
/// built with `--with-module-directory=/usr/lib/modules` (kmod 31 and later, e.g. Debian
/// trixie's), `usr/lib/modules`. The kernel is read from [`MODULES_DIR`] only.
const DEPMOD_DIRS: &[&str] = &[MODULES_DIR, "usr/lib/modules"];

/// Links in a modules directory that depmod never enters (they name the kernel's sources).
const DEPMOD_SKIPS: &[&str] = &["build", "source"];

/// Slipway's initrd `/init`.
pub const INIT: &str = include_str!("init.sh");

/// Errors making an initrd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel package has no kernel.
    #[error("the kernel package has no /boot/vmlinuz-* and /lib/modules/VERSION")]
    FindKernel,
    /// A module the recipe names does not exist.
    #[error("kernel {version} has no module {name}, neither loadable nor built in: check the name")]
    FindModule {
        /// Kernel version.
        version: String,
        /// Module name.
        name: String,
    },
    /// depmod failed.
    #[error("cannot compute module dependencies")]
    Depmod(#[source] super::fs::Error),
    /// A name under `lib/modules` is not a kernel version (it would reach depmod's command line
    /// and paths).
    #[error(
        "kernel package: {MODULES_DIR}/{version:?} is not a kernel version (a letter or digit, then \
         letters, digits and `.+~_-`): refusing the package"
    )]
    CheckVersion {
        /// The name found.
        version: String,
    },
    /// A file of the kernel package was refused or could not be read.
    #[error(transparent)]
    ReadPackage(tree::Error),
    /// A file the kernel package must hold is missing.
    #[error("kernel package: {path} is missing")]
    FindFile {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The archive could not be made.
    #[error("cannot write the initrd archive")]
    WriteArchive(#[source] cpio::Error),
}

/// A kernel unpacked from its package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r`.
    pub version: String,
    /// The EFI-stub kernel image, for messages: read it with [`Kernel::read_image`], which
    /// does not follow the package's links.
    pub image: PathBuf,
    /// The unpacked package's root (holding `lib/modules/VERSION`).
    pub root: PathBuf,
}

impl Kernel {
    /// Finds the kernel in an unpacked kernel package at `root`: the first version, in name
    /// order (not the directory's listing order, which differs between hosts), under
    /// `lib/modules` that has a `boot/vmlinuz-VERSION`. `lib/modules` must be real
    /// directories and the image not a link; a name there that is no valid version (`.keep`,
    /// `-a`) is skipped.
    pub fn find(root: &Path) -> Result<Kernel, Error> {
        let tree = Tree::new(root);
        let names = tree
            .list_real_dir(Path::new(MODULES_DIR))
            .map_err(Error::ReadPackage)?
            .ok_or(Error::FindKernel)?;
        // Sorted by the listing (name order, not the directory's order, which differs
        // between hosts).
        for name in names {
            let version = name.to_string_lossy().into_owned();
            if let Err(e) = check_version(&version) {
                tracing::debug!("kernel package: skipping {MODULES_DIR}/{version:?}: {e}");
                continue;
            }
            let image = image_path(&version);
            if tree.is_file(&image).map_err(Error::ReadPackage)? {
                return Ok(Kernel {
                    image: root.join(image),
                    version,
                    root: root.to_owned(),
                });
            }
        }
        Err(Error::FindKernel)
    }

    /// The kernel image's bytes, read without following the package's links.
    pub fn read_image(&self) -> Result<Vec<u8>, Error> {
        check_version(&self.version)?;
        self.read(&image_path(&self.version))?
            .ok_or_else(|| Error::FindFile {
                path: self.image.clone(),
            })
    }

    /// A file of the package, `None` if missing; a link or a non-file is refused.
    fn read(&self, rel: &Path) -> Result<Option<Vec<u8>>, Error> {
        Tree::new(&self.root)
            .read_file(rel)
            .map_err(Error::ReadPackage)
    }

    /// The module files to load for `names`, dependencies first (paths relative to the
    /// package root). Names are matched as modprobe does (`-` and `_` are the same).
    pub fn modules(&self, names: &[String]) -> Result<Vec<String>, Error> {
        check_version(&self.version)?;
        let dir = Path::new(MODULES_DIR).join(&self.version);
        // depmod runs as root and follows links as it reads modules and writes its indexes
        // (`modules.dep.tmp -> /etc/...` would be written through): it may only see real
        // directories and files, in whichever directory it was built to use. `lib/modules/V`
        // must be there; `usr/lib/modules/V`, if it is not, is missing on a path of real
        // directories (so `usr -> /` is refused), and depmod finds nothing there.
        let tree = Tree::new(&self.root);
        for base in DEPMOD_DIRS {
            let candidate = Path::new(base).join(&self.version);
            let required = *base == MODULES_DIR;
            if required || tree.is_real_dir(&candidate).map_err(Error::ReadPackage)? {
                tree.refuse_links_below(&candidate, DEPMOD_SKIPS)
                    .map_err(Error::ReadPackage)?;
            }
        }
        let mut args = vec![
            std::ffi::OsString::from("-b"),
            self.root.clone().into_os_string(),
        ];
        // The version is checked, and `--` ends the options anyway.
        args.extend(["--".into(), self.version.clone().into()]);
        run("depmod", args, &[]).map_err(Error::Depmod)?;
        let dep_path = dir.join("modules.dep");
        let text = self.read(&dep_path)?.ok_or_else(|| Error::FindFile {
            path: self.root.join(&dep_path),
        })?;
        let text = String::from_utf8_lossy(&text);
        let deps: Vec<(String, Vec<String>)> = text
            .lines()
            .filter_map(|line| {
                let (module, rest) = line.split_once(':')?;
                Some((
                    module.to_owned(),
                    rest.split_whitespace().map(str::to_owned).collect(),
                ))
            })
            .collect();
        let normal = |s: &str| s.replace('-', "_");
        let by_name = |name: &str| {
            deps.iter().find(|(path, _)| {
                let file = path.rsplit('/').next().unwrap_or(path);
                let stem = file.split(".ko").next().unwrap_or(file);
                normal(stem) == normal(name)
            })
        };
        // Modules built into the kernel are listed in modules.builtin: nothing to load.
        let builtin = self.read(&dir.join("modules.builtin"))?.unwrap_or_default();
        let builtin = String::from_utf8_lossy(&builtin);
        let is_builtin = |name: &str| {
            builtin.lines().any(|line| {
                let file = line.rsplit('/').next().unwrap_or(line);
                normal(file.split(".ko").next().unwrap_or(file)) == normal(name)
            })
        };
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for name in names {
            let Some((path, _)) = by_name(name) else {
                if is_builtin(name) {
                    continue;
                }
                return Err(Error::FindModule {
                    version: self.version.clone(),
                    name: name.clone(),
                });
            };
            visit(path, &deps, &mut seen, &mut order);
        }
        let prefix = format!("{MODULES_DIR}/{}", self.version);
        Ok(order.into_iter().map(|p| format!("{prefix}/{p}")).collect())
    }
}

/// `boot/vmlinuz-VERSION`.
fn image_path(version: &str) -> PathBuf {
    Path::new("boot").join(format!("vmlinuz-{version}"))
}

/// Checks a kernel version (`uname -r`, a directory name under `lib/modules`): a letter or
/// digit, then letters, digits and `.+~_-`. So it is one path component (no `/`, never `..`)
/// and never reads as an option on depmod's command line.
fn check_version(version: &str) -> Result<(), Error> {
    let mut chars = version.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || ".+~_-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(Error::CheckVersion {
            version: version.to_owned(),
        })
    }
}

/// Depth-first: dependencies before the module that needs them.
fn visit(
    path: &str,
    deps: &[(String, Vec<String>)],
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(path.to_owned()) {
        return;
    }
    if let Some((_, needs)) = deps.iter().find(|(p, _)| p == path) {
        for need in needs {
            visit(need, deps, seen, order);
        }
    }
    order.push(path.to_owned());
}

/// Writes the initrd archive for the unpacked initrd layers in `tree`, the `modules` of `kernel`.
pub fn archive(
    tree: &Path,
    kernel: &Kernel,
    modules: &[String],
    epoch: u64,
) -> Result<Vec<u8>, Error> {
    let mut archive = Archive::with_mtime(u32::try_from(epoch).unwrap_or(u32::MAX));
    // Documentation, locales and the like are never needed to open the root.
    let skip = ["usr/share", "usr/lib/x86_64-linux-gnu/gconv", "etc"];
    add_dir(&mut archive, tree, tree, &skip)?;
    for module in modules {
        // Never following the package's links: a module could name a host file.
        let data = kernel
            .read(Path::new(module))?
            .ok_or_else(|| Error::FindFile {
                path: kernel.root.join(module),
            })?;
        archive
            .insert(module, Entry::File { mode: 0o644, data })
            .map_err(Error::WriteArchive)?;
    }
    let list = modules.join("\n") + "\n";
    archive
        .insert(
            "etc/slipway/modules",
            Entry::File {
                mode: 0o644,
                data: list.into_bytes(),
            },
        )
        .map_err(Error::WriteArchive)?;
    archive
        .insert(
            "init",
            Entry::File {
                mode: 0o755,
                data: INIT.as_bytes().to_vec(),
            },
        )
        .map_err(Error::WriteArchive)?;
    let mut out = Vec::new();
    archive.write(&mut out).map_err(Error::WriteArchive)?;
    Ok(out)
}

fn add_dir(archive: &mut Archive, root: &Path, dir: &Path, skip: &[&str]) -> Result<(), Error> {
    let read_err = |source| Error::ReadFile {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if skip.contains(&rel.as_str()) {
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(|source| Error::ReadFile {
            path: path.clone(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        let item = if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?;
            Entry::Symlink {
                target: target.to_string_lossy().into_owned(),
            }
        } else if meta.is_dir() {
            archive
                .insert(&rel, Entry::Dir { mode })
                .map_err(Error::WriteArchive)?;
            add_dir(archive, root, &path, skip)?;
            continue;
        } else {
            let data = fs::read(&path).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?;
            Entry::File { mode, data }
        };
        archive.insert(&rel, item).map_err(Error::WriteArchive)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_is_found_in_name_order_whatever_the_listing_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("boot")).unwrap();
        // Made in reverse name order; one version has modules but no kernel image.
        for version in ["6.1.0-9", "6.1.0-10", "6.1.0-1"] {
            fs::create_dir_all(root.join("lib/modules").join(version)).unwrap();
        }
        for version in ["6.1.0-9", "6.1.0-10"] {
            fs::write(root.join(format!("boot/vmlinuz-{version}")), "kernel").unwrap();
        }
        let kernel = Kernel::find(root).unwrap();
        assert_eq!(kernel.version, "6.1.0-10");
        assert_eq!(kernel.image, root.join("boot/vmlinuz-6.1.0-10"));
        fs::remove_file(root.join("boot/vmlinuz-6.1.0-10")).unwrap();
        assert_eq!(Kernel::find(root).unwrap().version, "6.1.0-9");
        fs::remove_file(root.join("boot/vmlinuz-6.1.0-9")).unwrap();
        assert!(matches!(Kernel::find(root), Err(Error::FindKernel)));
    }

    /// A kernel package tree in `dir/root` with `lib/modules/VERSION`, and a host file
    /// `dir/outside/secret` holding a marker.
    fn package(dir: &Path, version: &str) -> (PathBuf, PathBuf) {
        let root = dir.join("root");
        fs::create_dir_all(root.join("boot")).unwrap();
        fs::create_dir_all(root.join("lib/modules").join(version).join("kernel")).unwrap();
        let outside = dir.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), MARKER).unwrap();
        (root, outside)
    }

    const MARKER: &str = "host-secret-marker";

    #[test]
    fn a_kernel_image_linked_out_of_the_package_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = package(dir.path(), "6.1.0-10");
        std::os::unix::fs::symlink(outside.join("secret"), root.join("boot/vmlinuz-6.1.0-10"))
            .unwrap();
        let err = Kernel::find(&root).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("boot/vmlinuz-6.1.0-10"), "{message}");
        assert!(message.contains("symbolic link"), "{message}");
    }

    #[test]
    fn a_module_linked_out_of_the_package_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = package(dir.path(), "6.1.0-10");
        let module = "lib/modules/6.1.0-10/kernel/virtio_blk.ko";
        std::os::unix::fs::symlink(outside.join("secret"), root.join(module)).unwrap();
        let kernel = Kernel {
            version: "6.1.0-10".to_owned(),
            image: root.join("boot/vmlinuz-6.1.0-10"),
            root: root.clone(),
        };
        let initrd = dir.path().join("initrd");
        fs::create_dir(&initrd).unwrap();
        let result = archive(&initrd, &kernel, &[module.to_owned()], 0);
        let out = result.as_deref().unwrap_or_default();
        assert!(
            !out.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "the host file is in the initrd"
        );
        let message = result.unwrap_err().to_string();
        assert!(message.contains("virtio_blk.ko"), "{message}");
    }

    #[test]
    fn a_module_directory_linked_out_of_the_package_is_refused_before_depmod() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = package(dir.path(), "6.1.0-10");
        let host_dir = outside.join("dir");
        fs::create_dir(&host_dir).unwrap();
        std::os::unix::fs::symlink(&host_dir, root.join("lib/modules/6.1.0-11")).unwrap();
        let kernel = Kernel {
            version: "6.1.0-11".to_owned(),
            image: root.join("boot/vmlinuz-6.1.0-11"),
            root: root.clone(),
        };
        let err = kernel.modules(&[]).unwrap_err();
        assert!(
            fs::read_dir(&host_dir).unwrap().next().is_none(),
            "depmod wrote into the host directory"
        );
        let message = format!("{err}");
        assert!(message.contains("lib/modules/6.1.0-11"), "{message}");
    }

    #[test]
    fn depmod_never_writes_through_a_link_in_the_modules_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = package(dir.path(), "6.1.0-10");
        // depmod writes each index to NAME.tmp, then renames it.
        let index = root.join("lib/modules/6.1.0-10/modules.dep.tmp");
        std::os::unix::fs::symlink(outside.join("secret"), &index).unwrap();
        let kernel = Kernel {
            version: "6.1.0-10".to_owned(),
            image: root.join("boot/vmlinuz-6.1.0-10"),
            root: root.clone(),
        };
        let message = kernel.modules(&[]).unwrap_err().to_string();
        assert_eq!(fs::read_to_string(outside.join("secret")).unwrap(), MARKER);
        assert!(message.contains("modules.dep.tmp"), "{message}");
    }

    #[test]
    fn a_usr_linked_out_of_the_package_is_refused_before_depmod() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = package(dir.path(), "6.1.0-10");
        // A depmod built for `/usr/lib/modules` would work on `outside/lib/modules/6.1.0-10`.
        let host_dir = outside.join("lib/modules/6.1.0-10");
        fs::create_dir_all(&host_dir).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("usr")).unwrap();
        let kernel = Kernel {
            version: "6.1.0-10".to_owned(),
            image: root.join("boot/vmlinuz-6.1.0-10"),
            root: root.clone(),
        };
        let message = kernel.modules(&[]).unwrap_err().to_string();
        assert!(
            fs::read_dir(&host_dir).unwrap().next().is_none(),
            "depmod wrote into the host directory"
        );
        assert!(message.contains("root/usr"), "{message}");
        // Nor below a real `usr`: a link in `usr/lib/modules/VERSION` is refused as well.
        fs::remove_file(root.join("usr")).unwrap();
        fs::create_dir_all(root.join("usr/lib/modules/6.1.0-10")).unwrap();
        let index = root.join("usr/lib/modules/6.1.0-10/modules.dep.tmp");
        std::os::unix::fs::symlink(outside.join("secret"), &index).unwrap();
        let message = kernel.modules(&[]).unwrap_err().to_string();
        assert_eq!(fs::read_to_string(outside.join("secret")).unwrap(), MARKER);
        assert!(message.contains("modules.dep.tmp"), "{message}");
    }

    #[test]
    fn a_name_under_lib_modules_that_is_no_version_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (root, _) = package(dir.path(), "6.1.0-10");
        fs::write(root.join("boot/vmlinuz-6.1.0-10"), "kernel").unwrap();
        fs::write(root.join("lib/modules/.keep"), "").unwrap();
        assert_eq!(Kernel::find(&root).unwrap().version, "6.1.0-10");
    }

    #[test]
    fn a_kernel_version_that_reads_as_an_option_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (root, _) = package(dir.path(), "-a");
        fs::write(root.join("boot/vmlinuz--a"), "kernel").unwrap();
        // Skipped, never passed on: with no other version, there is no kernel.
        let err = Kernel::find(&root).unwrap_err();
        assert!(matches!(err, Error::FindKernel), "{err}");
        let kernel = Kernel {
            version: "-a".to_owned(),
            image: root.join("boot/vmlinuz--a"),
            root,
        };
        let message = kernel.modules(&[]).unwrap_err().to_string();
        assert!(message.contains("\"-a\""), "{message}");
    }
}
