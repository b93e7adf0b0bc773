//! Our VHDX writer and reader against real qemu-img, in both directions.
//!
//! Every image we write must pass `qemu-img check` and `qemu-img compare` against its input;
//! every dynamic and fixed image qemu-img writes must export byte-identical through our reader.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use images::vhdx::{Extent, Identity, Options, Vhdx, check, export, writer};
use tests::{make_raw, output, qemu_img, run, same_content};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

struct Case {
    name: &'static str,
    size: u64,
    chunks: Vec<(u64, u64)>,
    block_size: u32,
    sector: u32,
    fixed: bool,
}

fn case(name: &'static str, size: u64, chunks: Vec<(u64, u64)>, block_size: u32) -> Case {
    Case {
        name,
        size,
        chunks,
        block_size,
        sector: 512,
        fixed: false,
    }
}

fn write_ours(raw: &Path, out: &Path, c: &Case) -> writer::Summary {
    let file = std::sync::Arc::new(std::fs::File::open(raw).unwrap());
    let mut options = Options::new(Identity::derived(c.name));
    options.block_size = c.block_size;
    options.logical_sector_size = c.sector;
    options.fixed = c.fixed;
    let extents = [Extent::File {
        file,
        offset: 0,
        len: c.size,
    }];
    writer::write_file(out, &extents, &options, &mut |_| {}).unwrap()
}

/// Number of blocks holding at least one non-zero byte of `chunks` (data is random, so
/// every byte of a chunk is taken as non-zero: true with overwhelming probability).
fn blocks_with_data(c: &Case) -> u64 {
    let bs = u64::from(c.block_size);
    let mut blocks: Vec<u64> = c
        .chunks
        .iter()
        .flat_map(|&(o, l)| (o / bs)..=((o + l - 1) / bs))
        .collect();
    blocks.sort_unstable();
    blocks.dedup();
    blocks.len() as u64
}

#[test]
fn images_we_write_pass_qemu_img_check_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    let cases = vec![
        case("empty", 64 * MIB, vec![], 1 << 20),
        case("dense", 24 * MIB, vec![(0, 24 * MIB)], 1 << 20),
        case(
            "sparse",
            256 * MIB,
            vec![
                (0, 4096),
                (3 * MIB + 512, 9000),
                (100 * MIB, 2 * MIB),
                (256 * MIB - 4096, 4096),
            ],
            2 << 20,
        ),
        case(
            "odd-size",
            10 * MIB + 3 * 512,
            vec![(9 * MIB, MIB + 3 * 512)],
            1 << 20,
        ),
        // Past 64 GiB with 1 MiB blocks: sector-bitmap entries interleave the BAT every 4 GiB.
        case(
            "huge-sparse",
            70 * GIB + 5 * 512,
            vec![
                (0, MIB),
                (4 * GIB - MIB, 2 * MIB),
                (4 * GIB + 7 * MIB, 4096),
                (64 * GIB + 5 * MIB, 3 * MIB),
                (70 * GIB, 5 * 512),
            ],
            1 << 20,
        ),
        Case {
            sector: 4096,
            ..case(
                "sector-4096",
                64 * MIB,
                vec![(MIB, 8192), (40 * MIB, 3 * MIB)],
                1 << 20,
            )
        },
        case(
            "block-32m",
            200 * MIB,
            vec![(31 * MIB, 2 * MIB), (150 * MIB, 4096)],
            32 << 20,
        ),
        case(
            "block-256m",
            600 * MIB,
            vec![(255 * MIB, 2 * MIB), (599 * MIB, MIB)],
            256 << 20,
        ),
        Case {
            fixed: true,
            ..case("fixed-1m", 48 * MIB, vec![(5 * MIB, MIB)], 1 << 20)
        },
        Case {
            fixed: true,
            ..case(
                "fixed-32m-odd",
                70 * MIB + 512,
                vec![(70 * MIB, 512)],
                32 << 20,
            )
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let raw = dir.path().join(format!("{}.raw", c.name));
        let vhdx = dir.path().join(format!("{}.vhdx", c.name));
        make_raw(&raw, c.size, &c.chunks, i as u64 + 1);
        let summary = write_ours(&raw, &vhdx, c);
        let (r, v) = (raw.to_str().unwrap(), vhdx.to_str().unwrap());
        if c.sector == 512 {
            run(&mut qemu_img(&["check", "-f", "vhdx", v]));
            let cmp = output(&mut qemu_img(&["compare", "-f", "raw", "-F", "vhdx", r, v]));
            assert!(
                cmp.status.success(),
                "{}: qemu-img compare: {}",
                c.name,
                String::from_utf8_lossy(&cmp.stdout)
            );
        } else {
            // qemu's VHDX driver refuses logical sectors other than 512 ("Operation not
            // supported"); libvhdi reads them, so it is the independent reader here.
            let info = run(std::process::Command::new("vhdiinfo").arg(v));
            assert!(
                info.contains(&format!("Bytes per sector\t: {} bytes", c.sector)),
                "{info}"
            );
            assert!(info.contains(&format!("({} bytes)", c.size)), "{info}");
        }
        let ours = Vhdx::open(&vhdx).unwrap();
        let g = ours.geometry();
        assert_eq!(
            (g.virtual_size, g.block_size, g.logical_sector_size),
            (c.size, c.block_size, c.sector),
            "{}",
            c.name
        );
        let expected_blocks = if c.fixed {
            g.data_blocks()
        } else {
            blocks_with_data(c)
        };
        assert_eq!(
            summary.allocated_blocks, expected_blocks,
            "{}: zero blocks must not be allocated",
            c.name
        );
        assert_eq!(
            ours.allocated_blocks().count() as u64,
            expected_blocks,
            "{}",
            c.name
        );
        assert!(
            check::check(&vhdx).is_clean(),
            "{}: {:?}",
            c.name,
            check::check(&vhdx).findings
        );
        let back = dir.path().join(format!("{}.back", c.name));
        export::export_file(&vhdx, &back, &mut |_| {}).unwrap();
        assert!(
            same_content(&raw, &back),
            "{}: our export differs from the input",
            c.name
        );
        for f in [raw, vhdx, back] {
            std::fs::remove_file(f).unwrap();
        }
    }
}

#[test]
fn images_qemu_img_writes_export_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("input.raw");
    let size = 40 * MIB + 4096;
    make_raw(
        &raw,
        size,
        &[
            (0, 4096),
            (MIB + 100 * 512, 3 * MIB),
            (17 * MIB, 4096),
            (33 * MIB, 7 * MIB + 4096),
        ],
        99,
    );
    // A block of explicit zeros inside the data, so zero detection and block_state_zero matter.
    tests::patch(&raw, 2 * MIB, &vec![0u8; 1 << 20]);
    for subformat in ["dynamic", "fixed"] {
        for block_size in ["1M", "8M", "32M"] {
            for zero in ["on", "off"] {
                let name = format!("q-{subformat}-{block_size}-{zero}");
                let vhdx = dir.path().join(format!("{name}.vhdx"));
                let opts = format!(
                    "subformat={subformat},block_size={block_size},block_state_zero={zero}"
                );
                run(&mut qemu_img(&[
                    "convert",
                    "-f",
                    "raw",
                    "-O",
                    "vhdx",
                    "-o",
                    &opts,
                    raw.to_str().unwrap(),
                    vhdx.to_str().unwrap(),
                ]));
                let report = check::check(&vhdx);
                assert!(report.is_clean(), "{name}: {:?}", report.findings);
                let opened = Vhdx::open(&vhdx).unwrap();
                let expected_kind = if subformat == "fixed" {
                    images::vhdx::Kind::Fixed
                } else {
                    images::vhdx::Kind::Dynamic
                };
                assert_eq!(opened.kind(), expected_kind, "{name}");
                let back = dir.path().join(format!("{name}.raw"));
                export::export_file(&vhdx, &back, &mut |_| {}).unwrap();
                assert!(
                    same_content(&raw, &back),
                    "{name}: export differs from what qemu-img was given"
                );
                std::fs::remove_file(&back).unwrap();
                std::fs::remove_file(&vhdx).unwrap();
            }
        }
    }
}

#[test]
fn a_qcow2_overlay_over_our_vhdx_reads_through_in_qemu() {
    // How the supervisor gives each VM its OS disk: qemu cannot open differencing VHDX.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("base.raw");
    make_raw(&raw, 32 * MIB, &[(MIB, 5 * MIB)], 5);
    let base = dir.path().join("base.vhdx");
    write_ours(
        &raw,
        &base,
        &case("overlay-base", 32 * MIB, vec![], 1 << 20),
    );
    let overlay = dir.path().join("vm.qcow2");
    run(&mut qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "vhdx",
        overlay.to_str().unwrap(),
    ]));
    run(&mut qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "qcow2",
        raw.to_str().unwrap(),
        overlay.to_str().unwrap(),
    ]));
}
