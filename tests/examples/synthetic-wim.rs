//! Makes the synthetic install.wim the Windows image tests use, with BYTES of filler:
//! `cargo run -p tests --example synthetic-wim -- DIR BYTES` prints the WIM's path.
//! scripts/bench-windows uses it (no Windows media can be had here).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(bytes)) = (args.next(), args.next()) else {
        eprintln!("usage: synthetic-wim DIR BYTES");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = tests::windows::Spec {
        filler: bytes.parse().expect("BYTES: a number"),
        ..tests::windows::Spec::default()
    };
    println!("{}", tests::windows::install_wim(&dir, &spec).display());
}
