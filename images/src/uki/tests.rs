//! UKI construction checked against the real stub and binutils.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::*;

/// Debian's systemd-boot-efi puts the x86-64 stub here.
const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

fn stub() -> Vec<u8> {
    std::fs::read(STUB).unwrap_or_else(|e| {
        panic!(
            "read the systemd EFI stub {STUB}: {e}; run ./scripts/setup, which installs the \
             Debian package systemd-boot-efi"
        )
    })
}

/// Runs a binutils tool and returns its stdout; fails the test on any error.
fn run(tool: &str, args: &[&str]) -> String {
    let output = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("run {tool}: {e}; run ./scripts/setup, which installs the Debian package binutils")
    });
    assert!(
        output.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One row of `objdump -h`.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    name: String,
    size: u64,
    vma: u64,
    file_offset: u64,
}

fn hex(text: &str) -> u64 {
    u64::from_str_radix(text, 16).unwrap_or_else(|e| panic!("{text:?} is not hexadecimal: {e}"))
}

fn sections_of(path: &Path) -> Vec<Row> {
    let path = path.to_str().unwrap();
    run("objdump", &["-h", path])
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            // "  8 .osrel  00000010  0000000000019400  0000000000019400  00011400  2**2"
            (words.len() == 7 && words[0].parse::<u32>().is_ok()).then(|| Row {
                name: words[1].to_owned(),
                size: hex(words[2]),
                vma: hex(words[3]),
                file_offset: hex(words[5]),
            })
        })
        .collect()
}

/// The optional header fields that `objdump -p` prints as "Name<tab>value".
fn headers_of(path: &Path) -> BTreeMap<String, u64> {
    run("objdump", &["-p", path.to_str().unwrap()])
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('\t')?;
            let value = value.split_whitespace().next()?;
            Some((key.to_owned(), u64::from_str_radix(value, 16).ok()?))
        })
        .collect()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap().wrapping_add(seed))
        .collect()
}

fn section<'a>(name: &'a str, data: &'a [u8]) -> Section<'a> {
    Section { name, data }
}

fn small_sections<'a>(initrd: &'a [u8], linux: &'a [u8]) -> Vec<Section<'a>> {
    vec![
        section(".osrel", b"ID=slipway\nVERSION_ID=1\n"),
        section(".cmdline", b"console=ttyS0 quiet"),
        section(".uname", b"6.1.0-slipway"),
        section(".initrd", initrd),
        section(".linux", linux),
    ]
}

/// Offsets in the real stub, for tests that damage one field.
fn coff_at(field: usize) -> usize {
    u32_at(&stub(), DOS_E_LFANEW, "e_lfanew").unwrap() as usize + PE_SIGNATURE.len() + field
}

fn optional_at(field: usize) -> usize {
    coff_at(COFF_HEADER_LEN) + field
}

fn section_table_at(field: usize) -> usize {
    let size = u16_at(&stub(), coff_at(COFF_SIZE_OF_OPTIONAL_HEADER), "").unwrap();
    optional_at(usize::from(size)) + field
}

fn patched(offset: usize, bytes: &[u8]) -> Vec<u8> {
    let mut image = stub();
    image[offset..offset + bytes.len()].copy_from_slice(bytes);
    image
}

/// Builds a UKI without sections from the stub with `bytes` written at `offset`.
fn build_patched(offset: usize, bytes: &[u8]) -> Result<Vec<u8>, Error> {
    build(&patched(offset, bytes), &[])
}

#[test]
fn binutils_reads_back_every_appended_section() {
    let dir = tempfile::tempdir().unwrap();
    let stub_path = Path::new(STUB);
    let initrd = pattern(1500, 7);
    let linux = pattern(4097, 11);
    let sections = small_sections(&initrd, &linux);
    let uki = build(&stub(), &sections).unwrap();
    let uki_path = dir.path().join("uki.efi");
    std::fs::write(&uki_path, &uki).unwrap();

    let before = sections_of(stub_path);
    let after = sections_of(&uki_path);
    assert_eq!(after.len(), before.len() + sections.len(), "{after:#?}");
    assert_eq!(
        after[..before.len()],
        before[..],
        "the stub's own sections moved"
    );

    let stub_headers = headers_of(stub_path);
    let headers = headers_of(&uki_path);
    let alignment = headers["SectionAlignment"];
    let file_alignment = headers["FileAlignment"];
    let base = headers["ImageBase"];
    let up = |value: u64, to: u64| value.div_ceil(to) * to;
    let mut expected_vma = base + up(stub_headers["SizeOfImage"], alignment);
    for (row, section) in after[before.len()..].iter().zip(&sections) {
        assert_eq!(row.name, section.name);
        assert_eq!(row.size, section.data.len() as u64, "{}", section.name);
        assert_eq!(row.vma, expected_vma, "{}", section.name);
        assert_eq!(row.file_offset % file_alignment, 0, "{}", section.name);
        expected_vma = up(row.vma + row.size, alignment);

        let out = dir.path().join(format!("{}.bin", &section.name[1..]));
        let only = format!("--only-section={}", section.name);
        let args = [
            "-O",
            "binary",
            &only,
            uki_path.to_str().unwrap(),
            out.to_str().unwrap(),
        ];
        run("objcopy", &args);
        let read_back = std::fs::read(&out).unwrap();
        assert!(
            read_back == section.data,
            "{} reads back differently",
            section.name
        );
    }
    assert_eq!(headers["SizeOfImage"], expected_vma - base);
    assert_eq!(
        headers["SizeOfInitializedData"],
        stub_headers["SizeOfInitializedData"]
            + sections
                .iter()
                .map(|s| up(s.data.len() as u64, file_alignment))
                .sum::<u64>()
    );
    let checksum_at = optional_at(OPT_CHECKSUM);
    assert_eq!(
        headers["CheckSum"],
        u64::from(checksum(&uki, checksum_at).unwrap())
    );
    assert!(
        run("objdump", &["-t", uki_path.to_str().unwrap()]).contains("no symbols"),
        "the stub's COFF symbol table should have been dropped"
    );
}

#[test]
fn sbverify_finds_no_gaps_to_leave_unsigned() {
    // Authenticode hashes the headers, each section's data and what follows the last section;
    // bytes between sections (such as a symbol table left in place) would go unsigned.
    let dir = tempfile::tempdir().unwrap();
    let initrd = pattern(1500, 3);
    let linux = pattern(3000, 5);
    let uki_path = dir.path().join("uki.efi");
    std::fs::write(
        &uki_path,
        build(&stub(), &small_sections(&initrd, &linux)).unwrap(),
    )
    .unwrap();
    let output = Command::new("sbverify")
        .args(["--list", uki_path.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| {
            panic!("run sbverify: {e}; run ./scripts/setup, which installs the Debian package sbsigntool")
        });
    // It reports on stderr, warnings included.
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "sbverify --list failed: {report}");
    assert!(report.contains("No signature table present"), "{report}");
    assert!(!report.contains("warning"), "sbverify warns: {report}");
}

#[test]
fn our_checksum_of_the_stub_matches_the_one_binutils_stored() {
    let stub = stub();
    let at = optional_at(OPT_CHECKSUM);
    let stored = u32_at(&stub, at, "CheckSum").unwrap();
    if stored == 0 {
        println!("the stub stores no checksum (0): nothing to compare ours with");
        return;
    }
    assert_eq!(checksum(&stub, at), Some(stored));
}

#[test]
fn checksum_counts_the_field_as_zero_and_pads_an_odd_byte() {
    // Words 0x0201 + 0x0003 (the odd byte padded with zero), plus the length; the field lies
    // past the end.
    assert_eq!(checksum(&[1, 2, 3], 8), Some(0x0204 + 3));
    // The field (bytes 2..6) counts as zero.
    assert_eq!(
        checksum(&[1, 2, 0xff, 0xff, 0xff, 0xff, 9], 2),
        Some(0x0201 + 0x0009 + 7)
    );
    // Carries fold back in: 0xffff + 0x0002 = 0x1_0001 -> 0x0002.
    assert_eq!(checksum(&[0xff, 0xff, 2, 0], 100), Some(0x0002 + 4));
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let initrd = pattern(700, 1);
    let linux = pattern(900, 2);
    let sections = small_sections(&initrd, &linux);
    assert_eq!(build(&stub(), &sections), build(&stub(), &sections));
}

#[test]
fn the_stub_has_room_for_seven_headers_and_refuses_an_eighth() {
    let names = [".a", ".b", ".c", ".d", ".e", ".f", ".g", ".h"];
    let sections: Vec<Section> = names.iter().map(|name| section(name, b"x")).collect();
    assert!(build(&stub(), &sections[..7]).is_ok());
    assert_eq!(
        build(&stub(), &sections),
        Err(Error::FitSectionHeaders {
            needed: 8,
            needed_bytes: 320,
            available_bytes: 312
        })
    );
}

#[test]
fn truncated_stub_is_refused() {
    let stub = stub();
    assert!(matches!(
        build(&[], &[]),
        Err(Error::ReadStub {
            field: "DOS magic",
            ..
        })
    ));
    assert!(matches!(
        build(&stub[..0x90], &[]),
        Err(Error::ReadStub { .. })
    ));
    assert!(matches!(
        build(&stub[..0x200], &[]),
        Err(Error::LocateSectionTable { count: 8, .. })
    ));
    assert!(matches!(
        build(&stub[..0x8000], &[]),
        Err(Error::LocateSectionData { name, .. }) if name == ".text"
    ));
}

#[test]
fn garbage_is_refused() {
    let garbage = b"this is not an EFI binary, just some text".repeat(20);
    assert_eq!(
        build(&garbage, &[]),
        Err(Error::CheckDosMagic { found: *b"th" })
    );
}

#[test]
fn missing_pe_signature_is_refused() {
    let pe = coff_at(0) - PE_SIGNATURE.len();
    let found = *b"NE\0\0";
    let expected = Error::CheckPeSignature { offset: pe, found };
    assert_eq!(build_patched(pe, &found), Err(expected));
}

#[test]
fn pe32_stub_is_refused() {
    let result = build_patched(optional_at(OPT_MAGIC), &0x10bu16.to_le_bytes());
    assert_eq!(result, Err(Error::CheckOptionalMagic { found: 0x10b }));
}

#[test]
fn too_many_data_directories_are_refused() {
    let result = build_patched(
        optional_at(OPT_NUMBER_OF_RVA_AND_SIZES),
        &100u32.to_le_bytes(),
    );
    let expected = Error::CheckOptionalHeaderSize {
        size: 240,
        directories: 100,
    };
    assert_eq!(result, Err(expected));
}

#[test]
fn odd_alignment_is_refused() {
    let result = build_patched(optional_at(OPT_FILE_ALIGNMENT), &0x300u32.to_le_bytes());
    let expected = Error::CheckAlignment {
        section_alignment: 0x200,
        file_alignment: 0x300,
    };
    assert_eq!(result, Err(expected));
}

#[test]
fn section_table_past_the_headers_is_refused() {
    let result = build_patched(coff_at(COFF_NUMBER_OF_SECTIONS), &0xffffu16.to_le_bytes());
    assert!(matches!(
        result,
        Err(Error::LocateSectionTable { count: 0xffff, .. })
    ));
}

#[test]
fn section_data_past_the_end_is_refused() {
    let at = section_table_at(SEC_POINTER_TO_RAW_DATA);
    let result = build_patched(at, &0xffff_fff0u32.to_le_bytes());
    assert!(matches!(
        result,
        Err(Error::LocateSectionData { name, offset: 0xffff_fff0, .. }) if name == ".text"
    ));
}

#[test]
fn symbol_table_past_the_end_is_refused() {
    let result = build_patched(
        coff_at(COFF_NUMBER_OF_SYMBOLS),
        &0x1000_0000u32.to_le_bytes(),
    );
    assert!(matches!(
        result,
        Err(Error::LocateSymbolTable {
            symbols: 0x1000_0000,
            ..
        })
    ));
}

#[test]
fn signed_stub_is_refused() {
    let at = optional_at(OPT_DATA_DIRECTORIES + SECURITY_DIRECTORY * DATA_DIRECTORY_LEN);
    let result = build_patched(at, &[0, 0x20, 0, 0, 0x10, 0, 0, 0]);
    assert_eq!(
        result,
        Err(Error::RefuseSignedStub {
            offset: 0x2000,
            size: 0x10
        })
    );
}

#[test]
fn bad_section_names_are_refused() {
    for name in ["", ".toolong1", ".a b", ".ünï", ".a\0"] {
        let expected = Error::ValidateSectionName {
            name: name.to_owned(),
        };
        assert_eq!(build(&stub(), &[section(name, b"x")]), Err(expected));
    }
}

#[test]
fn empty_section_is_refused() {
    let expected = Error::AddEmptySection {
        name: ".cmdline".to_owned(),
    };
    assert_eq!(build(&stub(), &[section(".cmdline", b"")]), Err(expected));
}

#[test]
fn duplicate_section_is_refused() {
    let cmdline = section(".cmdline", b"quiet");
    let expected = Error::AddDuplicateSection {
        name: ".cmdline".to_owned(),
    };
    assert_eq!(build(&stub(), &[cmdline, cmdline]), Err(expected));
    // The stub has its own .sbat; ukify merges the kernel's into it, we do not (yet).
    let expected = Error::AddDuplicateSection {
        name: ".sbat".to_owned(),
    };
    assert_eq!(
        build(&stub(), &[section(".sbat", b"sbat,1\n")]),
        Err(expected)
    );
}

#[test]
fn data_after_the_section_table_is_not_overwritten() {
    let end = section_table_at(8 * SECTION_HEADER_LEN);
    let damaged = patched(end + SECTION_HEADER_LEN + 1, b"!");
    let two = [section(".a", b"x"), section(".b", b"y")];
    assert!(build(&damaged, &two[..1]).is_ok());
    let expected = Error::OverwriteHeaderData {
        offset: end + SECTION_HEADER_LEN + 1,
    };
    assert_eq!(build(&damaged, &two), Err(expected));
}

#[test]
fn image_past_4_gib_is_refused() {
    let damaged = patched(
        optional_at(OPT_SIZE_OF_IMAGE),
        &0xffff_fe00u32.to_le_bytes(),
    );
    let linux = pattern(0x1000, 0);
    let expected = Error::GrowImage {
        name: ".linux".to_owned(),
    };
    assert_eq!(build(&damaged, &[section(".linux", &linux)]), Err(expected));
}
