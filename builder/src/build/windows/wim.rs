//! The base image as wimlib sees it: its images, its paths, files read out of it, and the
//! working copy the recipe's files are added to. Every call is `wimlib-imagex`; nothing is
//! mounted.

use std::collections::HashMap;
use std::path::Path;

use super::{Error, pinned_time};
use crate::build::fs;
use crate::recipe::windows::Select;

/// One image of a WIM, from `wiminfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// 1-based index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Bytes of file data it holds, uncompressed.
    pub total_bytes: u64,
}

/// The images `wiminfo` lists.
pub fn images(wim: &Path) -> Result<Vec<ImageInfo>, Error> {
    let text = fs::run("wiminfo", [wim.as_os_str()], &[])?;
    Ok(parse_info(&text))
}

/// `wiminfo`'s "Available Images" blocks.
fn parse_info(text: &str) -> Vec<ImageInfo> {
    let mut images = Vec::new();
    let mut current: Option<ImageInfo> = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Index" => {
                images.extend(current.take());
                if let Ok(index) = value.parse() {
                    current = Some(ImageInfo {
                        index,
                        name: String::new(),
                        total_bytes: 0,
                    });
                }
            }
            "Name" => {
                if let Some(image) = &mut current {
                    value.clone_into(&mut image.name);
                }
            }
            "Total Bytes" => {
                if let Some(image) = &mut current {
                    image.total_bytes = value.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    images.extend(current);
    images
}

/// The image `select` names.
pub fn select(wim: &Path, select: &Select) -> Result<ImageInfo, Error> {
    let images = images(wim)?;
    // A VHDX base was captured as image 1 before the build came here.
    let found = images.iter().find(|i| match select {
        Select::Index(n) => i.index == *n,
        Select::Edition(name) => i.name == *name,
        Select::Vhdx => i.index == 1,
    });
    found.cloned().ok_or_else(|| Error::SelectImage {
        wim: wim.to_owned(),
        select: select.to_string(),
        available: images
            .iter()
            .map(|i| format!("{} {:?}", i.index, i.name))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Every path of image `index`, upper-cased (NTFS compares names ignoring case), refusing a
/// name that could lead out of the volume when extracted.
pub fn paths(wim: &Path, index: u32) -> Result<Listing, Error> {
    let text = fs::run(
        "wimlib-imagex",
        ["dir".as_ref(), wim.as_os_str(), index.to_string().as_ref()],
        &[],
    )?;
    let mut listing = Listing::default();
    for line in text.lines().filter(|l| !l.is_empty() && *l != "/") {
        let bad = !line.starts_with('/')
            || line[1..]
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c.contains(['\\', '\0']));
        if bad {
            return Err(Error::EscapePath {
                path: line.to_owned(),
                why: "a name in the base image is empty, `.`, `..` or holds a backslash".into(),
            });
        }
        // The first spelling wins, as the first entry wins on NTFS.
        listing
            .spellings
            .entry(line.to_uppercase())
            .or_insert_with(|| line.to_owned());
    }
    Ok(listing)
}

/// The paths of an image: upper-cased (as NTFS compares names) → as the image spells them.
/// A map, not a list: a real Windows image has hundreds of thousands of paths, looked up once
/// per component of every staged entry.
#[derive(Debug, Default)]
pub struct Listing {
    /// Folded path → spelled path.
    pub spellings: HashMap<String, String>,
}

impl Listing {
    /// Whether `path` (`/A/B`) exists, ignoring case.
    pub fn has(&self, path: &str) -> bool {
        self.spellings.contains_key(&path.to_uppercase())
    }

    /// `path` spelled as the image spells its existing leading components.
    pub fn spelled(&self, path: &str) -> String {
        let mut out = String::new();
        for part in path.trim_start_matches('/').split('/') {
            let candidate = format!("{out}/{part}");
            out = match self.spellings.get(&candidate.to_uppercase()) {
                Some(existing) => existing.clone(),
                None => candidate,
            };
        }
        out
    }
}

/// The bytes of file `path` of image `index` (never a link: wimlib writes a file's data).
pub fn read(wim: &Path, index: u32, path: &str, to: &Path) -> Result<(), Error> {
    let index = index.to_string();
    let args: [&std::ffi::OsStr; 6] = [
        "extract".as_ref(),
        wim.as_os_str(),
        index.as_ref(),
        path.as_ref(),
        "--to-stdout".as_ref(),
        "--no-globs".as_ref(),
    ];
    super::read_out("wimlib-imagex", args, path, to)
}

/// Extracts directory `path` of image `index` under `dest` (its own name kept).
pub fn extract_dir(wim: &Path, index: u32, path: &str, dest: &Path) -> Result<(), Error> {
    fs::run(
        "wimlib-imagex",
        [
            "extract".as_ref(),
            wim.as_os_str(),
            index.to_string().as_ref(),
            path.as_ref(),
            format!("--dest-dir={}", dest.display()).as_ref(),
            "--no-globs".as_ref(),
            "--no-acls".as_ref(),
        ],
        &[],
    )?;
    Ok(())
}

/// Copies image `index` of `base` alone into `out` (its resources copied, not recompressed).
pub fn export(base: &Path, index: u32, out: &Path, epoch: u64) -> Result<(), Error> {
    pinned_time(
        "wimlib-imagex",
        [
            "export".as_ref(),
            base.as_os_str(),
            index.to_string().as_ref(),
            out.as_os_str(),
        ],
        epoch,
    )
}

/// Adds the tree `staging` to the root of image 1 of `wim`: its directories merge into those
/// of the image, its files replace any of the same name.
pub fn add_tree(wim: &Path, staging: &Path, epoch: u64) -> Result<(), Error> {
    // wimupdate's command language quotes with `"`: a path holding one cannot be said.
    if staging.to_string_lossy().contains('"') {
        return Err(Error::EscapePath {
            path: staging.display().to_string(),
            why: "the cache directory's path holds a double quote; use another --cache".into(),
        });
    }
    pinned_time(
        "wimlib-imagex",
        [
            "update".as_ref(),
            wim.as_os_str(),
            "1".as_ref(),
            format!("--command=add \"{}\" \"/\"", staging.display()).as_ref(),
        ],
        epoch,
    )
}

/// Applies image 1 of `wim` to the NTFS volume in file `volume` (libntfs-3g: no mount).
pub fn apply(wim: &Path, volume: &Path, epoch: u64) -> Result<(), Error> {
    pinned_time(
        "wimlib-imagex",
        [
            "apply".as_ref(),
            wim.as_os_str(),
            "1".as_ref(),
            volume.as_os_str(),
        ],
        epoch,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiminfo_blocks_are_read() {
        let text = "WIM Information:\n----------------\nPath: x\nImage Count: 2\n\n\
                    Available Images:\n-----------------\nIndex: 1\nName: Core\n\
                    Total Bytes: 100\n\nIndex: 2\nName: Desktop Experience\nTotal Bytes: 7\n";
        assert_eq!(
            parse_info(text),
            vec![
                ImageInfo {
                    index: 1,
                    name: "Core".into(),
                    total_bytes: 100
                },
                ImageInfo {
                    index: 2,
                    name: "Desktop Experience".into(),
                    total_bytes: 7
                }
            ]
        );
    }

    #[test]
    fn new_paths_take_the_spelling_of_existing_directories() {
        let listing = Listing {
            spellings: [
                ("/WINDOWS".to_owned(), "/Windows".to_owned()),
                (
                    "/WINDOWS/SYSTEM32".to_owned(),
                    "/Windows/System32".to_owned(),
                ),
            ]
            .into(),
        };
        assert_eq!(
            listing.spelled("/windows/system32/x.exe"),
            "/Windows/System32/x.exe"
        );
        assert_eq!(listing.spelled("/k/kubelet.exe"), "/k/kubelet.exe");
        assert!(listing.has("/WINDOWS/system32"));
    }
}
