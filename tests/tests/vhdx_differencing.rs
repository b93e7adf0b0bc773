//! Differencing children: created over a base, written sparsely, read through the chain by
//! our reader and described by libvhdi's `vhdiinfo` (qemu cannot open differencing VHDX).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use images::vhdx::child::{self, ChildOptions};
use images::vhdx::update::ChildWriter;
use images::vhdx::{Identity, Options, Vhdx, check, export, reader};
use tests::{chain, make_raw, patch, run, same_content};

const MIB: u64 = 1 << 20;

fn make_base(dir: &Path, name: &str, seed: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let raw = dir.join(format!("{name}.raw"));
    make_raw(
        &raw,
        64 * MIB + 512,
        &[
            (0, MIB),
            (10 * MIB, 3 * MIB + 4096),
            (64 * MIB - 4096, 4096 + 512),
        ],
        seed,
    );
    let vhdx = dir.join(format!("{name}.vhdx"));
    let options = Options::new(Identity::random().unwrap());
    tests::convert(&raw, &vhdx, &options);
    (raw, vhdx)
}

#[test]
fn a_child_reads_through_to_its_base_and_keeps_its_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, base) = make_base(dir.path(), "base", 1);
    let vm = dir.path().join("vm").join("os.vhdx");
    std::fs::create_dir(vm.parent().unwrap()).unwrap();
    child::create(&base, &vm, &ChildOptions::default()).unwrap();
    let base_bytes = std::fs::read(&base).unwrap();

    // A fresh child shows exactly the base.
    let out = dir.path().join("fresh.raw");
    export::export_file(&vm, &out, &mut |_| {}).unwrap();
    assert!(same_content(&raw, &out));

    // Sparse writes: inside a base block, into a base hole, across a block boundary, at the end.
    let expected = dir.path().join("expected.raw");
    std::fs::copy(&raw, &expected).unwrap();
    let mut writer = ChildWriter::open(&vm).unwrap();
    let writes: [(u64, usize, u8); 4] = [
        (10 * MIB + 512, 1024, 0xAA),
        (30 * MIB, 4096, 0xBB),
        (MIB - 1024, 8192, 0xCC),
        (64 * MIB, 512, 0xDD),
    ];
    for (offset, len, fill) in writes {
        writer.write_at(&vec![fill; len], offset).unwrap();
        patch(&expected, offset, &vec![fill; len]);
    }
    writer.flush().unwrap();
    drop(writer);
    assert!(writer_refuses_unaligned(&vm));

    let report = check::check(&vm);
    assert!(report.is_clean(), "{:?}", report.findings);
    let out = dir.path().join("written.raw");
    export::export_file(&vm, &out, &mut |_| {}).unwrap();
    assert!(
        same_content(&expected, &out),
        "the child must show its writes over the base"
    );
    assert_eq!(
        std::fs::read(&base).unwrap(),
        base_bytes,
        "the base must never change"
    );
    let opened = Vhdx::open_chain(&vm).unwrap();
    assert_eq!(opened.kind(), images::vhdx::Kind::Differencing);
    assert!(
        opened
            .allocated_blocks()
            .all(|b| b.state == images::vhdx::format::PayloadState::PartiallyPresent)
    );

    // The streaming view reads the same bytes as the export.
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut cursor = opened.cursor();
        cursor.seek(SeekFrom::Start(MIB - 1024)).unwrap();
        let mut got = vec![0u8; 8192];
        cursor.read_exact(&mut got).unwrap();
        assert_eq!(got, vec![0xCC; 8192]);
        cursor.seek(SeekFrom::End(-512)).unwrap();
        let mut tail = Vec::new();
        cursor.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, vec![0xDD; 512]);
    }

    // A grandchild over the written child reads the same.
    let top = dir.path().join("vm").join("top.vhdx");
    child::create(&vm, &top, &ChildOptions::default()).unwrap();
    let out = dir.path().join("top.raw");
    export::export_file(&top, &out, &mut |_| {}).unwrap();
    assert!(same_content(&expected, &out));

    // libvhdi agrees on what the child is.
    let info = run(Command::new("vhdiinfo").arg(&vm));
    assert!(info.contains("Disk type\t\t: Differential"), "{info}");
    assert!(
        info.contains(&format!("({} bytes)", 64 * MIB + 512)),
        "{info}"
    );
    assert!(info.contains("base.vhdx"), "{info}");
    let base_guid = Vhdx::open(&base)
        .unwrap()
        .header()
        .data_write_guid
        .to_string()
        .to_lowercase();
    assert!(
        info.contains(&format!("Parent identifier\t: {base_guid}")),
        "{info}"
    );

    // libvhdi, an independent reader, sees the same guest content through the chain.
    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).unwrap();
    // vhdimount joins the parent's file name to the child path's directory; given a bare
    // name (run from the child's directory) it opens the recorded absolute path as is.
    run(Command::new("vhdimount")
        .current_dir(vm.parent().unwrap())
        .arg("os.vhdx")
        .arg(&mount));
    let _unmount = Unmount(mount.clone());
    assert!(
        same_content(&expected, &mount.join("vhdi2")),
        "libvhdi reads the chain differently"
    );
}

/// Unmounts a FUSE mount when dropped, so a failed assertion leaves nothing mounted.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn writer_refuses_unaligned(vm: &Path) -> bool {
    let mut w = ChildWriter::open(vm).unwrap();
    matches!(
        w.write_at(&[1u8; 100], 512),
        Err(images::vhdx::update::Error::AlignWrite { .. })
    )
}

#[test]
fn the_parent_is_found_by_relative_path_and_must_match_its_linkage() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    std::fs::create_dir(&first).unwrap();
    let (raw, base) = make_base(&first, "base", 2);
    let vm = first.join("vm.vhdx");
    child::create(&base, &vm, &ChildOptions::default()).unwrap();

    // Move the directory: the absolute path is stale, the relative one still works.
    let moved = dir.path().join("moved");
    std::fs::rename(&first, &moved).unwrap();
    let out = dir.path().join("moved.raw");
    export::export_file(&moved.join("vm.vhdx"), &out, &mut |_| {}).unwrap();
    assert!(same_content(&moved.join("base.raw"), &out));
    let _ = raw;

    // A different base under the same name is refused, naming both identifiers.
    let (_, other) = make_base(dir.path(), "other", 3);
    std::fs::rename(&other, moved.join("base.vhdx")).unwrap();
    let err = Vhdx::open_chain(&moved.join("vm.vhdx")).unwrap_err();
    assert!(
        matches!(err, reader::Error::MatchParent { .. }),
        "{}",
        chain(&err)
    );
    assert!(chain(&err).contains("is not the parent"), "{}", chain(&err));
    assert!(!check::check(&moved.join("vm.vhdx")).is_clean());

    // No parent at all: the error lists every path tried.
    std::fs::remove_file(moved.join("base.vhdx")).unwrap();
    let err = Vhdx::open_chain(&moved.join("vm.vhdx")).unwrap_err();
    let text = chain(&err);
    assert!(
        text.contains("find the parent") && text.contains("base.vhdx"),
        "{text}"
    );
    // Opened alone, the child still describes itself but refuses to read what it lacks.
    let alone = Vhdx::open(&moved.join("vm.vhdx")).unwrap();
    assert!(matches!(
        alone.read_at(&mut [0u8; 512], 0),
        Err(reader::Error::NeedParent { .. })
    ));
}
