//! The stage cache: each stage's outputs live in `CACHE/stages/NAME-KEY/`, where KEY is the
//! sha256 of everything the stage reads. A stage is made in a temporary directory and renamed
//! into place when complete, so a killed build never leaves a half-made stage that looks done.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::Error;
use crate::events::Events;
use crate::sources::hex;

/// A stage key under construction: every input is length-prefixed, so no two input lists
/// collide.
pub struct Key(Sha256);

impl Key {
    /// A key for stage `name` under cache format `format`.
    pub fn new(format: &str, name: &str) -> Key {
        let mut key = Key(Sha256::new());
        key.add(format).add(name);
        key
    }

    /// Adds one input.
    pub fn add(&mut self, part: &str) -> &mut Key {
        self.0.update((part.len() as u64).to_le_bytes());
        self.0.update(part.as_bytes());
        self
    }

    /// The key, lowercase hex.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

/// The stage cache of one build.
pub struct Stages {
    dir: PathBuf,
    cached: Cell<usize>,
    run: Cell<usize>,
}

impl Stages {
    /// Opens (creating) the cache directory.
    pub fn open(dir: &Path) -> Result<Stages, Error> {
        std::fs::create_dir_all(dir).map_err(super::io_err("cache", "create", dir))?;
        Ok(Stages {
            dir: dir.to_owned(),
            cached: Cell::new(0),
            run: Cell::new(0),
        })
    }

    /// The directory of stage `name` with `key`, made by `make` unless the cache has it.
    pub fn get_or_make(
        &self,
        name: &'static str,
        key: &str,
        events: &Events,
        make: impl FnOnce(&Path) -> Result<(), Error>,
    ) -> Result<PathBuf, Error> {
        let done = self.dir.join(format!("{name}-{key}"));
        if done.is_dir() {
            events.cached(name, key);
            self.cached.set(self.cached.get() + 1);
            return Ok(done);
        }
        let stage = events.stage(name, None);
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}-"))
            .tempdir_in(&self.dir)
            .map_err(super::io_err(name, "create a directory in", &self.dir))?;
        make(tmp.path())?;
        match std::fs::rename(tmp.path(), &done) {
            Ok(()) => {}
            // Another build made the same stage meanwhile: the same inputs give the same output.
            Err(_) if done.is_dir() => {}
            Err(e) => return Err(super::io_err(name, "publish", &done)(e)),
        }
        stage.done();
        self.run.set(self.run.get() + 1);
        Ok(done)
    }

    /// Stages taken from the cache so far.
    pub fn cached(&self) -> usize {
        self.cached.get()
    }

    /// Stages run so far.
    pub fn run(&self) -> usize {
        self.run.get()
    }
}

/// Writes a stage's facts (`facts.json`).
pub fn write_facts(dir: &Path, stage: &'static str, facts: &impl Serialize) -> Result<(), Error> {
    let path = dir.join("facts.json");
    let text = serde_json::to_vec_pretty(facts).unwrap_or_default();
    std::fs::write(&path, text).map_err(super::io_err(stage, "write", &path))
}

/// Reads a stage's facts.
pub fn read_facts<T: DeserializeOwned>(dir: &Path, stage: &'static str) -> Result<T, Error> {
    let path = dir.join("facts.json");
    let bytes = std::fs::read(&path).map_err(super::io_err(stage, "read", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        super::io_err(stage, "parse", &path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e,
        ))
    })
}
