//! The initrd: the recipe's initrd layers (busybox, dmsetup and its libraries), the kernel
//! modules it names with everything they depend on, and Slipway's `/init` (init.sh), which
//! opens the dm-verity root. Written as a deterministic newc cpio archive.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cpio::{self, Archive, Entry};

use super::fs::run;

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
    /// The EFI-stub kernel image.
    pub image: PathBuf,
    /// The unpacked package's root (holding `lib/modules/VERSION`).
    pub root: PathBuf,
}

impl Kernel {
    /// Finds the kernel in an unpacked kernel package at `root`: the first version, in name
    /// order (not the directory's listing order, which differs between hosts), under
    /// `lib/modules` that has a `boot/vmlinuz-VERSION`.
    pub fn find(root: &Path) -> Result<Kernel, Error> {
        let modules = root.join("lib/modules");
        let mut versions: Vec<String> = fs::read_dir(&modules)
            .map_err(|_| Error::FindKernel)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        versions.sort();
        let (version, image) = versions
            .into_iter()
            .map(|v| {
                let image = root.join("boot").join(format!("vmlinuz-{v}"));
                (v, image)
            })
            .find(|(_, image)| image.is_file())
            .ok_or(Error::FindKernel)?;
        Ok(Kernel {
            version,
            image,
            root: root.to_owned(),
        })
    }

    /// The module files to load for `names`, dependencies first (paths relative to the
    /// package root). Names are matched as modprobe does (`-` and `_` are the same).
    pub fn modules(&self, names: &[String]) -> Result<Vec<String>, Error> {
        run(
            "depmod",
            ["-b", &self.root.to_string_lossy(), &self.version],
            &[],
        )
        .map_err(Error::Depmod)?;
        let dep_path = self
            .root
            .join("lib/modules")
            .join(&self.version)
            .join("modules.dep");
        let text = fs::read_to_string(&dep_path).map_err(|source| Error::ReadFile {
            path: dep_path,
            source,
        })?;
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
        let builtin_path = self
            .root
            .join("lib/modules")
            .join(&self.version)
            .join("modules.builtin");
        let builtin = fs::read_to_string(&builtin_path).unwrap_or_default();
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
        let prefix = format!("lib/modules/{}", self.version);
        Ok(order.into_iter().map(|p| format!("{prefix}/{p}")).collect())
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
        let path = kernel.root.join(module);
        let data = fs::read(&path).map_err(|source| Error::ReadFile { path, source })?;
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
}
