//! Downloads pinned by sha256, fetched once into the cache (`CACHE/urls/SHA256`). An operator
//! without network access places the file there by hand; its digest is still checked.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::hex;

/// How long a download may stall before it is abandoned.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a download is not in the cache.
#[derive(Debug)]
pub struct Missing {
    /// One clause: what went wrong.
    pub why: String,
}

/// Where the download pinned at `sha256` lives.
pub fn cached_path(cache: &Path, sha256: &str) -> PathBuf {
    cache.join("urls").join(sha256)
}

/// The cached file for `url`, downloading it first when absent. A file in the cache with the
/// wrong content is refused (and left for the operator to inspect).
pub fn fetch(cache: &Path, url: &str, sha256: &str) -> Result<PathBuf, Missing> {
    let path = cached_path(cache, sha256);
    if path.exists() {
        let actual = super::digest_file(&path).map_err(|e| Missing { why: e.to_string() })?;
        if actual != sha256 {
            return Err(Missing {
                why: format!("the cached file has sha256 {actual}: remove it"),
            });
        }
        return Ok(path);
    }
    download(url, sha256, &path)?;
    Ok(path)
}

fn download(url: &str, sha256: &str, path: &Path) -> Result<(), Missing> {
    let fail = |why: String| Missing { why };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(TIMEOUT))
        .timeout_recv_body(Some(TIMEOUT))
        .build()
        .into();
    let response = agent
        .get(url)
        .call()
        .map_err(|e| fail(format!("download failed ({e})")))?;
    let mut body = response.into_body().into_reader();
    let tmp = images::atomic::temporary_path(path);
    let result = (|| {
        let mut out = std::fs::File::create(&tmp)
            .map_err(|e| fail(format!("cannot write {}: {e}", tmp.display())))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = body
                .read(&mut buf)
                .map_err(|e| fail(format!("download interrupted ({e})")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| fail(format!("cannot write {}: {e}", tmp.display())))?;
        }
        let actual = hex(&hasher.finalize());
        if actual != sha256 {
            return Err(fail(format!(
                "the server sent content with sha256 {actual}, not the pinned one"
            )));
        }
        images::atomic::publish(&tmp, path)
            .map_err(|e| fail(format!("cannot store {}: {e}", path.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
