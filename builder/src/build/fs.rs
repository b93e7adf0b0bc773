//! Filesystem images made by the reference tools (mkfs.erofs, mkfs.ext4, mkfs.vfat + mtools,
//! veritysetup), each called so that the same tree gives the same bytes: fixed timestamps,
//! UUIDs and salts derived from the recipe, no extended attributes from the build host.

use std::ffi::OsStr;
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

/// The Debian packages whose tools make the filesystems and the initrd.
const TOOL_PACKAGES: &[&str] = &[
    "erofs-utils",
    "e2fsprogs",
    "cryptsetup-bin",
    "dosfstools",
    "mtools",
    "kmod",
    "dpkg",
];

/// `package version` of every tool package, one per line: part of every stage key, so a tool
/// upgrade (which may change the bytes it writes) invalidates the stages it made.
pub fn toolchain() -> String {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${Version}\n"])
        .args(TOOL_PACKAGES)
        .output();
    match output {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(_) => "unknown".to_owned(),
    }
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

/// Makes an ext4 image of `tree` at `out`, sized for its content.
pub fn ext4(tree: &Path, out: &Path, uuid: Guid, epoch: u64) -> Result<(), Error> {
    let content = tree_size(tree);
    // Metadata, journal and slack: a third more plus 16 MiB, in whole MiB.
    let size = (content + content / 3 + (16 << 20)).next_multiple_of(1 << 20);
    let uuid = uuid.to_string().to_lowercase();
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
            &format!("hash_seed={uuid},root_owner=0:0"),
            "-d",
            &tree.to_string_lossy(),
            &out.to_string_lossy(),
            &format!("{}k", size >> 10),
        ],
        &[
            ("E2FSPROGS_FAKE_TIME", epoch.to_string()),
            ("SOURCE_DATE_EPOCH", epoch.to_string()),
        ],
    )?;
    Ok(())
}

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
