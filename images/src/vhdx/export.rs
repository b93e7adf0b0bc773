//! Guest-visible content of a VHDX (following its parents) to a sparse raw file.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::reader::{self, Vhdx};
use super::stream::{AlignedBuf, nonzero_runs, with_background_sync};
use crate::atomic::{sync_parent, temporary_path};
use crate::pio;

const CHUNK: usize = 1 << 20;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the VHDX failed.
    #[error(transparent)]
    ReadImage(#[from] reader::Error),
    /// Syncing the raw file in the background failed.
    #[error("sync the exported file to disk")]
    SyncRaw(#[from] io::Error),
    /// Writing the raw file failed.
    #[error("{action} {path}")]
    WriteRaw {
        /// What was being done.
        action: &'static str,
        /// The output.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// Writes the guest content of `vhdx` into `out` (which must be empty): blocks no layer holds
/// are skipped, and all-zero data is left as holes, so the output is as sparse as possible.
/// Returns the number of bytes of data written.
pub fn export(
    vhdx: &Vhdx,
    out: &File,
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, Error> {
    let fail = |action, source| Error::WriteRaw {
        action,
        path: path.to_owned(),
        source,
    };
    let g = vhdx.geometry();
    let mut buf = AlignedBuf::new(CHUNK);
    let written = with_background_sync(out, |sync| -> Result<u64, Error> {
        let mut written = 0;
        for block in 0..g.data_blocks() {
            let start = block * g.block_bytes();
            if vhdx.block_may_hold_data(block) {
                let end = start + g.block_len(block);
                let mut pos = start;
                while pos < end {
                    let n = usize::try_from((end - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
                    let chunk = buf.slice_mut(n);
                    vhdx.read_at(chunk, pos)?;
                    for (lo, hi) in nonzero_runs(chunk) {
                        pio::write_all_at(out, &chunk[lo..hi], pos + lo as u64)
                            .map_err(|e| fail("write to", e))?;
                        written += (hi - lo) as u64;
                        sync.wrote((hi - lo) as u64);
                    }
                    pos += n as u64;
                }
            }
            progress(start + g.block_len(block));
        }
        Ok(written)
    })?;
    out.set_len(g.virtual_size)
        .map_err(|e| fail("set the size of", e))?;
    Ok(written)
}

/// Exports `input` (with its parent chain) to `output` atomically: nothing appears at
/// `output` unless the whole export succeeded.
pub fn export_file(
    input: &Path,
    output: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, Error> {
    let vhdx = Vhdx::open_chain(input)?;
    let fail = |action, source| Error::WriteRaw {
        action,
        path: output.to_owned(),
        source,
    };
    let tmp = temporary_path(output);
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| fail("create a temporary file beside", e))?;
    let result = export(&vhdx, &out, output, progress).and_then(|written| {
        out.sync_all().map_err(|e| fail("sync", e))?;
        std::fs::rename(&tmp, output).map_err(|e| fail("rename the finished export to", e))?;
        sync_parent(output).map_err(|e| fail("sync the directory of", e))?;
        Ok(written)
    });
    if result.is_err() {
        let _ignored = std::fs::remove_file(&tmp);
    }
    result
}
