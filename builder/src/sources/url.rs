//! Downloads pinned by sha256, fetched once into the cache (`CACHE/urls/SHA256`). An operator
//! without network access places the file there by hand; its digest is still checked.
//!
//! A download takes as long as it needs while bytes keep arriving fast enough: it is abandoned
//! when no byte arrives for [`STALL_TIMEOUT`] (a slow link is not a dead one), when the answer's
//! headers take longer than that in all, or when the body's average rate over a window falls
//! under [`SPEED_FLOOR`] (a server sending a byte a little faster than the stall timeout would
//! hold a build for ever otherwise); and it is refused when its body is larger than the source's
//! `size` ([`DEFAULT_MAX_SIZE`] when the recipe gives none).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use images::oci::registry::speed::{Paced, SpeedFloor, TooSlow};
use sha2::{Digest, Sha256};

use super::hex;

/// How long a download may wait for its next byte (connecting, and each read of the body), and
/// for the answer's headers in all, before it is abandoned.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The slowest a download's body may arrive, averaged over a window (the registry client's
/// floor: 10 KiB/s over a minute).
pub const SPEED_FLOOR: SpeedFloor = images::oci::registry::SPEED_FLOOR;

/// The largest body a url source without `size` may have.
pub const DEFAULT_MAX_SIZE: u64 = 4 << 30;

/// Errors getting a download into the cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cached file could not be digested.
    #[error("cannot check the cached file")]
    CheckCached {
        /// The cause.
        #[source]
        source: Box<super::Error>,
    },
    /// The cached file is not the pinned content.
    #[error("the cached file {} has sha256 {actual}: remove it", path.display())]
    MatchCached {
        /// The file.
        path: PathBuf,
        /// Its digest.
        actual: String,
    },
    /// The cache directory could not be made.
    #[error("cannot create {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No byte arrived for the stall timeout, or the answer's headers took longer than it.
    #[error(
        "no byte arrived for {0} s, or the answer's headers took more than {0} s: the download \
         stalled",
        after.as_secs_f32()
    )]
    Stall {
        /// The stall timeout.
        after: Duration,
    },
    /// The body arrived slower than the speed floor.
    #[error("the download was abandoned")]
    Crawl {
        /// The cause (a [`TooSlow`]: how little arrived in how long).
        #[source]
        source: std::io::Error,
    },
    /// The request failed before a body arrived (connection, TLS, an HTTP error status).
    #[error("the request failed")]
    Request {
        /// The cause.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The answer's Content-Length is over the limit.
    #[error(
        "the server announces {length} bytes, more than the {limit} the source allows (raise \
         its `size` if this is expected)"
    )]
    AnnounceSize {
        /// The announced length.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// The body grew past the limit.
    #[error(
        "the server sent more than the {limit} bytes the source allows (raise its `size` if \
         this is expected)"
    )]
    ExceedSize {
        /// The limit.
        limit: u64,
    },
    /// Reading the body failed.
    #[error("the download was interrupted")]
    ReadBody {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The downloaded file could not be written.
    #[error("cannot write {}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The content is not the pinned content.
    #[error("the server sent content with sha256 {actual}, not the pinned one")]
    MatchDigest {
        /// The digest of what was sent.
        actual: String,
    },
}

impl Error {
    /// This error and its causes on one line, for the list of sources that could not be
    /// downloaded.
    pub fn why(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

/// What one download may cost before it is given up.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Longest wait for the next byte, and for the answer's headers in all.
    stall: Duration,
    /// Slowest average rate accepted.
    floor: SpeedFloor,
    /// Largest body accepted.
    max_size: u64,
}

/// Where the download pinned at `sha256` lives.
pub fn cached_path(cache: &Path, sha256: &str) -> PathBuf {
    cache.join("urls").join(sha256)
}

/// The cached file for `url`, downloading it first when absent (refusing a body larger than
/// `max_size`, [`DEFAULT_MAX_SIZE`] when `None`). A file in the cache with the wrong content is
/// refused (and left for the operator to inspect).
pub fn fetch(
    cache: &Path,
    url: &str,
    sha256: &str,
    max_size: Option<u64>,
) -> Result<PathBuf, Error> {
    let path = cached_path(cache, sha256);
    if path.exists() {
        let actual = super::digest_file(&path).map_err(|e| Error::CheckCached {
            source: Box::new(e),
        })?;
        if actual != sha256 {
            return Err(Error::MatchCached { path, actual });
        }
        return Ok(path);
    }
    let limits = Limits {
        stall: STALL_TIMEOUT,
        floor: SPEED_FLOOR,
        max_size: max_size.unwrap_or(DEFAULT_MAX_SIZE),
    };
    download(url, sha256, &path, limits)?;
    Ok(path)
}

#[tracing::instrument(skip(sha256, path, limits))]
fn download(url: &str, sha256: &str, path: &Path, limits: Limits) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    // A per-read timeout and a speed floor, not a total timeout: a 1 GiB file over a slow link
    // takes minutes, and only a connection that has gone quiet or crawls is given up. The
    // headers, a few hundred bytes, must come whole within the stall timeout: trickled a byte
    // at a time, they would hold the download for days.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(limits.stall))
        .timeout_recv_response(Some(limits.stall))
        .timeout_per_read(Some(limits.stall))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Timeout(ureq::Timeout::PerRead | ureq::Timeout::RecvResponse) => {
            Error::Stall {
                after: limits.stall,
            }
        }
        other => Error::Request {
            source: Box::new(other),
        },
    })?;
    if let Some(length) = response.body().content_length()
        && length > limits.max_size
    {
        return Err(Error::AnnounceSize {
            length,
            limit: limits.max_size,
        });
    }
    let mut body = Paced::new(response.into_body().into_reader(), limits.floor);
    let tmp = images::atomic::temporary_path(path);
    let result = store(&mut body, &tmp, sha256, limits).and_then(|()| {
        images::atomic::publish(&tmp, path).map_err(|source| Error::WriteFile {
            path: path.to_owned(),
            source,
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `body` to `tmp`, checking its size against the limit and its digest against `sha256`.
fn store(body: &mut dyn Read, tmp: &Path, sha256: &str, limits: Limits) -> Result<(), Error> {
    let write_err = |source| Error::WriteFile {
        path: tmp.to_owned(),
        source,
    };
    let mut out = std::fs::File::create(tmp).map_err(write_err)?;
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut buf).map_err(|source| {
            if is_stall(&source) {
                Error::Stall {
                    after: limits.stall,
                }
            } else if TooSlow::inside(&source).is_some() {
                Error::Crawl { source }
            } else {
                Error::ReadBody { source }
            }
        })?;
        if n == 0 {
            break;
        }
        received = received.saturating_add(n as u64);
        if received > limits.max_size {
            return Err(Error::ExceedSize {
                limit: limits.max_size,
            });
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(write_err)?;
    }
    let actual = hex(&hasher.finalize());
    if actual != sha256 {
        return Err(Error::MatchDigest { actual });
    }
    Ok(())
}

/// Whether a body read failed because no byte arrived within the per-read timeout.
fn is_stall(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|e| matches!(e, ureq::Error::Timeout(ureq::Timeout::PerRead)))
}

#[cfg(test)]
mod tests;
