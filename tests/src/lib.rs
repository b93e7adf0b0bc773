//! Shared helpers for the end-to-end scenarios: running real tools, making disk contents,
//! and comparing sparse files without reading their holes.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod dbus;
pub mod hyperv;
pub mod image;
pub mod netns;
pub mod qemu;
pub mod registry;
pub mod sshd;
pub mod windows;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use images::vhdx::Options;
use images::vhdx::writer::{self, Extent, Summary, data_ranges};

/// Runs a command, panicking with its output when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its output whatever its status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e} (is the tool installed? run scripts/setup)"))
}

/// `qemu-img` with arguments.
pub fn qemu_img(args: &[&str]) -> Command {
    let mut cmd = Command::new("qemu-img");
    cmd.args(args);
    cmd
}

/// A small deterministic generator (xorshift64*), so test data is reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Creates a sparse raw file of `size` bytes with random data in each `(offset, len)` chunk.
pub fn make_raw(path: &Path, size: u64, chunks: &[(u64, u64)], seed: u64) {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    file.set_len(size).unwrap();
    let mut rng = Rng::new(seed);
    for &(offset, len) in chunks {
        let mut buf = vec![0u8; usize::try_from(len).unwrap()];
        rng.fill(&mut buf);
        file.write_all_at(&buf, offset).unwrap();
    }
    file.sync_all().unwrap();
}

/// Converts the whole raw file `raw` into a VHDX at `vhdx` with our streaming writer.
pub fn convert(raw: &Path, vhdx: &Path, options: &Options) -> Summary {
    let file = File::open(raw).unwrap();
    let len = file.metadata().unwrap().len();
    let extents = [Extent::File {
        file: std::sync::Arc::new(file),
        offset: 0,
        len,
    }];
    writer::write_file(vhdx, &extents, options, &mut |_| {}).unwrap()
}

/// Writes `bytes` at `offset` of an existing file.
pub fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

/// Reads `len` bytes at `offset`.
pub fn read(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// True when two files have the same size and content; only the ranges where either file
/// has data are read, so sparse files of any size compare quickly.
pub fn same_content(a: &Path, b: &Path) -> bool {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let size = fa.metadata().unwrap().len();
    if size != fb.metadata().unwrap().len() {
        return false;
    }
    let mut ranges = data_ranges(&fa, 0, size).unwrap();
    ranges.extend(data_ranges(&fb, 0, size).unwrap());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for (start, len) in ranges {
        let mut done = 0;
        while done < len {
            let n = usize::try_from((len - done).min(1 << 20)).unwrap();
            fa.read_exact_at(&mut x[..n], start + done).unwrap();
            fb.read_exact_at(&mut y[..n], start + done).unwrap();
            if x[..n] != y[..n] {
                return false;
            }
            done += n as u64;
        }
    }
    true
}

/// An error and its causes on one line, as `slipway vhdx check` prints them.
pub fn chain(error: &dyn std::error::Error) -> String {
    images::vhdx::check::error_line(error)
}
