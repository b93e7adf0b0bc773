//! Publishing a build into the output directory: the VHDX (copied sparsely from the stage
//! cache), the SBOM, then the manifest. Each is written under a temporary name and renamed
//! once complete, the manifest last, so a failed build leaves no file that looks finished.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use images::atomic;
use images::manifest::Manifest;

use super::{Error, io_err};
use crate::sbom;

/// Writes `OUT/STEM.vhdx`, `OUT/STEM.spdx.json` and `OUT/STEM.manifest.json`.
pub fn publish(
    out: &Path,
    stem: &str,
    vhdx: &Path,
    manifest: &Manifest,
) -> Result<(PathBuf, PathBuf, PathBuf), Error> {
    std::fs::create_dir_all(out).map_err(io_err("output", "create", out))?;
    let vhdx_path = out.join(format!("{stem}.vhdx"));
    let sbom_path = out.join(format!("{stem}.spdx.json"));
    let manifest_path = out.join(format!("{stem}.manifest.json"));
    // An older build's manifest must not describe the new VHDX while it is being replaced.
    match std::fs::remove_file(&manifest_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_err("output", "remove", &manifest_path)(e));
        }
        _ => {}
    }
    let tmp = atomic::temporary_path(&vhdx_path);
    let copied = sparse_copy(vhdx, &tmp).and_then(|()| atomic::publish(&tmp, &vhdx_path));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("output", "write", &vhdx_path)(e));
    }
    let sbom = sbom::document(manifest);
    atomic::write(&sbom_path, sbom.as_bytes(), 0o644)
        .map_err(io_err("output", "write", &sbom_path))?;
    atomic::write(&manifest_path, manifest.to_json().as_bytes(), 0o644).map_err(io_err(
        "output",
        "write",
        &manifest_path,
    ))?;
    Ok((vhdx_path, manifest_path, sbom_path))
}

/// Copies `from` to the new file `to`, reading only its data ranges, so holes stay holes.
fn sparse_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    let input = File::open(from)?;
    let len = input.metadata()?.len();
    let output = File::options().write(true).create_new(true).open(to)?;
    output.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    for (start, length) in images::vhdx::writer::data_ranges(&input, 0, len)? {
        let mut done = 0;
        while done < length {
            let n = usize::try_from((length - done).min(buf.len() as u64)).unwrap_or(buf.len());
            input.read_exact_at(&mut buf[..n], start + done)?;
            output.write_all_at(&buf[..n], start + done)?;
            done += n as u64;
        }
    }
    Ok(())
}
