//! What the manifest records about a build's inputs: component and package versions, every
//! input with its digest, the files the recipe placed, and the tool packages that shaped the
//! bytes.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::recipe::{self, Content, Filesystem, Recipe};
use crate::sources::{Artifact, Fetched, hex};
use images::manifest;

/// Versions of the parts that matter to operators: the kernel, the packages the recipe names,
/// Kubernetes.
pub(super) fn components(
    recipe: &Recipe,
    inputs: &BTreeMap<String, Fetched>,
    kernel_version: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert("kernel".to_owned(), kernel_version.to_owned());
    for fetched in inputs.values() {
        match &fetched.artifact {
            Artifact::Deb { version, .. } => {
                out.insert(fetched.name.clone(), version.clone());
            }
            Artifact::DebianTree { packages, .. } => {
                let asked: Vec<&String> = recipe
                    .sources
                    .get(&fetched.name)
                    .map(|s| match &s.kind {
                        recipe::SourceKind::Debian { packages, .. } => packages.iter().collect(),
                        _ => Vec::new(),
                    })
                    .unwrap_or_default();
                for line in packages {
                    if let Some((name, version)) = line.split_once(' ')
                        && asked.iter().any(|a| *a == name)
                    {
                        out.insert(name.to_owned(), version.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    if recipe.image.kubernetes.get_ref() != "none" {
        out.insert(
            "kubernetes".to_owned(),
            recipe.image.kubernetes.get_ref().clone(),
        );
    }
    out
}

/// The versions of the tool packages that shaped this image's bytes: dpkg (unpacking),
/// the root's mkfs, cryptsetup-bin (veritysetup), kmod (depmod), dosfstools and mtools (the
/// ESP), and mmdebstrap when a source is a Debian tree.
pub(super) fn tools(
    recipe: &Recipe,
    toolchain: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mkfs = match recipe.root.filesystem {
        Filesystem::Erofs => "erofs-utils",
        Filesystem::Ext4 => "e2fsprogs",
    };
    let debian = recipe
        .sources
        .values()
        .any(|s| matches!(s.kind, recipe::SourceKind::Debian { .. }));
    let used = [
        "dpkg",
        mkfs,
        "cryptsetup-bin",
        "kmod",
        "dosfstools",
        "mtools",
    ]
    .into_iter()
    .chain(debian.then_some("mmdebstrap"));
    used.filter_map(|p| Some((p.to_owned(), toolchain.get(p)?.clone())))
        .collect()
}

/// Every input with its kind, digest and origin.
pub(super) fn inputs(inputs: &BTreeMap<String, Fetched>) -> Vec<manifest::Input> {
    inputs
        .values()
        .map(|f| {
            let (kind, origin, version) = match &f.artifact {
                Artifact::Deb {
                    package, version, ..
                } => ("deb", package.clone(), Some(version.clone())),
                Artifact::DebianTree { .. } => ("debian", "mmdebstrap".to_owned(), None),
                Artifact::File(p) | Artifact::Tar(p) | Artifact::Dir(p) => (
                    "file",
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    None,
                ),
            };
            manifest::Input {
                name: f.name.clone(),
                kind: kind.to_owned(),
                sha256: f.sha256.clone(),
                origin,
                version,
            }
        })
        .collect()
}

/// Every Debian package in the root, the initrd, the kernel and the stub, as name → version.
pub(super) fn packages(
    recipe: &Recipe,
    inputs: &BTreeMap<String, Fetched>,
) -> BTreeMap<String, String> {
    let used: Vec<&String> = recipe
        .root
        .layers
        .iter()
        .map(|l| &l.source)
        .chain(&recipe.kernel.initrd)
        .map(|s| s.get_ref())
        .chain([recipe.kernel.source.get_ref(), recipe.kernel.stub.get_ref()])
        .collect();
    let mut out = BTreeMap::new();
    for name in used {
        match &inputs[name].artifact {
            Artifact::Deb {
                package, version, ..
            } => {
                out.insert(package.clone(), version.clone());
            }
            Artifact::DebianTree { packages, .. } => {
                for line in packages {
                    if let Some((n, v)) = line.split_once(' ') {
                        out.insert(n.to_owned(), v.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The files the recipe placed, as image path → what it holds, mode and owner.
pub(super) fn placed_files(
    recipe: &Recipe,
    inputs: &BTreeMap<String, Fetched>,
) -> BTreeMap<String, String> {
    recipe
        .root
        .files
        .iter()
        .map(|f| {
            let what = match &f.content {
                Content::Source(name) => inputs[name].sha256.clone(),
                Content::Text(text) => hex(&Sha256::digest(text.as_bytes())),
                Content::Symlink(target) => format!("-> {target}"),
                Content::Dir => "dir".to_owned(),
            };
            (
                f.path.as_str().to_owned(),
                format!("{what} {:04o} {}:{}", f.mode, f.uid, f.gid),
            )
        })
        .collect()
}
