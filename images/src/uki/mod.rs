//! Unified Kernel Images: systemd's EFI stub with the kernel, initrd, command line and os-release
//! appended as PE sections, which the stub finds by name when the firmware starts it.
//!
//! The stub (`linuxx64.efi.stub`, Debian package `systemd-boot-efi`) is a PE32+ image. New section
//! headers go into the zero padding between the section table and `SizeOfHeaders`, and their data
//! after the end of the file, so no byte of the stub's code or data moves: its relocations, entry
//! point and `.sbat` stay valid. We never shift the file to make room for headers; a stub without
//! room is refused.
//!
//! The output depends only on the inputs (no timestamps, no randomness), so the same stub and
//! sections give the same bytes, and the same Secure Boot signature and TPM measurements.

/// `MZ`: the DOS header's magic.
const DOS_MAGIC: [u8; 2] = *b"MZ";
/// Offset of `e_lfanew`, the file offset of the PE signature, in the DOS header.
const DOS_E_LFANEW: usize = 0x3c;
/// The PE signature that `e_lfanew` points to.
const PE_SIGNATURE: [u8; 4] = *b"PE\0\0";
/// The COFF file header, which follows the signature.
const COFF_HEADER_LEN: usize = 20;
const COFF_NUMBER_OF_SECTIONS: usize = 2;
const COFF_POINTER_TO_SYMBOL_TABLE: usize = 8;
const COFF_NUMBER_OF_SYMBOLS: usize = 12;
const COFF_SIZE_OF_OPTIONAL_HEADER: usize = 16;
const COFF_CHARACTERISTICS: usize = 18;
/// COFF characteristics bit: the image carries no local symbols.
const IMAGE_FILE_LOCAL_SYMS_STRIPPED: u16 = 0x0008;
/// One COFF symbol table record.
const COFF_SYMBOL_LEN: usize = 18;
/// The string table's leading length field, which counts itself.
const COFF_STRING_TABLE_LENGTH_LEN: u32 = 4;

/// Optional header magic of PE32+ (64-bit) images; PE32 is 0x10b.
const PE32_PLUS_MAGIC: u16 = 0x20b;
/// Offsets in the PE32+ optional header.
const OPT_MAGIC: usize = 0;
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_CHECKSUM: usize = 64;
const OPT_NUMBER_OF_RVA_AND_SIZES: usize = 108;
const OPT_DATA_DIRECTORIES: usize = 112;
/// One data directory entry: RVA (or, for the security directory, a file offset) and size.
const DATA_DIRECTORY_LEN: usize = 8;
/// The security (certificate table) directory: non-empty in a signed image.
const SECURITY_DIRECTORY: usize = 4;

/// One section table entry and the offsets of its fields.
const SECTION_HEADER_LEN: usize = 40;
const SECTION_NAME_LEN: usize = 8;
const SEC_VIRTUAL_SIZE: usize = 8;
const SEC_VIRTUAL_ADDRESS: usize = 12;
const SEC_SIZE_OF_RAW_DATA: usize = 16;
const SEC_POINTER_TO_RAW_DATA: usize = 20;
const SEC_CHARACTERISTICS: usize = 36;
const IMAGE_SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;
/// Appended sections are read-only initialised data: the stub reads them, nothing executes them
/// in place.
const NEW_SECTION_CHARACTERISTICS: u32 = IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ;

/// Why a UKI could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The stub ends before a header field.
    #[error(
        "read the stub's {field} at offset {offset:#x}: the stub is only {file_len} bytes; \
         is it a truncated or non-EFI file? (reinstall systemd-boot-efi)"
    )]
    ReadStub {
        /// The field.
        field: &'static str,
        /// Its file offset.
        offset: usize,
        /// The stub's length.
        file_len: usize,
    },
    /// The stub does not start with `MZ`.
    #[error(
        "check the stub's DOS magic: found {found:02x?}, expected \"MZ\"; this is not an EFI binary"
    )]
    CheckDosMagic {
        /// The first two bytes.
        found: [u8; 2],
    },
    /// `e_lfanew` does not point to `PE\0\0`.
    #[error(
        "check the stub's PE signature at {offset:#x}: found {found:02x?}, expected \"PE\\0\\0\""
    )]
    CheckPeSignature {
        /// Where `e_lfanew` points.
        offset: usize,
        /// What is there.
        found: [u8; 4],
    },
    /// The optional header is not PE32+.
    #[error(
        "check the stub's optional header magic: found {found:#x}, expected {PE32_PLUS_MAGIC:#x} \
         (PE32+); use the 64-bit stub linuxx64.efi.stub"
    )]
    CheckOptionalMagic {
        /// The magic found.
        found: u16,
    },
    /// `SizeOfOptionalHeader` is too small for the PE32+ fields and data directories it claims.
    #[error(
        "check the stub's optional header: SizeOfOptionalHeader {size} cannot hold the PE32+ fields \
         and {directories} data directories"
    )]
    CheckOptionalHeaderSize {
        /// `SizeOfOptionalHeader`.
        size: u16,
        /// `NumberOfRvaAndSizes`.
        directories: u32,
    },
    /// The alignments are not powers of two, or the section alignment is below the file alignment.
    #[error(
        "check the stub's alignments: SectionAlignment {section_alignment:#x} and FileAlignment \
         {file_alignment:#x} must be powers of two with SectionAlignment >= FileAlignment"
    )]
    CheckAlignment {
        /// `SectionAlignment`.
        section_alignment: u32,
        /// `FileAlignment`.
        file_alignment: u32,
    },
    /// The section table runs past `SizeOfHeaders` or the end of the file.
    #[error(
        "locate the stub's section table: {count} headers at {offset:#x} run past SizeOfHeaders \
         {size_of_headers:#x} or the end of the {file_len}-byte file"
    )]
    LocateSectionTable {
        /// Offset of the table.
        offset: usize,
        /// `NumberOfSections`.
        count: u16,
        /// `SizeOfHeaders`.
        size_of_headers: u32,
        /// The stub's length.
        file_len: usize,
    },
    /// An existing section's raw data lies outside the file or inside the headers.
    #[error(
        "locate the data of the stub's section {name:?}: {size} bytes at {offset:#x} do not lie \
         between the headers and the end of the {file_len}-byte file"
    )]
    LocateSectionData {
        /// Section name.
        name: String,
        /// `PointerToRawData`.
        offset: u32,
        /// `SizeOfRawData`.
        size: u32,
        /// The stub's length.
        file_len: usize,
    },
    /// The COFF symbol table lies outside the file or overlaps section data.
    #[error(
        "locate the stub's COFF symbol table: {symbols} symbols at {offset:#x} run past the end of \
         the {file_len}-byte file or overlap section data"
    )]
    LocateSymbolTable {
        /// `PointerToSymbolTable`.
        offset: u32,
        /// `NumberOfSymbols`.
        symbols: u32,
        /// The stub's length.
        file_len: usize,
    },
    /// The stub is already signed: appending would break the signature and the certificate table.
    #[error(
        "refuse the signed stub: it carries a certificate table ({size} bytes at {offset:#x}); \
         build from the unsigned stub and sign the finished UKI"
    )]
    RefuseSignedStub {
        /// Certificate table file offset.
        offset: u32,
        /// Certificate table size.
        size: u32,
    },
    /// A section name is empty, longer than 8 bytes, or not printable ASCII.
    #[error(
        "validate section name {name:?}: expected 1 to 8 printable ASCII characters such as \".linux\""
    )]
    ValidateSectionName {
        /// The name given.
        name: String,
    },
    /// A section has no data.
    #[error("add section {name:?}: it is empty; leave the section out instead")]
    AddEmptySection {
        /// Section name.
        name: String,
    },
    /// A section name is given twice, or the stub already has it.
    #[error(
        "add section {name:?}: the stub or an earlier section already has this name, and the stub \
         would use only one of them"
    )]
    AddDuplicateSection {
        /// Section name.
        name: String,
    },
    /// The zero padding after the section table cannot hold the new section headers.
    #[error(
        "fit section headers: {needed} new headers need {needed_bytes} bytes but only \
         {available_bytes} bytes of padding follow the stub's section table (SizeOfHeaders); \
         append fewer sections"
    )]
    FitSectionHeaders {
        /// Headers to add.
        needed: usize,
        /// Bytes they need.
        needed_bytes: usize,
        /// Bytes of room.
        available_bytes: usize,
    },
    /// The room after the section table holds data, not padding.
    #[error(
        "overwrite header padding at {offset:#x}: the bytes after the stub's section table are not zero"
    )]
    OverwriteHeaderData {
        /// Offset of the first non-zero byte.
        offset: usize,
    },
    /// The image would outgrow the 32-bit fields of PE.
    #[error(
        "grow the image by section {name:?}: the UKI would exceed the 4 GiB limit of PE images"
    )]
    GrowImage {
        /// The section that does not fit.
        name: String,
    },
}

/// One payload to append to the stub as a PE section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section<'a> {
    /// The name the stub looks for: `.osrel`, `.cmdline`, `.uname`, `.initrd`, `.linux`, ...
    /// (1 to 8 printable ASCII characters).
    pub name: &'a str,
    /// The contents.
    pub data: &'a [u8],
}

/// Builds a UKI: `stub` with `sections` appended in the order given.
///
/// Put `.linux` last, as systemd's `ukify` does ("to leave breathing room for decompression"):
/// older kernels started through the EFI handover protocol run from where the stub loaded them.
///
/// Every name may appear once, and not be one the stub already has: the stub looks sections up by
/// name and would use only one of two. So the stub's `.sbat` is kept as it is; merging the
/// kernel's SBAT entries into it (as `ukify` does) is not done here.
///
/// A COFF symbol table at the end of the stub (Debian's stub has one) is dropped first, as
/// `ukify` does: PE images should carry none, and left in place it would sit between sections,
/// outside what Authenticode signs, which `sbsign` warns about. Any other data after the stub's
/// sections is kept, and the new sections follow it.
pub fn build(stub: &[u8], sections: &[Section]) -> Result<Vec<u8>, Error> {
    let layout = Layout::parse(stub)?;
    check_new_sections(&layout, sections)?;

    let mut out = stub.to_vec();
    if let Some(symbols) = layout.symbol_table.filter(|s| s.end == out.len()) {
        out.truncate(symbols.start);
        put(
            &mut out,
            layout.coff + COFF_POINTER_TO_SYMBOL_TABLE,
            &0u32.to_le_bytes(),
        )?;
        put(
            &mut out,
            layout.coff + COFF_NUMBER_OF_SYMBOLS,
            &0u32.to_le_bytes(),
        )?;
        let characteristics = layout.coff_characteristics | IMAGE_FILE_LOCAL_SYMS_STRIPPED;
        put(
            &mut out,
            layout.coff + COFF_CHARACTERISTICS,
            &characteristics.to_le_bytes(),
        )?;
    }

    let headers_start = layout.section_table_end;
    let needed_bytes = sections
        .len()
        .checked_mul(SECTION_HEADER_LEN)
        .and_then(|n| n.checked_add(headers_start))
        .filter(|end| *end <= layout.header_room_end)
        .map(|end| end - headers_start)
        .ok_or(Error::FitSectionHeaders {
            needed: sections.len(),
            needed_bytes: sections.len().saturating_mul(SECTION_HEADER_LEN),
            available_bytes: layout.header_room_end - headers_start,
        })?;
    let room =
        out.get(headers_start..headers_start + needed_bytes)
            .ok_or(Error::FitSectionHeaders {
                needed: sections.len(),
                needed_bytes,
                available_bytes: 0,
            })?;
    if let Some(nonzero) = room.iter().position(|b| *b != 0) {
        return Err(Error::OverwriteHeaderData {
            offset: headers_start + nonzero,
        });
    }

    let section_alignment = u64::from(layout.section_alignment);
    let file_alignment = u64::from(layout.file_alignment);
    let mut next_va = align_up(layout.image_end, section_alignment);
    let mut initialized_data = u64::from(layout.size_of_initialized_data);
    for (index, section) in sections.iter().enumerate() {
        let grow = || Error::GrowImage {
            name: section.name.to_owned(),
        };
        let len = u64::try_from(section.data.len()).map_err(|_| grow())?;
        let raw_pointer = align_up(
            u64::try_from(out.len()).map_err(|_| grow())?,
            file_alignment,
        )
        .ok_or_else(grow)?;
        let raw_size = align_up(len, file_alignment).ok_or_else(grow)?;
        let va = next_va.ok_or_else(grow)?;
        let va_end = va.checked_add(len).ok_or_else(grow)?;
        next_va = align_up(va_end, section_alignment);
        initialized_data = initialized_data.checked_add(raw_size).ok_or_else(grow)?;
        let file_end = raw_pointer.checked_add(raw_size).ok_or_else(grow)?;
        let field = |value: u64| u32::try_from(value).map_err(|_| grow());
        // Every field of the header and the file itself must stay within 32 bits.
        field(va_end)?;
        field(file_end)?;
        field(initialized_data)?;

        out.resize(usize::try_from(raw_pointer).map_err(|_| grow())?, 0);
        out.extend_from_slice(section.data);
        out.resize(usize::try_from(file_end).map_err(|_| grow())?, 0);

        let mut header = [0u8; SECTION_HEADER_LEN];
        header[..section.name.len()].copy_from_slice(section.name.as_bytes());
        header[SEC_VIRTUAL_SIZE..][..4].copy_from_slice(&field(len)?.to_le_bytes());
        header[SEC_VIRTUAL_ADDRESS..][..4].copy_from_slice(&field(va)?.to_le_bytes());
        header[SEC_SIZE_OF_RAW_DATA..][..4].copy_from_slice(&field(raw_size)?.to_le_bytes());
        header[SEC_POINTER_TO_RAW_DATA..][..4].copy_from_slice(&field(raw_pointer)?.to_le_bytes());
        header[SEC_CHARACTERISTICS..][..4]
            .copy_from_slice(&NEW_SECTION_CHARACTERISTICS.to_le_bytes());
        put(
            &mut out,
            headers_start + index * SECTION_HEADER_LEN,
            &header,
        )?;
    }

    let last = sections.last().map_or("", |s| s.name);
    let grow = || Error::GrowImage {
        name: last.to_owned(),
    };
    let size_of_image = u32::try_from(next_va.ok_or_else(grow)?).map_err(|_| grow())?;
    let count = usize::from(layout.section_count)
        .checked_add(sections.len())
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(grow)?;
    let initialized_data = u32::try_from(initialized_data).map_err(|_| grow())?;
    put(
        &mut out,
        layout.coff + COFF_NUMBER_OF_SECTIONS,
        &count.to_le_bytes(),
    )?;
    put(
        &mut out,
        layout.optional + OPT_SIZE_OF_IMAGE,
        &size_of_image.to_le_bytes(),
    )?;
    put(
        &mut out,
        layout.optional + OPT_SIZE_OF_INITIALIZED_DATA,
        &initialized_data.to_le_bytes(),
    )?;
    // Firmware ignores the PE checksum, but signing tools (pesign) and some verifiers check it, and
    // a stale one marks the file as damaged. It covers the whole file, so it is computed last.
    let checksum_at = layout.optional + OPT_CHECKSUM;
    let sum = checksum(&out, checksum_at).ok_or_else(grow)?;
    put(&mut out, checksum_at, &sum.to_le_bytes())?;
    Ok(out)
}

/// What `build` needs to know about the stub, validated.
#[derive(Debug)]
struct Layout {
    /// Offset of the COFF header.
    coff: usize,
    /// COFF `Characteristics`.
    coff_characteristics: u16,
    /// Offset of the optional header.
    optional: usize,
    /// `NumberOfSections`.
    section_count: u16,
    /// Where the section table ends: new headers go here.
    section_table_end: usize,
    /// Where the room for headers ends: `SizeOfHeaders`, or the first section data if earlier.
    header_room_end: usize,
    /// Names of the existing sections, NUL padding removed.
    section_names: Vec<Vec<u8>>,
    section_alignment: u32,
    file_alignment: u32,
    size_of_initialized_data: u32,
    /// The end of the highest existing section in memory, or `SizeOfImage` if larger.
    image_end: u64,
    /// The COFF symbol and string tables, if any.
    symbol_table: Option<std::ops::Range<usize>>,
}

impl Layout {
    /// Validates the stub's headers in file order: DOS header, PE signature, COFF header, optional
    /// header, section table, section data, symbol table.
    fn parse(stub: &[u8]) -> Result<Layout, Error> {
        let dos_magic: [u8; 2] = array(stub, 0, "DOS magic")?;
        if dos_magic != DOS_MAGIC {
            return Err(Error::CheckDosMagic { found: dos_magic });
        }
        let pe = u32_at(stub, DOS_E_LFANEW, "e_lfanew")? as usize;
        let signature: [u8; 4] = array(stub, pe, "PE signature")?;
        if signature != PE_SIGNATURE {
            return Err(Error::CheckPeSignature {
                offset: pe,
                found: signature,
            });
        }
        let coff = pe + PE_SIGNATURE.len();
        let section_count = u16_at(stub, coff + COFF_NUMBER_OF_SECTIONS, "NumberOfSections")?;
        let symbol_pointer = u32_at(
            stub,
            coff + COFF_POINTER_TO_SYMBOL_TABLE,
            "PointerToSymbolTable",
        )?;
        let symbol_count = u32_at(stub, coff + COFF_NUMBER_OF_SYMBOLS, "NumberOfSymbols")?;
        let optional_size = u16_at(
            stub,
            coff + COFF_SIZE_OF_OPTIONAL_HEADER,
            "SizeOfOptionalHeader",
        )?;
        let coff_characteristics = u16_at(stub, coff + COFF_CHARACTERISTICS, "Characteristics")?;

        let optional = coff + COFF_HEADER_LEN;
        let magic = u16_at(stub, optional + OPT_MAGIC, "optional header magic")?;
        if magic != PE32_PLUS_MAGIC {
            return Err(Error::CheckOptionalMagic { found: magic });
        }
        let directories = u32_at(
            stub,
            optional + OPT_NUMBER_OF_RVA_AND_SIZES,
            "NumberOfRvaAndSizes",
        )?;
        let claimed = (directories as usize)
            .checked_mul(DATA_DIRECTORY_LEN)
            .and_then(|n| n.checked_add(OPT_DATA_DIRECTORIES));
        if claimed.is_none_or(|n| n > usize::from(optional_size)) {
            return Err(Error::CheckOptionalHeaderSize {
                size: optional_size,
                directories,
            });
        }
        let section_alignment = u32_at(stub, optional + OPT_SECTION_ALIGNMENT, "SectionAlignment")?;
        let file_alignment = u32_at(stub, optional + OPT_FILE_ALIGNMENT, "FileAlignment")?;
        if !section_alignment.is_power_of_two()
            || !file_alignment.is_power_of_two()
            || section_alignment < file_alignment
        {
            return Err(Error::CheckAlignment {
                section_alignment,
                file_alignment,
            });
        }
        let size_of_initialized_data = u32_at(
            stub,
            optional + OPT_SIZE_OF_INITIALIZED_DATA,
            "SizeOfInitializedData",
        )?;
        let size_of_image = u32_at(stub, optional + OPT_SIZE_OF_IMAGE, "SizeOfImage")?;
        let size_of_headers = u32_at(stub, optional + OPT_SIZE_OF_HEADERS, "SizeOfHeaders")?;
        if directories as usize > SECURITY_DIRECTORY {
            let entry = optional + OPT_DATA_DIRECTORIES + SECURITY_DIRECTORY * DATA_DIRECTORY_LEN;
            let offset = u32_at(stub, entry, "certificate table offset")?;
            let size = u32_at(stub, entry + 4, "certificate table size")?;
            if offset != 0 || size != 0 {
                return Err(Error::RefuseSignedStub { offset, size });
            }
        }

        let section_table = optional + usize::from(optional_size);
        let section_table_end = usize::from(section_count)
            .checked_mul(SECTION_HEADER_LEN)
            .and_then(|n| n.checked_add(section_table))
            .filter(|end| *end <= size_of_headers as usize && *end <= stub.len())
            .ok_or(Error::LocateSectionTable {
                offset: section_table,
                count: section_count,
                size_of_headers,
                file_len: stub.len(),
            })?;

        let mut header_room_end = (size_of_headers as usize).min(stub.len());
        let mut data_end = section_table_end;
        let mut image_end = u64::from(size_of_image);
        let mut section_names = Vec::with_capacity(usize::from(section_count));
        for header in stub[section_table..section_table_end].chunks_exact(SECTION_HEADER_LEN) {
            let name_bytes = &header[..SECTION_NAME_LEN];
            let name_len = name_bytes
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(SECTION_NAME_LEN);
            let name = name_bytes[..name_len].to_vec();
            let field = |at: usize| u32_at(header, at, "section header");
            let virtual_size = field(SEC_VIRTUAL_SIZE)?;
            let virtual_address = field(SEC_VIRTUAL_ADDRESS)?;
            let raw_size = field(SEC_SIZE_OF_RAW_DATA)?;
            let raw_pointer = field(SEC_POINTER_TO_RAW_DATA)?;
            if raw_size != 0 {
                let end = (raw_pointer as usize).checked_add(raw_size as usize);
                if (raw_pointer as usize) < section_table_end || end.is_none_or(|e| e > stub.len())
                {
                    return Err(Error::LocateSectionData {
                        name: String::from_utf8_lossy(&name).into_owned(),
                        offset: raw_pointer,
                        size: raw_size,
                        file_len: stub.len(),
                    });
                }
                header_room_end = header_room_end.min(raw_pointer as usize);
                data_end = data_end.max(end.unwrap_or(0));
            }
            // Loaders map max(VirtualSize, SizeOfRawData) at worst; start past both.
            let memory_end = u64::from(virtual_address) + u64::from(virtual_size.max(raw_size));
            image_end = image_end.max(memory_end);
            section_names.push(name);
        }

        let symbol_table = if symbol_pointer == 0 {
            None
        } else {
            let bad = || Error::LocateSymbolTable {
                offset: symbol_pointer,
                symbols: symbol_count,
                file_len: stub.len(),
            };
            let strings = (symbol_count as usize)
                .checked_mul(COFF_SYMBOL_LEN)
                .and_then(|n| n.checked_add(symbol_pointer as usize))
                .ok_or_else(bad)?;
            let strings_len = u32_at(stub, strings, "string table length").map_err(|_| bad())?;
            let end = strings
                .checked_add(strings_len.max(COFF_STRING_TABLE_LENGTH_LEN) as usize)
                .filter(|end| *end <= stub.len() && symbol_pointer as usize >= data_end)
                .ok_or_else(bad)?;
            header_room_end = header_room_end.min(symbol_pointer as usize);
            Some(symbol_pointer as usize..end)
        };

        Ok(Layout {
            coff,
            coff_characteristics,
            optional,
            section_count,
            section_table_end,
            header_room_end: header_room_end.max(section_table_end),
            section_names,
            section_alignment,
            file_alignment,
            size_of_initialized_data,
            image_end,
            symbol_table,
        })
    }
}

/// Refuses names the stub could not match, empty sections, and names that would be ambiguous.
fn check_new_sections(layout: &Layout, sections: &[Section]) -> Result<(), Error> {
    for (index, section) in sections.iter().enumerate() {
        let name = section.name;
        if name.is_empty()
            || name.len() > SECTION_NAME_LEN
            || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::ValidateSectionName {
                name: name.to_owned(),
            });
        }
        if section.data.is_empty() {
            return Err(Error::AddEmptySection {
                name: name.to_owned(),
            });
        }
        let in_stub = layout.section_names.iter().any(|n| n == name.as_bytes());
        let earlier = sections[..index].iter().any(|s| s.name == name);
        if in_stub || earlier {
            return Err(Error::AddDuplicateSection {
                name: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// The PE image checksum (as Windows' `CheckSumMappedFile` computes it): the one's-complement sum
/// of the file's little-endian 16-bit words, the checksum field counted as zero and an odd last
/// byte padded with zero, folded to 16 bits, plus the file length. `None` past 4 GiB.
fn checksum(image: &[u8], field_at: usize) -> Option<u32> {
    let field = field_at..field_at.checked_add(4)?;
    let byte = |at: usize| {
        if field.contains(&at) {
            0
        } else {
            u32::from(image.get(at).copied().unwrap_or(0))
        }
    };
    let mut sum: u32 = 0;
    for at in (0..image.len()).step_by(2) {
        sum += byte(at) | (byte(at + 1) << 8);
        // Fold the carry back in at once, so the sum never exceeds 17 bits.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum.checked_add(u32::try_from(image.len()).ok()?)
}

/// Rounds `value` up to a multiple of `alignment` (a power of two); `None` on overflow.
fn align_up(value: u64, alignment: u64) -> Option<u64> {
    let mask = alignment.checked_sub(1)?;
    Some(value.checked_add(mask)? & !mask)
}

fn array<const N: usize>(
    data: &[u8],
    offset: usize,
    field: &'static str,
) -> Result<[u8; N], Error> {
    offset
        .checked_add(N)
        .and_then(|end| data.get(offset..end))
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(Error::ReadStub {
            field,
            offset,
            file_len: data.len(),
        })
}

fn u16_at(data: &[u8], offset: usize, field: &'static str) -> Result<u16, Error> {
    array(data, offset, field).map(u16::from_le_bytes)
}

fn u32_at(data: &[u8], offset: usize, field: &'static str) -> Result<u32, Error> {
    array(data, offset, field).map(u32::from_le_bytes)
}

/// Overwrites a header field that `Layout::parse` has already read, so it is in bounds.
fn put(out: &mut [u8], offset: usize, bytes: &[u8]) -> Result<(), Error> {
    let file_len = out.len();
    offset
        .checked_add(bytes.len())
        .and_then(|end| out.get_mut(offset..end))
        .map(|target| target.copy_from_slice(bytes))
        .ok_or(Error::ReadStub {
            field: "header field",
            offset,
            file_len,
        })
}

#[cfg(test)]
mod tests;
