//! An OCI distribution-spec registry client on a blocking HTTP stack. Blobs are uploaded in
//! chunks (POST, PATCH with Content-Range, PUT ?digest=) and downloaded with Range, so both
//! directions stream in bounded memory; after a failure the upload asks the registry how much it
//! holds (GET on the upload URL) and the download asks for the rest (Range: bytes=N-), instead
//! of starting again. Bearer-token and basic auth come from the usual credential files.
//!
//! A transfer is given up only when it stops moving: an attempt fails when no byte arrives (or
//! leaves) for [`Patience::stall`], when an answer's headers take longer than that in all, or
//! when its average rate over a window falls under [`Patience::floor`]; a blob transfer then
//! tries again from where it stopped for as long as attempts keep moving at least
//! [`Patience::progress`] bytes each, so a 10 GiB image over a slow link that drops now and then
//! completes. Attempts in a row that move less are bounded, with exponential backoff and jitter,
//! and so are attempts in all ([`Patience::total_attempts`]): a server that sends a byte and
//! hangs up, again and again, or one byte a minute, ends the transfer instead of holding it for
//! ever.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use ureq::http::Response;
use ureq::{Agent, SendBody};

use super::artifact::{IMAGE_INDEX, IMAGE_MANIFEST};
use super::{BlobSink, BlobSource, Error, MAX_MANIFEST, Repository, check_digest, copy_bounded};

pub mod speed;

use speed::{Pace, Paced, SpeedFloor};

/// What one PATCH carries at most, streamed from the source (never held in memory). A registry
/// commits an upload's data when a PATCH completes, so this is how much a failure can cost;
/// each PATCH costs the registry a round trip and a commit, so smaller is slower.
pub const CHUNK: u64 = 32 << 20;
/// Longest wait for the next byte, either way, before an attempt is abandoned. It also bounds
/// the wait for an answer's headers (a registry may take a while to commit a large upload).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts in a row that move less than [`PROGRESS`] before a transfer gives up.
const MAX_ATTEMPTS: u32 = 8;
/// What an attempt must move to count as progress (and start the count of [`MAX_ATTEMPTS`]
/// again): a byte would let a server that sends one byte per connection go on for ever.
const PROGRESS: u64 = 1 << 20;
/// Attempts in all, progress or not, before a blob transfer gives up: a last bound, which a
/// transfer that works (a drop every [`PROGRESS`] bytes at the worst) does not reach.
const MAX_TOTAL_ATTEMPTS: u32 = 1000;
/// The slowest an attempt may move, averaged over a minute (curl's `--speed-limit 10240
/// --speed-time 60`): a link slower than this would take a day per GiB.
pub const SPEED_FLOOR: SpeedFloor = SpeedFloor {
    bytes_per_sec: 10 << 10,
    window: Duration::from_secs(60),
};
/// First retry delay; doubles up to [`MAX_BACKOFF`], with jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long a client waits and how often it tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// Longest wait for the next byte (sent or received) before an attempt is abandoned, and
    /// for an answer's headers in all.
    pub stall: Duration,
    /// The slowest an attempt may move, averaged over a window, before it is abandoned.
    pub floor: SpeedFloor,
    /// Attempts in a row that move less than `progress` bytes before a transfer gives up; an
    /// attempt that moves that much starts the count again.
    pub attempts: u32,
    /// What one attempt must move to count as progress.
    pub progress: u64,
    /// Attempts in all before a blob transfer gives up, whatever they moved.
    pub total_attempts: u32,
    /// First retry delay; it doubles with each attempt in a row, up to `max_backoff`, and up to
    /// half of it again is added at random.
    pub first_backoff: Duration,
    /// Longest retry delay (before jitter).
    pub max_backoff: Duration,
}

impl Patience {
    /// What [`Registry::new`] uses.
    pub const DEFAULT: Patience = Patience {
        stall: STALL_TIMEOUT,
        floor: SPEED_FLOOR,
        attempts: MAX_ATTEMPTS,
        progress: PROGRESS,
        total_attempts: MAX_TOTAL_ATTEMPTS,
        first_backoff: FIRST_BACKOFF,
        max_backoff: MAX_BACKOFF,
    };

    /// Sleeps before attempt `failures + 1` (`failures` attempts in a row moved too little).
    fn backoff(&self, failures: u32) {
        let base = self
            .first_backoff
            .saturating_mul(1 << failures.min(5))
            .min(self.max_backoff);
        let mut jitter = [0u8; 1];
        // No randomness is no jitter: the delay is still bounded and still grows.
        let _ = getrandom::fill(&mut jitter);
        std::thread::sleep(base + base * u32::from(jitter[0]) / 512);
    }
}

/// Where a blob transfer stands against its [`Patience`]: failed attempts in a row that moved
/// less than `progress`, and failed attempts in all.
#[derive(Debug, Default)]
struct Budget {
    idle: u32,
    total: u32,
}

impl Budget {
    /// Counts a failed attempt that moved `moved` bytes; `Err` (why, in words) when the transfer
    /// must give up.
    fn fail(&mut self, moved: u64, patience: &Patience) -> Result<(), String> {
        self.total = self.total.saturating_add(1);
        self.idle = if moved >= patience.progress {
            0
        } else {
            self.idle.saturating_add(1)
        };
        if self.idle >= patience.attempts {
            return Err(format!(
                "{} attempts in a row moved less than {} bytes each",
                self.idle, patience.progress
            ));
        }
        if self.total >= patience.total_attempts {
            return Err(format!("{} attempts failed in all", self.total));
        }
        Ok(())
    }
}

/// A repository in a registry.
pub struct Registry {
    agent: Agent,
    patience: Patience,
    base: String,
    host: String,
    repository: String,
    authorization: Option<String>,
    /// Bytes sent in upload bodies (what a resume saves is measured against this).
    pub bytes_sent: u64,
    /// Blob bytes received.
    pub bytes_received: u64,
}

fn transfer(what: impl Into<String>, why: impl std::fmt::Display) -> Error {
    Error::Transfer {
        what: what.into(),
        source: std::io::Error::other(why.to_string()),
    }
}

impl Registry {
    /// A client for `host/repository`; `plain_http` only when asked (loopback tests, labs).
    pub fn new(host: &str, repository: &str, plain_http: bool) -> Registry {
        let scheme = if plain_http { "http" } else { "https" };
        Registry {
            agent: agent(&Patience::DEFAULT),
            patience: Patience::DEFAULT,
            base: format!("{scheme}://{host}/v2/{repository}"),
            host: host.to_owned(),
            repository: repository.to_owned(),
            authorization: None,
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    /// This client with other timeouts and retry limits.
    pub fn with_patience(self, patience: Patience) -> Registry {
        Registry {
            agent: agent(&patience),
            patience,
            ..self
        }
    }

    /// Sends a request built by `make` (given the current Authorization header), retrying
    /// transport errors with backoff and answering one 401 challenge.
    fn send(
        &mut self,
        what: &str,
        mut make: impl FnMut(&Agent, Option<&str>) -> Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>, Error> {
        let mut attempt = 0;
        let mut challenged = false;
        loop {
            match make(&self.agent, self.authorization.as_deref()) {
                Ok(response) if response.status() == 401 && !challenged => {
                    challenged = true;
                    let header = response
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    self.authorization = Some(self.authorize(&header)?);
                }
                Ok(response) => return Ok(response),
                Err(e) => {
                    let e = self.describe(e);
                    attempt += 1;
                    if attempt >= self.patience.attempts {
                        return Err(transfer(what, e));
                    }
                    tracing::warn!(%what, attempt, error = %e, "registry request failed; retrying");
                    self.patience.backoff(attempt);
                }
            }
        }
    }

    /// Answers a `WWW-Authenticate` challenge: basic credentials, or a bearer token from the
    /// realm (asked with the basic credentials when there are any).
    fn authorize(&self, challenge: &str) -> Result<String, Error> {
        let basic = credentials(&self.host);
        if challenge.to_ascii_lowercase().starts_with("basic") {
            return basic.map(|b| format!("Basic {b}")).ok_or_else(|| {
                transfer(
                    format!("logging in to {}", self.host),
                    "the registry wants credentials and none are configured",
                )
            });
        }
        let param = |name: &str| {
            challenge.split(',').find_map(|part| {
                let part = part
                    .trim()
                    .trim_start_matches("Bearer ")
                    .trim_start_matches("bearer ");
                let (k, v) = part.split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        let realm = param("realm")
            .ok_or_else(|| transfer("logging in", format!("unusable challenge {challenge:?}")))?;
        let mut url = format!("{realm}?scope=repository:{}:pull,push", self.repository);
        if let Some(service) = param("service") {
            url.push_str(&format!("&service={service}"));
        }
        let mut request = self.agent.get(&url);
        if let Some(b) = &basic {
            request = request.header("Authorization", format!("Basic {b}"));
        }
        let response = request
            .call()
            .map_err(|e| transfer("fetching a registry token", e))?;
        if response.status() != 200 {
            return Err(transfer(
                "fetching a registry token",
                format!("HTTP {}", response.status()),
            ));
        }
        let body = self.read_small(response, "reading a registry token")?;
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| transfer("reading a registry token", e))?;
        let token = json["token"]
            .as_str()
            .or(json["access_token"].as_str())
            .ok_or_else(|| transfer("reading a registry token", "no token"))?;
        Ok(format!("Bearer {token}"))
    }

    /// The body of `response`, a small document (a manifest, a token): at most [`MAX_MANIFEST`]
    /// bytes, read under the speed floor. The stall timeout alone would let a registry that
    /// sends a byte just before each timeout hold the pull for years over 4 MiB; with the floor,
    /// a document smaller than a window's worth of bytes is given up once a window has passed.
    fn read_small(&self, response: Response<ureq::Body>, what: &str) -> Result<Vec<u8>, Error> {
        let mut reader = Paced::new(response.into_body().into_reader(), self.patience.floor);
        let mut bytes = Vec::new();
        copy_bounded(&mut reader, &mut bytes, MAX_MANIFEST).map_err(|e| match e {
            Error::Transfer { source, .. } => Error::Transfer {
                what: what.to_owned(),
                source: self.describe_io(source),
            },
            other => other,
        })?;
        Ok(bytes)
    }

    /// A transport error in words; a per-read timeout says it was a stall.
    fn describe(&self, error: ureq::Error) -> String {
        match error {
            ureq::Error::Timeout(ureq::Timeout::PerRead | ureq::Timeout::PerWrite) => format!(
                "no byte moved for {} s: the connection stalled",
                self.patience.stall.as_secs_f32()
            ),
            ureq::Error::Timeout(ureq::Timeout::RecvResponse) => format!(
                "no whole answer arrived within {} s: the registry is stalling",
                self.patience.stall.as_secs_f32()
            ),
            other => other.to_string(),
        }
    }

    /// A failed read in words; a per-read timeout says it was a stall.
    fn describe_io(&self, error: std::io::Error) -> std::io::Error {
        match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<ureq::Error>())
        {
            Some(ureq::Error::Timeout(ureq::Timeout::PerRead)) => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no byte arrived for {} s: the connection stalled",
                    self.patience.stall.as_secs_f32()
                ),
            ),
            _ => error,
        }
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            let origin = self.base.split("/v2/").next().unwrap_or(&self.base);
            format!("{origin}{location}")
        }
    }

    /// Starts an upload session; returns its URL.
    fn start_upload(&mut self) -> Result<String, Error> {
        let url = format!("{}/blobs/uploads/", self.base);
        let response = self.send("starting an upload", |agent, auth| {
            with_auth(agent.post(&url), auth).send_empty()
        })?;
        if response.status() != 202 {
            return Err(transfer(
                "starting an upload",
                format!("HTTP {}", response.status()),
            ));
        }
        location(&response)
            .map(|l| self.absolute(&l))
            .ok_or_else(|| transfer("starting an upload", "no Location"))
    }

    /// How many bytes the session at `url` holds (`None` when the registry lost it).
    fn upload_offset(&mut self, url: &str) -> Result<Option<u64>, Error> {
        let response = self.send("asking an upload's status", |agent, auth| {
            with_auth(agent.get(url), auth).call()
        })?;
        match response.status().as_u16() {
            204 | 202 => {
                let range = response
                    .headers()
                    .get("range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                // "0-N" means N + 1 bytes; an absent or "0-0"-less header means none yet.
                Ok(Some(
                    range
                        .rsplit('-')
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .map_or(0, |n| n + 1),
                ))
            }
            404 => Ok(None),
            code => Err(transfer(
                "asking an upload's status",
                format!("HTTP {code}"),
            )),
        }
    }
}

/// Counts what the HTTP stack reads from the blob (the bytes sent), reports progress, and
/// fails the PATCH when the registry takes them in slower than the floor (the stack asks for
/// more only as the connection drains).
struct Counting<'a> {
    inner: &'a mut dyn Read,
    count: u64,
    base: u64,
    pace: Pace,
    progress: &'a mut dyn FnMut(u64),
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count = self.count.saturating_add(n as u64);
        (self.progress)(self.base.saturating_add(self.count));
        if n > 0 {
            self.pace.count(n)?;
        }
        Ok(n)
    }
}

fn with_auth<B>(request: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => request.header("Authorization", a),
        None => request,
    }
}

fn location(response: &Response<ureq::Body>) -> Option<String> {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// An HTTP client that gives up on a connection when no byte moves for `patience.stall`, however
/// long the transfer as a whole takes, and on an answer whose headers take longer than that in
/// all (they are a few hundred bytes: trickled, they would hold an attempt for days).
fn agent(patience: &Patience) -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(patience.stall))
        .timeout_per_read(Some(patience.stall))
        .timeout_per_write(Some(patience.stall))
        .build()
        .into()
}

/// base64 `user:password` for `host` from `$REGISTRY_AUTH_FILE`, containers' auth.json or
/// Docker's config.json (the `auth` field each of them keeps per registry).
fn credentials(host: &str) -> Option<String> {
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(std::path::PathBuf::from(f));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(std::path::Path::new(&d).join("containers/auth.json"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        files.push(std::path::Path::new(&h).join(".docker/config.json"));
    }
    files.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["auths"][host]["auth"].as_str().map(str::to_owned)
    })
}

impl Repository for Registry {
    fn has_blob(&mut self, digest: &str) -> Result<bool, Error> {
        check_digest(digest)?;
        let url = format!("{}/blobs/{digest}", self.base);
        let response = self.send("checking a blob", |agent, auth| {
            with_auth(agent.head(&url), auth).call()
        })?;
        Ok(response.status() == 200)
    }

    fn put_blob(
        &mut self,
        digest: &str,
        size: u64,
        source: BlobSource<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), Error> {
        if self.has_blob(digest)? {
            progress(size);
            return Ok(());
        }
        let mut url = self.start_upload()?;
        let mut offset = 0u64;
        let mut budget = Budget::default();
        while offset < size {
            // One PATCH of up to CHUNK bytes streamed from `offset`. After a failure the registry
            // says how much it holds, and the next PATCH starts there.
            let len = (size - offset).min(CHUNK);
            let mut reader: Box<dyn Read> = match source {
                BlobSource::File(p) => {
                    let mut file = File::open(p).map_err(|source| Error::ReadLocal {
                        path: p.to_owned(),
                        source,
                    })?;
                    file.seek(SeekFrom::Start(offset))
                        .map_err(|e| transfer("reading the blob", e))?;
                    Box::new(file.take(len))
                }
                BlobSource::Bytes(b) => {
                    let start = usize::try_from(offset).unwrap_or(usize::MAX);
                    let end = usize::try_from(offset + len).unwrap_or(usize::MAX);
                    Box::new(b.get(start..end).unwrap_or(&[]))
                }
            };
            let mut counting = Counting {
                inner: &mut reader,
                count: 0,
                base: offset,
                pace: Pace::new(self.patience.floor),
                progress: &mut *progress,
            };
            let result = with_auth(self.agent.patch(&url), self.authorization.as_deref())
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{offset}-{}", offset + len - 1))
                .header("Content-Length", len.to_string())
                .send(SendBody::from_reader(&mut counting));
            self.bytes_sent += counting.count;
            match result {
                Ok(r) if r.status() == 202 => {
                    url = location(&r).map(|l| self.absolute(&l)).unwrap_or(url);
                    offset += len;
                    budget.idle = 0;
                }
                other => {
                    let why = match other {
                        Ok(r) => format!("HTTP {}", r.status()),
                        Err(e) => self.describe(e),
                    };
                    tracing::warn!(%digest, offset, error = %why, "upload interrupted; asking the registry where to resume");
                    self.patience.backoff(budget.idle.saturating_add(1));
                    // Resume where the registry says it is; a lost session starts over. What it
                    // kept of the failed PATCH, if enough, is progress and starts the count again.
                    let held = match self.upload_offset(&url)? {
                        Some(held) => held.min(size),
                        None => {
                            url = self.start_upload()?;
                            0
                        }
                    };
                    let moved = held.saturating_sub(offset);
                    offset = held;
                    if let Err(spent) = budget.fail(moved, &self.patience) {
                        return Err(transfer(
                            format!("uploading {digest} ({spent}; {offset} of {size} bytes held)"),
                            why,
                        ));
                    }
                }
            }
        }
        let separator = if url.contains('?') { '&' } else { '?' };
        let finish = format!("{url}{separator}digest={digest}");
        let response = self.send("finishing an upload", |agent, auth| {
            with_auth(agent.put(&finish), auth).send_empty()
        })?;
        if response.status() != 201 {
            return Err(transfer(
                format!("finishing the upload of {digest}"),
                format!("HTTP {}", response.status()),
            ));
        }
        Ok(())
    }

    fn put_manifest(
        &mut self,
        tag: &str,
        bytes: &[u8],
        media_type: &str,
        _artifact_type: Option<&str>,
    ) -> Result<String, Error> {
        let url = format!("{}/manifests/{tag}", self.base);
        let response = self.send("pushing a manifest", |agent, auth| {
            with_auth(agent.put(&url), auth)
                .header("Content-Type", media_type)
                .send(bytes)
        })?;
        if response.status() != 201 {
            return Err(transfer(
                format!("pushing manifest {tag}"),
                format!("HTTP {}", response.status()),
            ));
        }
        Ok(super::artifact::digest_of(bytes))
    }

    fn get_manifest(&mut self, tag: &str) -> Result<Option<Vec<u8>>, Error> {
        let url = format!("{}/manifests/{tag}", self.base);
        let accept = format!("{IMAGE_MANIFEST}, {IMAGE_INDEX}");
        let response = self.send("fetching a manifest", |agent, auth| {
            with_auth(agent.get(&url), auth)
                .header("Accept", &accept)
                .call()
        })?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            code => {
                return Err(transfer(
                    format!("fetching manifest {tag}"),
                    format!("HTTP {code}"),
                ));
            }
        }
        self.read_small(response, &format!("reading manifest {tag}"))
            .map(Some)
    }

    fn get_blob(&mut self, digest: &str, size: u64, out: &mut dyn BlobSink) -> Result<(), Error> {
        check_digest(digest)?;
        let url = format!("{}/blobs/{digest}", self.base);
        let mut budget = Budget::default();
        loop {
            let from = out.resume_from();
            if from >= size {
                return Ok(());
            }
            let response = self.send("fetching a blob", |agent, auth| {
                let request = with_auth(agent.get(&url), auth);
                if from > 0 {
                    request.header("Range", format!("bytes={from}-")).call()
                } else {
                    request.call()
                }
            })?;
            let status = response.status().as_u16();
            let mut reader = Paced::new(response.into_body().into_reader(), self.patience.floor);
            // Where this attempt writes from: what it moves past that is its progress.
            let mut start = from;
            let result = match status {
                206 => copy_bounded(&mut reader, out, size - from),
                // The whole blob again, Range ignored. Skipping what is held would move bytes
                // that count for the floor but not as progress, so a registry that drops before
                // the held offset could make every attempt last `from / floor` and prove
                // nothing. Starting the blob again keeps what arrives: every byte an attempt
                // moves is then progress, so an attempt that is not progress stays short. The
                // content is still checked against the digest once it is whole.
                200 => {
                    start = 0;
                    if from > 0 {
                        tracing::warn!(%digest, from, "the registry ignored Range; starting the blob again");
                    }
                    // A local failure, not the registry's: no retry.
                    out.restart().map_err(|source| Error::Transfer {
                        what: format!("emptying the partial blob {digest} to start it again"),
                        source,
                    })?;
                    copy_bounded(&mut reader, out, size)
                }
                code => {
                    return Err(transfer(
                        format!("fetching blob {digest}"),
                        format!("HTTP {code}"),
                    ));
                }
            };
            let held = out.resume_from();
            let moved = held.saturating_sub(start);
            self.bytes_received += moved;
            let cause = match result {
                Ok(()) if held >= size => return Ok(()),
                Ok(()) => std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the registry ended the blob early",
                ),
                Err(Error::Transfer { source, .. }) => self.describe_io(source),
                Err(other) => return Err(other),
            };
            if let Err(spent) = budget.fail(moved, &self.patience) {
                return Err(Error::Transfer {
                    what: format!("fetching blob {digest} ({spent}; {held} of {size} bytes held)"),
                    source: cause,
                });
            }
            let idle = budget.idle;
            tracing::warn!(%digest, held, idle, error = %cause, "download interrupted; resuming");
            self.patience.backoff(idle);
        }
    }
}
