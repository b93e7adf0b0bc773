//! The one record format for every state file slipwayd keeps.
//!
//! A record is a text file: one header line, then the payload as JSON.
//!
//! ```text
//! slipway-record KIND VERSION CRC LEN\n
//! PAYLOAD (LEN bytes of JSON)
//! ```
//!
//! - `slipway-record` is the magic: a file that does not start with it is not a record.
//! - `KIND` names what the payload is (`node`, `cluster-init`, ...): lowercase letters, digits
//!   and `-`. A record of another kind is refused, so a file moved to the wrong place is found.
//! - `VERSION` is the version of that kind's payload, a decimal `u32` from 1.
//! - `CRC` is the CRC-32C (Castagnoli), 8 lowercase hex digits, of the header line with the CRC
//!   field left out (`slipway-record KIND VERSION LEN\n`) followed by the payload: a flipped
//!   bit in the kind, the version, the length or the payload is found, not misread.
//! - `LEN` is the payload's length in bytes, decimal: a torn file (cut short or run on) is
//!   found before its CRC is even checked.
//!
//! Checks run in the order magic → header syntax → length → CRC → kind → version → payload,
//! so an intact record of a newer version says so, and a damaged one says it is damaged.
//!
//! Writes are atomic: the record is written to a temporary file beside its destination (mode
//! 0600, a random hidden name ending in `.tmp`), synced, renamed over the destination, and the
//! directory synced. A reader sees the old record or the new one, never a mix; a temporary
//! file left by a crash is never read (nor in the way of the next write). One writer per file:
//! the host lock makes slipwayd the only one.
//!
//! # Compatibility rule
//!
//! The header line's layout never changes; a kind's payload changes only with its VERSION.
//! A slipwayd reads the version it writes and the older versions it names explicitly, each
//! with its own payload type converted on reading (the reader of a kind matches on
//! [`Raw::version`] from [`read_raw`]); it never guesses at a version it does not name. A
//! record newer than the build is refused with a message naming both versions: it was written
//! by a newer slipwayd, and rewriting it would lose what that one knew. Writing always uses the
//! newest version. No kind has an older version yet, so today every reader names only its own
//! and [`read`] refuses any other.

use std::fmt::Write as _;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first word of every record.
pub const MAGIC: &str = "slipway-record";
/// The largest record read, in bytes: state records are small; a bigger file is not one.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;
/// The longest header line, in bytes, newline included.
const MAX_HEADER_BYTES: usize = 256;

/// A record error. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read the record {path}")]
    ReadRecord {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The record could not be written (its previous version, if any, is intact).
    #[error("cannot write the record {path}")]
    WriteRecord {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The value could not be turned into JSON.
    #[error("cannot encode the {kind} record {path} as JSON")]
    EncodePayload {
        /// The file.
        path: PathBuf,
        /// The record's kind.
        kind: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The file does not start with the magic.
    #[error(
        "{path} is not a slipway record (it does not start with `{MAGIC}`): move it away or restore it from a backup"
    )]
    MatchMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than any record.
    #[error(
        "{path} is larger than {MAX_RECORD_BYTES} bytes, so it is no slipway record: move it away or restore it from a backup"
    )]
    ExceedSize {
        /// The file.
        path: PathBuf,
    },
    /// The header line is malformed.
    #[error(
        "{path}: malformed record header: {why}: the file is torn or was edited; restore it from a backup"
    )]
    ParseHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The payload is not as long as the header says.
    #[error(
        "{path}: the header announces {expected} payload bytes but {found} follow: the file is torn or was edited; restore it from a backup"
    )]
    VerifyLength {
        /// The file.
        path: PathBuf,
        /// The length in the header.
        expected: u64,
        /// The length found.
        found: u64,
    },
    /// The CRC does not match.
    #[error(
        "{path}: CRC-32C {stored:08x} in the header, {computed:08x} computed: the file is damaged or was edited; restore it from a backup"
    )]
    VerifyChecksum {
        /// The file.
        path: PathBuf,
        /// The CRC in the header.
        stored: u32,
        /// The CRC of what is there.
        computed: u32,
    },
    /// The record is of another kind.
    #[error("{path} holds a {found:?} record where a {expected:?} record belongs")]
    MatchKind {
        /// The file.
        path: PathBuf,
        /// The kind wanted.
        expected: &'static str,
        /// The kind found.
        found: String,
    },
    /// The record was written by a newer slipwayd.
    #[error(
        "{path} was written by a newer slipwayd: {kind} record version {found} > ours ({ours}); run that version of slipwayd or a newer one"
    )]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// The record's kind.
        kind: &'static str,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        ours: u32,
    },
    /// The record is of an older version this build does not read.
    #[error(
        "{path} holds {kind} record version {found}, which this slipwayd does not read (it reads version {ours}); run the slipwayd that wrote it, or a release that converts it"
    )]
    OlderVersion {
        /// The file.
        path: PathBuf,
        /// The record's kind.
        kind: &'static str,
        /// The version found.
        found: u32,
        /// The version this build reads.
        ours: u32,
    },
    /// The payload is not the JSON the kind and version promise.
    #[error("{path}: the {kind} record's payload is not valid")]
    ParsePayload {
        /// The file.
        path: PathBuf,
        /// The record's kind.
        kind: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// A record's payload, checked (magic, length, CRC, kind, not newer) but not parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    /// The payload's version: at most the newest the caller reads.
    pub version: u32,
    /// The payload, JSON.
    pub payload: Vec<u8>,
}

/// Writes `value` as the record of `kind` at `version` to `path`, atomically, mode 0600.
/// The directory must exist.
pub fn write<T: Serialize>(
    path: &Path,
    kind: &'static str,
    version: u32,
    value: &T,
) -> Result<(), Error> {
    stage(path, kind, version, value)?.commit()
}

/// Reads the record of `kind` at `path`, which must be of `version` (see the module's
/// compatibility rule). `None`: there is no file.
pub fn read<T: DeserializeOwned>(
    path: &Path,
    kind: &'static str,
    version: u32,
) -> Result<Option<T>, Error> {
    let Some(raw) = read_raw(path, kind, version)? else {
        return Ok(None);
    };
    if raw.version != version {
        return Err(Error::OlderVersion {
            path: path.to_owned(),
            kind,
            found: raw.version,
            ours: version,
        });
    }
    serde_json::from_slice(&raw.payload)
        .map(Some)
        .map_err(|source| Error::ParsePayload {
            path: path.to_owned(),
            kind,
            source,
        })
}

/// Reads the record of `kind` at `path` whose version is at most `newest`, leaving the payload
/// to the caller (a reader of several versions matches on [`Raw::version`]). `None`: no file.
pub fn read_raw(path: &Path, kind: &'static str, newest: u32) -> Result<Option<Raw>, Error> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::ReadRecord {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::ReadRecord {
            path: path.to_owned(),
            source,
        })?;
    if u64::try_from(bytes.len()).map_or(true, |n| n > MAX_RECORD_BYTES) {
        return Err(Error::ExceedSize {
            path: path.to_owned(),
        });
    }
    decode(path, &bytes, kind, newest).map(Some)
}

/// Checks `bytes` read from `path` in the order magic → header → length → CRC → kind →
/// version.
fn decode(path: &Path, bytes: &[u8], kind: &'static str, newest: u32) -> Result<Raw, Error> {
    let magic = format!("{MAGIC} ");
    if !bytes.starts_with(magic.as_bytes()) {
        return Err(Error::MatchMagic {
            path: path.to_owned(),
        });
    }
    let header_error = |why: String| Error::ParseHeader {
        path: path.to_owned(),
        why,
    };
    let end = bytes
        .iter()
        .take(MAX_HEADER_BYTES)
        .position(|b| *b == b'\n')
        .ok_or_else(|| {
            header_error(format!(
                "no end of line in its first {MAX_HEADER_BYTES} bytes"
            ))
        })?;
    let line = std::str::from_utf8(&bytes[magic.len()..end])
        .map_err(|_| header_error("it is not UTF-8".into()))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let [found_kind, version, crc, len] = fields[..] else {
        return Err(header_error(format!(
            "expected `{MAGIC} KIND VERSION CRC LEN`, found {} fields after the magic",
            fields.len()
        )));
    };
    if !valid_kind(found_kind) {
        return Err(header_error(format!("kind {found_kind:?}")));
    }
    let decimal = |field: &str, what: &str| {
        if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
            return Err(header_error(format!(
                "{what} {field:?} is not a decimal number"
            )));
        }
        field
            .parse::<u64>()
            .map_err(|_| header_error(format!("{what} {field:?} is too large")))
    };
    let version = u32::try_from(decimal(version, "version")?)
        .map_err(|_| header_error(format!("version {version:?} is too large")))?;
    let expected = decimal(len, "length")?;
    let stored = (crc.len() == 8 && crc.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(crc, 16).ok())
        .flatten()
        .ok_or_else(|| header_error(format!("CRC {crc:?} is not 8 hex digits")))?;
    let payload = &bytes[end + 1..];
    let found = u64::try_from(payload.len()).unwrap_or(u64::MAX);
    if found != expected {
        return Err(Error::VerifyLength {
            path: path.to_owned(),
            expected,
            found,
        });
    }
    let computed = checksum(found_kind, version, found, payload);
    if stored != computed {
        return Err(Error::VerifyChecksum {
            path: path.to_owned(),
            stored,
            computed,
        });
    }
    if found_kind != kind {
        return Err(Error::MatchKind {
            path: path.to_owned(),
            expected: kind,
            found: found_kind.to_owned(),
        });
    }
    if version > newest {
        return Err(Error::NewerVersion {
            path: path.to_owned(),
            kind,
            found: version,
            ours: newest,
        });
    }
    Ok(Raw {
        version,
        payload: payload.to_vec(),
    })
}

/// Whether `kind` may name a record kind: 1 to 32 lowercase letters, digits and `-`.
fn valid_kind(kind: &str) -> bool {
    (1..=32).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The whole file for a payload.
fn encode(kind: &str, version: u32, payload: &[u8]) -> Vec<u8> {
    let len = u64::try_from(payload.len()).unwrap_or(u64::MAX);
    let crc = checksum(kind, version, len, payload);
    let mut header = String::new();
    let _ = writeln!(header, "{MAGIC} {kind} {version} {crc:08x} {len}");
    let mut bytes = header.into_bytes();
    bytes.extend_from_slice(payload);
    bytes
}

/// Creates `dir` (and its missing parents) readable by its owner alone; an existing one keeps
/// its mode. The state directory and every node's directory are made this way.
#[cfg(unix)]
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates `dir` (and its missing parents). Windows has no mode bits: a new directory inherits
/// the ACL of its parent, so the operator restricts the state directory (or the directory it is
/// made in) to the account slipwayd runs as and to Administrators; slipwayd sets no ACL itself.
#[cfg(not(unix))]
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// The CRC a header carries: of the header without its CRC field, then the payload.
fn checksum(kind: &str, version: u32, len: u64, payload: &[u8]) -> u32 {
    let header = format!("{MAGIC} {kind} {version} {len}\n");
    crc32c(crc32c(0, header.as_bytes()), payload)
}

/// CRC-32C of `bytes`, continuing from `crc` (0 to start).
fn crc32c(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// A record written beside its destination and synced, not yet in place.
struct Staged {
    file: tempfile::NamedTempFile,
    path: PathBuf,
}

/// Writes the record to a synced temporary file beside `path` (mode 0600).
fn stage<T: Serialize>(
    path: &Path,
    kind: &'static str,
    version: u32,
    value: &T,
) -> Result<Staged, Error> {
    debug_assert!(valid_kind(kind), "record kind {kind:?}");
    let mut payload = serde_json::to_vec_pretty(value).map_err(|source| Error::EncodePayload {
        path: path.to_owned(),
        kind,
        source,
    })?;
    payload.push(b'\n');
    let bytes = encode(kind, version, &payload);
    let fail = |source| Error::WriteRecord {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // tempfile makes the file 0600 from its creation on, under a random name: a temporary
    // left by a crash (of this process id or any other) is never in the way.
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(fail)?;
    file.write_all(&bytes).map_err(fail)?;
    file.as_file().sync_all().map_err(fail)?;
    Ok(Staged {
        file,
        path: path.to_owned(),
    })
}

impl Staged {
    /// Renames the record over its destination and syncs the directory.
    fn commit(self) -> Result<(), Error> {
        let path = self.path;
        let fail = |source| Error::WriteRecord {
            path: path.clone(),
            source,
        };
        self.file.persist(&path).map_err(|e| fail(e.error))?;
        images::atomic::sync_parent(&path).map_err(fail)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct Thing {
        name: String,
        count: u32,
    }

    fn thing() -> Thing {
        Thing {
            name: "cp-1".into(),
            count: 3,
        }
    }

    /// A directory with a valid `node` version 1 record at `record`.
    fn written() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record");
        write(&path, "node", 1, &thing()).unwrap();
        (dir, path)
    }

    fn read_thing(path: &Path) -> Result<Option<Thing>, Error> {
        read(path, "node", 1)
    }

    #[test]
    fn crc32c_gives_the_standard_check_value() {
        assert_eq!(crc32c(0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(crc32c(0, b"1234"), b"56789"), 0xE306_9283);
    }

    #[test]
    fn a_record_reads_back_private_with_a_readable_header() {
        let (dir, path) = written();
        assert_eq!(read_thing(&path).unwrap(), Some(thing()));
        let text = std::fs::read_to_string(&path).unwrap();
        let (header, payload) = text.split_once('\n').unwrap();
        let fields: Vec<&str> = header.split(' ').collect();
        assert_eq!(fields[..3], ["slipway-record", "node", "1"]);
        assert_eq!(fields[4], payload.len().to_string());
        assert!(payload.contains("\"name\": \"cp-1\""), "{payload}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn no_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_thing(&dir.path().join("record")).unwrap(), None);
    }

    #[test]
    fn a_file_without_the_magic_is_not_a_record() {
        let (_dir, path) = written();
        std::fs::write(&path, "{\"name\": \"cp-1\", \"count\": 3}\n").unwrap();
        let e = read_thing(&path).unwrap_err();
        assert!(matches!(e, Error::MatchMagic { .. }), "{e:?}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn a_huge_file_is_not_read_whole() {
        let (_dir, path) = written();
        let mut bytes = encode("node", 1, b"{}");
        bytes.resize(usize::try_from(MAX_RECORD_BYTES).unwrap() + 1, b' ');
        std::fs::write(&path, bytes).unwrap();
        let e = read_thing(&path).unwrap_err();
        assert!(matches!(e, Error::ExceedSize { .. }), "{e:?}");
    }

    #[test]
    fn a_malformed_header_says_what_is_wrong() {
        let (_dir, path) = written();
        let cases: [(&[u8], &str); 6] = [
            (b"slipway-record node 1 0000000 2\n{}", "CRC"),
            (b"slipway-record node one 00000000 2\n{}", "version"),
            (b"slipway-record node 1 00000000 -2\n{}", "length"),
            (b"slipway-record node 1 00000000\n{}", "found 3 fields"),
            (b"slipway-record Node 1 00000000 2\n{}", "kind"),
            (b"slipway-record node 1 00000000 2 {}", "end of line"),
        ];
        for (bytes, what) in cases {
            std::fs::write(&path, bytes).unwrap();
            let e = read_thing(&path).unwrap_err();
            assert!(matches!(e, Error::ParseHeader { .. }), "{e:?}");
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn a_torn_record_fails_its_length() {
        let (_dir, path) = written();
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 5]).unwrap();
        let e = read_thing(&path).unwrap_err();
        assert!(
            matches!(e, Error::VerifyLength { expected, found, .. } if expected == found + 5),
            "{e:?}"
        );
        let mut longer = whole.clone();
        longer.extend_from_slice(b"{}");
        std::fs::write(&path, &longer).unwrap();
        let e = read_thing(&path).unwrap_err();
        assert!(matches!(e, Error::VerifyLength { .. }), "{e:?}");
    }

    #[test]
    fn an_edited_payload_or_version_fails_the_crc() {
        let (_dir, path) = written();
        let whole = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, whole.replace("cp-1", "cp-2")).unwrap();
        let e = read_thing(&path).unwrap_err();
        assert!(matches!(e, Error::VerifyChecksum { .. }), "{e:?}");
        // A flipped version is damage, not a newer slipwayd's record.
        std::fs::write(&path, whole.replacen("node 1 ", "node 2 ", 1)).unwrap();
        let e = read_thing(&path).unwrap_err();
        assert!(matches!(e, Error::VerifyChecksum { .. }), "{e:?}");
    }

    #[test]
    fn a_record_of_another_kind_is_refused() {
        let (_dir, path) = written();
        let e = read::<Thing>(&path, "cluster-init", 1).unwrap_err();
        assert!(
            matches!(&e, Error::MatchKind { expected: "cluster-init", found, .. } if found == "node"),
            "{e:?}"
        );
    }

    #[test]
    fn a_newer_version_names_both_versions() {
        let (_dir, path) = written();
        write(&path, "node", 2, &thing()).unwrap();
        let e = read_thing(&path).unwrap_err();
        assert!(
            matches!(
                e,
                Error::NewerVersion {
                    found: 2,
                    ours: 1,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("newer slipwayd: node record version 2 > ours (1)"),
            "{e}"
        );
    }

    #[test]
    fn an_older_version_is_refused_by_read_and_handed_over_by_read_raw() {
        let (_dir, path) = written();
        let e = read::<Thing>(&path, "node", 2).unwrap_err();
        assert!(
            matches!(
                e,
                Error::OlderVersion {
                    found: 1,
                    ours: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        let raw = read_raw(&path, "node", 2).unwrap().unwrap();
        assert_eq!(raw.version, 1);
        let old: Thing = serde_json::from_slice(&raw.payload).unwrap();
        assert_eq!(old, thing());
    }

    #[test]
    fn a_payload_of_another_shape_is_refused() {
        let (_dir, path) = written();
        write(&path, "node", 1, &["not", "a", "thing"]).unwrap();
        let e = read_thing(&path).unwrap_err();
        assert!(
            matches!(e, Error::ParsePayload { kind: "node", .. }),
            "{e:?}"
        );
    }

    #[test]
    fn a_value_json_cannot_hold_is_refused_before_any_write() {
        let (_dir, path) = written();
        let keys: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let e = write(&path, "node", 1, &keys).unwrap_err();
        assert!(matches!(e, Error::EncodePayload { .. }), "{e:?}");
        assert_eq!(
            read_thing(&path).unwrap(),
            Some(thing()),
            "the old record stays"
        );
    }

    #[test]
    fn io_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the record belongs: it opens, but does not read.
        let e = read_thing(dir.path()).unwrap_err();
        assert!(matches!(e, Error::ReadRecord { .. }), "{e:?}");
        let missing = dir.path().join("no-such-dir/record");
        let e = write(&missing, "node", 1, &thing()).unwrap_err();
        assert!(matches!(e, Error::WriteRecord { .. }), "{e:?}");
        assert!(e.to_string().contains("no-such-dir/record"), "{e}");
    }

    #[test]
    fn a_write_is_atomic_and_ignores_a_crashed_writers_temporary() {
        let (dir, path) = written();
        // What a crash between write and rename leaves behind: a torn temporary.
        let leftover = dir.path().join(".record.Ab3xYz.tmp");
        std::fs::write(&leftover, "slipway-record node 1 00000000 999\n{").unwrap();
        assert_eq!(read_thing(&path).unwrap(), Some(thing()));

        let new = Thing {
            name: "cp-1".into(),
            count: 4,
        };
        let staged = stage(&path, "node", 1, &new).unwrap();
        assert_eq!(
            read_thing(&path).unwrap(),
            Some(thing()),
            "the old record until the rename"
        );
        staged.commit().unwrap();
        assert_eq!(read_thing(&path).unwrap(), Some(new));

        // A write abandoned before its rename (dropped) leaves the record and no temporary.
        drop(stage(&path, "node", 1, &thing()).unwrap());
        assert_eq!(read_thing(&path).unwrap().unwrap().count, 4);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".record.Ab3xYz.tmp", "record"]);
    }
}
