//! Filesystem images made by the reference tools (mkfs.erofs, mkfs.ext4, mkfs.vfat + mtools,
//! veritysetup), each called so that the same tree gives the same bytes: fixed timestamps,
//! UUIDs and salts derived from the recipe, no extended attributes from the build host.
//!
//! What each tool would otherwise take from the build host, and how it is kept out:
//! - mkfs.erofs: `-T` gives every inode the epoch (with `SOURCE_DATE_EPOCH` set it ignores the
//!   tree's times); it lists directories sorted. The root directory's mode is the staging
//!   directory's, which the caller sets.
//! - mkfs.ext4 `-d` (e2fsprogs 1.47.0) sorts directories too, but copies each file's atime,
//!   mtime and ctime, and no system call can set a ctime: every populated inode's times (and,
//!   for builds not run as root, owners) are rewritten with debugfs afterwards ([`ext4`]).
//!   Whether it marks the inode tables zeroed depends on whether the output file existed;
//!   `nodiscard,lazy_itable_init=1` on a new empty file makes that fixed. It also copies every
//!   extended attribute of the tree (SELinux labels, ACLs inherited from the cache directory);
//!   `no_copy_xattrs` keeps them out before they take an inode's space or an xattr block.
//!   Stripping them from the tree instead would not do: an SELinux host reports a label on
//!   every file whether or not one can be removed.
//! - mkfs.vfat `--invariant` and mtools honour `SOURCE_DATE_EPOCH`; copied files get the epoch
//!   as their modification time first.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use images::guid::Guid;

/// Errors making filesystems.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool could not be started.
    #[error("cannot run {tool} (run ./scripts/setup to install the tools Slipway needs)")]
    RunTool {
        /// The program.
        tool: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A tool failed.
    #[error("{tool} failed: {stderr}")]
    FailTool {
        /// The program.
        tool: String,
        /// What it said.
        stderr: String,
    },
    /// A file could not be prepared.
    #[error("cannot prepare {path}")]
    PrepareFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// veritysetup printed no root hash.
    #[error("veritysetup printed no root hash")]
    ReadRootHash,
    /// dumpe2fs printed a listing this build does not understand.
    #[error("cannot list the inodes of {image}: dumpe2fs printed no {what}")]
    ListInodes {
        /// The ext4 image.
        image: PathBuf,
        /// What was missing or malformed.
        what: &'static str,
    },
}

/// Runs `tool` with `args`, returning its standard output.
pub fn run<I, S>(tool: &str, args: I, env: &[(&str, String)]) -> Result<String, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(tool);
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().map_err(|source| Error::RunTool {
        tool: tool.to_owned(),
        source,
    })?;
    if !output.status.success() {
        return Err(Error::FailTool {
            tool: tool.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The Debian packages whose tools make the filesystems, the initrd and Debian trees, and the
/// Windows volume (wimlib, ntfs-3g, hivex, faketime).
pub const TOOL_PACKAGES: &[&str] = &[
    "cryptsetup-bin",
    "dosfstools",
    "dpkg",
    "e2fsprogs",
    "erofs-utils",
    "faketime",
    "kmod",
    "libhivex-bin",
    "libwin-hivex-perl",
    "mmdebstrap",
    "mtools",
    "ntfs-3g",
    "wimtools",
];

/// What a tool package's version reads as when dpkg does not know the package.
pub const UNKNOWN_VERSION: &str = "unknown";

/// The installed version of every package in [`TOOL_PACKAGES`] ([`UNKNOWN_VERSION`] when
/// dpkg does not know it). Part of every stage key, so a tool upgrade (which may change the
/// bytes it writes) invalidates the stages it made; recorded in the manifest.
pub fn toolchain() -> BTreeMap<String, String> {
    let mut versions: BTreeMap<String, String> = TOOL_PACKAGES
        .iter()
        .map(|p| ((*p).to_owned(), UNKNOWN_VERSION.to_owned()))
        .collect();
    // dpkg-query fails when one package is missing but still prints the others.
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${Version}\n"])
        .args(TOOL_PACKAGES)
        .output();
    if let Ok(output) = output {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some((package, version)) = line.split_once(' ')
                && let Some(slot) = versions.get_mut(package)
            {
                version.clone_into(slot);
            }
        }
    }
    versions
}

/// Makes an EROFS image of `tree` at `out`. `all_root` records every file as owned by root
/// (for builds that do not run as root, whose staging tree cannot hold other owners).
pub fn erofs(tree: &Path, out: &Path, uuid: Guid, epoch: u64, all_root: bool) -> Result<(), Error> {
    let owners: &[&str] = if all_root { &["--all-root"] } else { &[] };
    run(
        "mkfs.erofs",
        owners.iter().map(OsStr::new).chain([
            format!("-T{epoch}").as_ref(),
            format!("-U{}", uuid.to_string().to_lowercase()).as_ref(),
            // No extended attributes: the build host's labels do not belong in the image.
            OsStr::new("-x-1"),
            OsStr::new("--quiet"),
            out.as_os_str(),
            tree.as_os_str(),
        ]),
        &[("SOURCE_DATE_EPOCH", epoch.to_string())],
    )?;
    Ok(())
}

/// Makes an ext4 image of `tree` at `out`, sized for its content. Every inode the tree
/// populated gets the epoch as its times, and with `all_root` root as its owner (for builds
/// that do not run as root, whose staging tree cannot hold other owners).
pub fn ext4(tree: &Path, out: &Path, uuid: Guid, epoch: u64, all_root: bool) -> Result<(), Error> {
    let content = tree_size(tree);
    // Metadata, journal and slack: a third more plus 16 MiB, in whole MiB.
    let size = (content + content / 3 + (16 << 20)).next_multiple_of(1 << 20);
    let uuid = uuid.to_string().to_lowercase();
    // A new, empty file: what mke2fs finds there must not decide what it writes.
    std::fs::File::create(out).map_err(|source| Error::PrepareFile {
        path: out.to_owned(),
        source,
    })?;
    let env = [
        ("E2FSPROGS_FAKE_TIME", epoch.to_string()),
        ("SOURCE_DATE_EPOCH", epoch.to_string()),
    ];
    run(
        "mkfs.ext4",
        [
            "-q",
            "-F",
            "-b",
            "4096",
            "-U",
            &uuid,
            "-E",
            // no_copy_xattrs: the build host's labels and ACLs do not belong in the image.
            &format!("hash_seed={uuid},root_owner=0:0,nodiscard,lazy_itable_init=1,no_copy_xattrs"),
            "-d",
            &tree.to_string_lossy(),
            &out.to_string_lossy(),
            &format!("{}k", size >> 10),
        ],
        &env,
    )?;
    let listing = run("dumpe2fs", [out.as_os_str()], &env)?;
    let inodes = populated_inodes(&listing).map_err(|what| Error::ListInodes {
        image: out.to_owned(),
        what,
    })?;
    let mut commands = String::new();
    for inode in inodes {
        for field in ["atime", "mtime", "ctime", "crtime"] {
            let _ = writeln!(commands, "set_inode_field <{inode}> {field} @{epoch}");
        }
        if all_root {
            for field in ["uid", "gid"] {
                let _ = writeln!(commands, "set_inode_field <{inode}> {field} 0");
            }
        }
    }
    debugfs_write(out, &commands, &env)
}

/// Runs debugfs `commands` (one a line) on `image`, writable. debugfs exits 0 whatever its
/// commands do and reports their failures on standard error after its banner: any other line
/// there is a failure.
fn debugfs_write(image: &Path, commands: &str, env: &[(&str, String)]) -> Result<(), Error> {
    let dir = image.parent().unwrap_or(Path::new("."));
    let prepare = |source| Error::PrepareFile {
        path: dir.to_owned(),
        source,
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(prepare)?;
    std::io::Write::write_all(&mut file, commands.as_bytes()).map_err(prepare)?;
    let mut command = Command::new("debugfs");
    command
        .arg("-w")
        .arg("-f")
        .arg(file.path())
        .arg(image)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let output = command.output().map_err(|source| Error::RunTool {
        tool: "debugfs".to_owned(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !output.status.success() || !complaints.is_empty() {
        return Err(Error::FailTool {
            tool: "debugfs".to_owned(),
            stderr: complaints.join("\n"),
        });
    }
    Ok(())
}

/// The inodes a populated ext4 image uses besides the reserved ones (but with the root
/// directory, inode 2), from dumpe2fs's listing of each group's free inodes. Errs with what it
/// could not find.
fn populated_inodes(listing: &str) -> Result<Vec<u64>, &'static str> {
    let header = |name: &str| {
        listing
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let count = header("Inode count:").ok_or("inode count")?;
    let per_group = header("Inodes per group:")
        .filter(|n| *n > 0)
        .ok_or("inodes per group")?;
    let first = header("First inode:").ok_or("first inode")?;
    let groups = count.div_ceil(per_group);
    let mut free_lists: Vec<Option<&str>> = Vec::new();
    free_lists.resize(usize::try_from(groups).map_err(|_| "group count")?, None);
    let mut group: Option<usize> = None;
    for line in listing.lines() {
        // "Group 3: (Blocks ...)" starts a group; "Group descriptor size:" does not.
        let number = line
            .strip_prefix("Group ")
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(n, _)| n.parse::<usize>().ok());
        if let Some(n) = number {
            if n >= free_lists.len() {
                return Err("group number within the inode count");
            }
            group = Some(n);
        } else if let Some(list) = line.trim_start().strip_prefix("Free inodes:")
            && let Some(g) = group.take()
        {
            free_lists[g] = Some(list);
        }
    }
    let mut used = Vec::new();
    for (g, list) in (0u64..).zip(&free_lists) {
        let list = list.ok_or("free inode list for every group")?;
        let start = g * per_group + 1;
        let end = ((g + 1) * per_group).min(count);
        let mut free = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (lo, hi) = item.split_once('-').unwrap_or((item, item));
            let range = lo.parse::<u64>().ok().zip(hi.parse::<u64>().ok());
            let (lo, hi) = range
                .filter(|(lo, hi)| start <= *lo && lo <= hi && *hi <= end)
                .ok_or("free inode range within its group")?;
            free.push((lo, hi));
        }
        free.sort_unstable();
        let mut next = start;
        for (lo, hi) in free.into_iter().chain([(end + 1, end + 1)]) {
            used.extend((next..lo).filter(|i| *i == ROOT_INODE || *i >= first));
            next = next.max(hi + 1);
        }
    }
    Ok(used)
}

/// The ext4 root directory's inode.
const ROOT_INODE: u64 = 2;

fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => {
                    total += 4096;
                    stack.push(entry.path());
                }
                Ok(m) => total += m.len().next_multiple_of(4096),
                Err(_) => {}
            }
        }
    }
    total
}

/// The result of `veritysetup format`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verity {
    /// Root hash, lowercase hex.
    pub root_hash: String,
    /// Salt, lowercase hex.
    pub salt: String,
    /// Data blocks (4096 bytes) covered.
    pub data_blocks: u64,
}

/// Writes the dm-verity hash tree of `data` (whose size is a multiple of 4096) into `hash`.
pub fn verity(data: &Path, hash: &Path, salt: &str, uuid: Guid) -> Result<Verity, Error> {
    let size = std::fs::metadata(data)
        .map_err(|source| Error::PrepareFile {
            path: data.to_owned(),
            source,
        })?
        .len();
    let stdout = run(
        "veritysetup",
        [
            OsStr::new("format"),
            OsStr::new("--data-block-size=4096"),
            OsStr::new("--hash-block-size=4096"),
            format!("--salt={salt}").as_ref(),
            format!("--uuid={}", uuid.to_string().to_lowercase()).as_ref(),
            data.as_os_str(),
            hash.as_os_str(),
        ],
        &[],
    )?;
    let root_hash = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_owned())
        .ok_or(Error::ReadRootHash)?;
    Ok(Verity {
        root_hash,
        salt: salt.to_owned(),
        data_blocks: size / 4096,
    })
}

/// Makes a FAT32 EFI system partition image of `size` bytes holding `files` (destination
/// `::/EFI/BOOT/BOOTX64.EFI`-style paths, host sources).
pub fn vfat(
    out: &Path,
    size: u64,
    volume_id: u32,
    files: &[(&str, &Path)],
    epoch: u64,
) -> Result<(), Error> {
    let prepare = |source| Error::PrepareFile {
        path: out.to_owned(),
        source,
    };
    let file = std::fs::File::create(out).map_err(prepare)?;
    file.set_len(size).map_err(prepare)?;
    drop(file);
    let env = [("SOURCE_DATE_EPOCH", epoch.to_string())];
    run(
        "mkfs.vfat",
        [
            "-F",
            "32",
            "-n",
            "ESP",
            "-i",
            &format!("{volume_id:08X}"),
            "--invariant",
            &out.to_string_lossy(),
        ],
        &env,
    )?;
    let image = out.to_string_lossy();
    let mut made = std::collections::BTreeSet::new();
    for (dest, src) in files {
        // Parent directories first (mmd), then the file with its timestamp set to the epoch.
        let parts: Vec<&str> = dest.trim_start_matches("::/").split('/').collect();
        for depth in 1..parts.len() {
            let dir = format!("::/{}", parts[..depth].join("/"));
            if made.insert(dir.clone()) {
                run("mmd", ["-i", &image, &dir], &env)?;
            }
        }
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
        std::fs::File::options()
            .write(true)
            .open(src)
            .and_then(|f| f.set_modified(when))
            .map_err(|source| Error::PrepareFile {
                path: src.to_path_buf(),
                source,
            })?;
        run(
            "mcopy",
            ["-m", "-i", &image, &src.to_string_lossy(), dest],
            &env,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const LISTING: &str = "\
Inode count:              20
Free inodes:              9
Inodes per group:         10
First inode:              11
Group descriptor size:    64

Group 0: (Blocks 0-4999) csum 0x8c1b
  Free inodes: 
Group 1: (Blocks 5000-9999) csum 0x1234 [INODE_UNINIT]
  Free inodes: 13-14, 16-20
";

    #[test]
    fn populated_inodes_are_what_no_group_lists_as_free() {
        assert_eq!(populated_inodes(LISTING), Ok(vec![2, 11, 12, 15]));
    }

    #[test]
    fn listings_not_understood_are_refused() {
        let missing_group = LISTING.replace("  Free inodes: 13-14, 16-20\n", "");
        assert_eq!(
            populated_inodes(&missing_group),
            Err("free inode list for every group")
        );
        let outside = LISTING.replace("13-14", "3-14");
        assert_eq!(
            populated_inodes(&outside),
            Err("free inode range within its group")
        );
        let extra_group = format!("{LISTING}Group 2: (Blocks 1-2)\n  Free inodes: 21\n");
        assert_eq!(
            populated_inodes(&extra_group),
            Err("group number within the inode count")
        );
        assert_eq!(
            populated_inodes(&LISTING.replace("First inode:", "First:")),
            Err("first inode")
        );
    }

    /// A small tree whose files are made in `order`, with explicit modes.
    fn tree(dir: &Path, order: &[&str]) -> PathBuf {
        let root = dir.join("tree");
        std::fs::create_dir_all(root.join("etc/deep")).unwrap();
        for name in order {
            std::fs::write(root.join("etc").join(name), name).unwrap();
        }
        std::fs::write(root.join("etc/deep/file"), "deep").unwrap();
        for (path, mode) in [("", 0o755), ("etc", 0o755), ("etc/deep", 0o700)] {
            std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        for name in order {
            std::fs::set_permissions(
                root.join("etc").join(name),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
        }
        std::fs::set_permissions(
            root.join("etc/deep/file"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        root
    }

    fn debugfs_stat(image: &Path, path: &str) -> String {
        run(
            "debugfs",
            [
                OsStr::new("-R"),
                format!("stat {path}").as_ref(),
                image.as_os_str(),
            ],
            &[],
        )
        .unwrap()
    }

    #[test]
    fn ext4_images_do_not_depend_on_when_or_in_which_order_the_tree_was_made() {
        let uuid = Guid::derived("slipway.test.ext4", b"same");
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let tree_a = tree(&a, &["one", "two", "three"]);
        ext4(&tree_a, &a.join("root.img"), uuid, 315_532_800, false).unwrap();
        // A second later, in another order, with the output file already there: another
        // ctime, mtime and atime for every file, and a discardable output.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let tree_b = tree(&b, &["three", "two", "one"]);
        std::fs::write(b.join("root.img"), vec![0xA5; 1 << 20]).unwrap();
        ext4(&tree_b, &b.join("root.img"), uuid, 315_532_800, false).unwrap();
        let (image_a, image_b) = (
            std::fs::read(a.join("root.img")).unwrap(),
            std::fs::read(b.join("root.img")).unwrap(),
        );
        assert!(
            image_a == image_b,
            "two ext4 images of the same tree differ"
        );
        let stat = debugfs_stat(&a.join("root.img"), "/etc/deep/file");
        for field in ["ctime", "atime", "mtime", "crtime"] {
            assert!(
                stat.contains(&format!("{field}: 0x12cea600:")),
                "{field} is not the epoch:\n{stat}"
            );
        }
        assert!(stat.contains("Mode:  0600"), "{stat}");
        // debugfs left a consistent filesystem.
        run(
            "e2fsck",
            [OsStr::new("-fn"), a.join("root.img").as_os_str()],
            &[],
        )
        .unwrap();
    }

    fn debugfs_ea_list(image: &Path, path: &str) -> String {
        run(
            "debugfs",
            [
                OsStr::new("-R"),
                format!("ea_list {path}").as_ref(),
                image.as_os_str(),
            ],
            &[],
        )
        .unwrap()
    }

    #[test]
    fn ext4_images_hold_no_extended_attributes_of_the_build_host() {
        let uuid = Guid::derived("slipway.test.ext4", b"xattrs");
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let labelled = tree(&a, &["one"]);
        // What a host label or an inherited ACL would leave on the staging tree.
        for path in [labelled.join("etc/one"), labelled.clone()] {
            rustix::fs::lsetxattr(
                &path,
                "user.test",
                b"hostvalue",
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
        }
        ext4(&labelled, &a.join("root.img"), uuid, 315_532_800, false).unwrap();
        for path in ["/etc/one", "/"] {
            let listing = debugfs_ea_list(&a.join("root.img"), path);
            assert!(
                !listing.contains("user.test"),
                "{path} kept an extended attribute of the build host:\n{listing}"
            );
        }
        let plain = tree(&b, &["one"]);
        ext4(&plain, &b.join("root.img"), uuid, 315_532_800, false).unwrap();
        assert!(
            std::fs::read(a.join("root.img")).unwrap()
                == std::fs::read(b.join("root.img")).unwrap(),
            "extended attributes of the staging tree changed the ext4 image"
        );
    }

    #[test]
    fn ext4_all_root_makes_every_owner_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = tree(dir.path(), &["one"]);
        let owned = root.join("etc/one");
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::lchown(&owned, Some(1000), Some(1000)).unwrap();
        }
        let uuid = Guid::derived("slipway.test.ext4", b"owners");
        let kept = dir.path().join("kept.img");
        ext4(&root, &kept, uuid, 315_532_800, false).unwrap();
        assert!(!debugfs_stat(&kept, "/etc/one").contains("User:     0   Group:     0"));
        let all_root = dir.path().join("all-root.img");
        ext4(&root, &all_root, uuid, 315_532_800, true).unwrap();
        for path in ["/etc/one", "/etc/deep/file"] {
            let stat = debugfs_stat(&all_root, path);
            assert!(stat.contains("User:     0   Group:     0"), "{stat}");
        }
    }
}
