//! A sysprepped base VHDX as a build's base: its Windows partition (the largest Microsoft basic
//! data partition of its GPT) is copied out of the VHDX into a sparse volume file and captured
//! by wimlib from it (libntfs-3g: security descriptors, reparse points, hard links and short
//! names kept). Left out of the capture: what wimlib's default leaves out (pagefile, hibernation
//! file, System Volume Information, recycle bins), and what a node that already ran
//! windows-node's first boot keeps (the agent's state and join token, the kubelet's
//! credentials): a VHDX taken from such a node would otherwise skip first boot on every new VM.
//! A differencing VHDX is refused (its parent's blocks are not here).
//! The build then goes on from that WIM's image 1, as from install.wim.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use images::disk::{self, Placed, types};
use images::vhdx::{Kind, Vhdx};

use super::{Error, io_err, pinned_time};

/// wimlib's capture configuration: its own default exclusions, and a node's first-boot state.
const CAPTURE_CONFIG: &str = "[ExclusionList]
\\$ntfs.log
\\hiberfil.sys
\\pagefile.sys
\\swapfile.sys
\\System Volume Information
\\RECYCLER
\\$RECYCLE.BIN
\\$Recycle.Bin
\\Windows\\CSC
\\ProgramData\\Slipway
\\etc\\kubernetes
\\var\\lib\\kubelet
";

/// Copies partition `p` of `vhdx` into the new sparse file `to`, skipping blocks that hold no
/// data (and chunks of zeros).
pub(crate) fn copy_partition(vhdx: &Vhdx, p: &Placed, to: &Path) -> std::io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let file = File::options().write(true).create_new(true).open(to)?;
    file.set_len(p.size)?;
    let block = vhdx.geometry().block_bytes();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < p.size {
        let offset = p.offset + at;
        // A chunk never spans two blocks: whether it may hold data is a block's answer.
        let len = CHUNK.min(p.size - at).min(block - offset % block);
        if vhdx.block_may_hold_data(offset / block) {
            let buf = &mut buf[..usize::try_from(len).unwrap_or(0)];
            vhdx.read_at(buf, offset).map_err(std::io::Error::other)?;
            if buf.iter().any(|b| *b != 0) {
                file.write_all_at(buf, at)?;
            }
        }
        at += len;
    }
    Ok(())
}

/// Captures the Windows partition of the VHDX `base` as image 1 of `dir/base.wim`.
pub(super) fn capture(base: &Path, dir: &Path, epoch: u64) -> Result<(), Error> {
    let vhdx = Vhdx::open(base).map_err(|e| Error::ReadBaseVhdx { why: e.to_string() })?;
    if vhdx.kind() == Kind::Differencing {
        return Err(Error::ReadBaseVhdx {
            why: "it is a differencing disk: its parent's blocks are not in it; merge it first \
                  (Hyper-V's Merge-VHD, or `qemu-img convert -O vhdx`) and pin the result"
                .into(),
        });
    }
    let read =
        |offset: u64, buf: &mut [u8]| vhdx.read_at(buf, offset).map_err(std::io::Error::other);
    let partitions = disk::read_partitions(read).map_err(|e| Error::ReadBaseVhdx {
        why: format!("no GPT disk Slipway can read: {e}"),
    })?;
    let windows = partitions
        .iter()
        .filter(|p| p.type_guid == types::BASIC_DATA)
        .max_by_key(|p| p.size)
        .ok_or_else(|| Error::ReadBaseVhdx {
            why: "its GPT has no Microsoft basic data partition (the Windows volume)".into(),
        })?;
    let virtual_size = vhdx.geometry().virtual_size;
    if windows
        .offset
        .checked_add(windows.size)
        .is_none_or(|end| end > virtual_size)
    {
        return Err(Error::ReadBaseVhdx {
            why: format!(
                "partition {} ends past the disk's {virtual_size} bytes",
                windows.number
            ),
        });
    }
    let volume = dir.join("windows.img");
    copy_partition(&vhdx, windows, &volume)
        .map_err(io_err("copy the Windows partition to", &volume))?;
    let config = dir.join("capture.ini");
    std::fs::write(&config, CAPTURE_CONFIG).map_err(io_err("write", &config))?;
    pinned_time(
        "wimlib-imagex",
        [
            "capture".as_ref(),
            volume.as_os_str(),
            dir.join("base.wim").as_os_str(),
            "Windows (from a base VHDX)".as_ref(),
            // XPRESS: fast, and a sparse file's zeros cost next to no disk in the WIM.
            "--compress=xpress".as_ref(),
            format!("--config={}", config.display()).as_ref(),
        ],
        epoch,
    )?;
    std::fs::remove_file(&volume).map_err(io_err("remove", &volume))
}
