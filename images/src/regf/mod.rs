//! A writer of Windows registry hive files ("regf"), for hives made from nothing.
//!
//! hivex edits hives but cannot create one, and no empty hive ships with Debian: Slipway's tests
//! make the SYSTEM, SOFTWARE and BCD-Template hives of a synthetic Windows image with this
//! writer, and the build then edits them with hivex like a real image's. The layout follows the
//! public description of the format (Maxim Suhanov, "Windows registry file format
//! specification", and libyal's libregf documentation): a 4 KiB base block, then hive bins
//! holding cells (key nodes `nk`, values `vk`, subkey lists `lh`, value lists, one security
//! descriptor `sk`).
//!
//! Everything is written into one hive bin; names are ASCII (stored "compressed"); value data
//! lives in its own cell, or inline in the value when it has four bytes or fewer. Output is a
//! function of the input alone: the same [`Hive`] gives the same bytes.

use std::collections::BTreeSet;

/// Size of the base block, and the unit of hive bin sizes.
const BLOCK: usize = 4096;
/// Size of a hive bin's header.
const HBIN_HEADER: usize = 32;
/// Base block: where the checksummed part ends (the checksum is stored there).
const CHECKSUM_AT: usize = 508;
/// Format version written: 1.3, which every Windows since XP and hivex read.
const MAJOR: u32 = 1;
const MINOR: u32 = 3;
/// "No cell" in an offset field.
const NONE: u32 = 0xFFFF_FFFF;
/// Key flags: the root key; a name stored as ASCII.
const KEY_HIVE_ENTRY: u16 = 0x0004;
const KEY_NO_DELETE: u16 = 0x0008;
const KEY_COMP_NAME: u16 = 0x0020;
/// Value flag: a name stored as ASCII.
const VALUE_COMP_NAME: u16 = 0x0001;
/// Data sizes with this bit set are stored in the value's data-offset field.
const DATA_INLINE: u32 = 0x8000_0000;
/// The largest value data kept in one cell (larger needs the "big data" form, not written).
pub const MAX_DATA: usize = 16344;
/// Seconds from 1601-01-01 (FILETIME's epoch) to 1970-01-01.
const FILETIME_UNIX: u64 = 11_644_473_600;

/// Registry value types.
pub mod kind {
    /// No type.
    pub const NONE: u32 = 0;
    /// A NUL-terminated UTF-16LE string.
    pub const SZ: u32 = 1;
    /// A string with `%VARIABLES%`.
    pub const EXPAND_SZ: u32 = 2;
    /// Bytes.
    pub const BINARY: u32 = 3;
    /// A 32-bit little-endian number.
    pub const DWORD: u32 = 4;
    /// Strings, each NUL-terminated, then an empty one.
    pub const MULTI_SZ: u32 = 7;
    /// A 64-bit little-endian number.
    pub const QWORD: u32 = 11;
}

/// Why a hive cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Names are written as ASCII.
    #[error(
        "registry name {name:?} is not printable ASCII without backslashes (1 to 255 characters)"
    )]
    CheckName {
        /// The name.
        name: String,
    },
    /// Two subkeys of one key, or two values of one key, compare equal ignoring case.
    #[error("registry key {key:?} holds {name:?} twice (names compare ignoring case)")]
    CheckUnique {
        /// The key.
        key: String,
        /// The name.
        name: String,
    },
    /// Value data too large for one cell.
    #[error("registry value {name:?} has {len} bytes of data; at most {MAX_DATA} are written")]
    CheckDataSize {
        /// The value.
        name: String,
        /// Its size.
        len: usize,
    },
    /// A key with more subkeys than one `lh` list holds.
    #[error("registry key {key:?} has {count} subkeys; at most 65535 are written")]
    CheckCount {
        /// The key.
        key: String,
        /// Its subkeys.
        count: usize,
    },
    /// The hive would be larger than its 32-bit offsets reach.
    #[error("the hive is too large for the registry format")]
    CheckHiveSize,
}

/// A registry key with its subkeys and values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Key {
    /// Name (the root's is the hive's own name, e.g. `ROOT`).
    pub name: String,
    /// Subkeys, in any order (written sorted, as Windows requires).
    pub keys: Vec<Key>,
    /// Values (the default value has the empty name).
    pub values: Vec<Value>,
}

/// One registry value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Name; empty for the key's default value.
    pub name: String,
    /// Type ([`kind`]).
    pub kind: u32,
    /// Data, as stored.
    pub data: Vec<u8>,
}

impl Key {
    /// An empty key.
    pub fn new(name: &str) -> Key {
        Key {
            name: name.to_owned(),
            ..Key::default()
        }
    }

    /// The subkey at `path` (components), made when missing.
    pub fn key(&mut self, path: &[&str]) -> &mut Key {
        let Some((first, rest)) = path.split_first() else {
            return self;
        };
        let index = match self
            .keys
            .iter()
            .position(|k| k.name.eq_ignore_ascii_case(first))
        {
            Some(index) => index,
            None => {
                self.keys.push(Key::new(first));
                self.keys.len() - 1
            }
        };
        self.keys[index].key(rest)
    }

    /// Sets value `name` of this key.
    pub fn set(&mut self, name: &str, kind: u32, data: Vec<u8>) -> &mut Key {
        self.values.retain(|v| !v.name.eq_ignore_ascii_case(name));
        self.values.push(Value {
            name: name.to_owned(),
            kind,
            data,
        });
        self
    }

    /// Sets a `REG_SZ` value.
    pub fn set_string(&mut self, name: &str, text: &str) -> &mut Key {
        self.set(name, kind::SZ, utf16z(text))
    }

    /// Sets a `REG_DWORD` value.
    pub fn set_dword(&mut self, name: &str, number: u32) -> &mut Key {
        self.set(name, kind::DWORD, number.to_le_bytes().to_vec())
    }
}

/// A string as the registry stores `REG_SZ`: UTF-16LE with a terminating NUL.
pub fn utf16z(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// A FILETIME (100 ns since 1601) from Unix seconds.
pub fn filetime(unix_seconds: u64) -> u64 {
    unix_seconds
        .saturating_add(FILETIME_UNIX)
        .saturating_mul(10_000_000)
}

/// Writes `root` as a hive file; every timestamp in it is `unix_seconds`.
pub fn write(root: &Key, unix_seconds: u64) -> Result<Vec<u8>, Error> {
    let mut cells = Cells {
        bytes: Vec::new(),
        time: filetime(unix_seconds),
        sk: 0,
        keys: 0,
    };
    cells.sk = cells.alloc(&security_cell(0));
    let root_at = cells.key(root, NONE, true, "")?;
    // The one security cell's list links point at itself; its count is every key using it.
    let sk = cells.sk as usize + 4;
    cells.bytes[sk + 4..sk + 8].copy_from_slice(&cells.sk.to_le_bytes());
    cells.bytes[sk + 8..sk + 12].copy_from_slice(&cells.sk.to_le_bytes());
    cells.bytes[sk + 12..sk + 16].copy_from_slice(&cells.keys.to_le_bytes());
    cells.finish(root_at)
}

struct Cells {
    /// The hive bin's bytes after its header; cell offsets count from the bin's start.
    bytes: Vec<u8>,
    time: u64,
    sk: u32,
    keys: u32,
}

impl Cells {
    /// Appends a cell holding `content`; its offset (from the start of the hive bins).
    fn alloc(&mut self, content: &[u8]) -> u32 {
        let at = HBIN_HEADER + self.bytes.len();
        let size = (content.len() + 4).next_multiple_of(8);
        // Allocated cells carry their size negated.
        let header = -(i32::try_from(size).unwrap_or(i32::MAX));
        self.bytes.extend_from_slice(&header.to_le_bytes());
        self.bytes.extend_from_slice(content);
        self.bytes.resize(at - HBIN_HEADER + size, 0);
        u32::try_from(at).unwrap_or(NONE)
    }

    fn key(&mut self, key: &Key, parent: u32, root: bool, path: &str) -> Result<u32, Error> {
        check_name(&key.name)?;
        let path = format!("{path}\\{}", key.name);
        check_unique(&path, key.keys.iter().map(|k| &k.name))?;
        check_unique(&path, key.values.iter().map(|v| &v.name))?;
        self.keys += 1;
        // The key node first (its fields filled in once its children are written).
        let name = key.name.as_bytes();
        let mut nk = vec![0u8; 76 + name.len()];
        nk[0..2].copy_from_slice(b"nk");
        let flags = KEY_COMP_NAME
            | if root {
                KEY_HIVE_ENTRY | KEY_NO_DELETE
            } else {
                0
            };
        put16(&mut nk, 2, flags);
        put64(&mut nk, 4, self.time);
        put32(&mut nk, 16, parent);
        put32(&mut nk, 44, self.sk);
        put32(&mut nk, 48, NONE);
        put16(&mut nk, 72, u16::try_from(name.len()).unwrap_or(0));
        nk[76..].copy_from_slice(name);
        let at = self.alloc(&nk);

        let mut keys: Vec<&Key> = key.keys.iter().collect();
        keys.sort_by_key(|k| k.name.to_ascii_uppercase());
        let mut offsets = Vec::with_capacity(keys.len());
        for sub in &keys {
            offsets.push((self.key(sub, at, false, &path)?, hash(&sub.name)));
        }
        let subkeys = if offsets.is_empty() {
            NONE
        } else {
            let count = u16::try_from(offsets.len()).map_err(|_| Error::CheckCount {
                key: path.clone(),
                count: offsets.len(),
            })?;
            let mut lh = vec![0u8; 4 + 8 * offsets.len()];
            lh[0..2].copy_from_slice(b"lh");
            put16(&mut lh, 2, count);
            for (i, (offset, hash)) in offsets.iter().enumerate() {
                put32(&mut lh, 4 + 8 * i, *offset);
                put32(&mut lh, 8 + 8 * i, *hash);
            }
            self.alloc(&lh)
        };
        let mut value_offsets = Vec::with_capacity(key.values.len());
        for value in &key.values {
            value_offsets.push(self.value(value)?);
        }
        let values = if value_offsets.is_empty() {
            NONE
        } else {
            let list: Vec<u8> = value_offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
            self.alloc(&list)
        };
        let longest = |lens: &mut dyn Iterator<Item = usize>| {
            u32::try_from(lens.max().unwrap_or(0)).unwrap_or(u32::MAX)
        };
        let cell = at as usize - HBIN_HEADER + 4;
        let nk = &mut self.bytes[cell..cell + 76];
        put32(nk, 20, u32::try_from(keys.len()).unwrap_or(0));
        put32(nk, 28, subkeys);
        put32(nk, 32, NONE);
        put32(nk, 36, u32::try_from(key.values.len()).unwrap_or(0));
        put32(nk, 40, values);
        // Windows keeps name lengths of subkeys in UTF-16 bytes.
        put32(nk, 52, longest(&mut keys.iter().map(|k| k.name.len() * 2)));
        put32(
            nk,
            60,
            longest(&mut key.values.iter().map(|v| v.name.len() * 2)),
        );
        put32(
            nk,
            64,
            longest(&mut key.values.iter().map(|v| v.data.len())),
        );
        Ok(at)
    }

    fn value(&mut self, value: &Value) -> Result<u32, Error> {
        if !value.name.is_empty() {
            check_name(&value.name)?;
        }
        if value.data.len() > MAX_DATA {
            return Err(Error::CheckDataSize {
                name: value.name.clone(),
                len: value.data.len(),
            });
        }
        let len = u32::try_from(value.data.len()).unwrap_or(0);
        let (size, offset) = if value.data.len() <= 4 {
            let mut inline = [0u8; 4];
            inline[..value.data.len()].copy_from_slice(&value.data);
            (len | DATA_INLINE, u32::from_le_bytes(inline))
        } else {
            (len, self.alloc(&value.data))
        };
        let name = value.name.as_bytes();
        let mut vk = vec![0u8; 20 + name.len()];
        vk[0..2].copy_from_slice(b"vk");
        put16(&mut vk, 2, u16::try_from(name.len()).unwrap_or(0));
        put32(&mut vk, 4, size);
        put32(&mut vk, 8, offset);
        put32(&mut vk, 12, value.kind);
        put16(
            &mut vk,
            16,
            if name.is_empty() { 0 } else { VALUE_COMP_NAME },
        );
        vk[20..].copy_from_slice(name);
        Ok(self.alloc(&vk))
    }

    /// The base block and the one hive bin, its free space one unallocated cell.
    fn finish(self, root: u32) -> Result<Vec<u8>, Error> {
        let used = HBIN_HEADER + self.bytes.len();
        let bin_size = used.next_multiple_of(BLOCK);
        let bin_size32 = u32::try_from(bin_size).map_err(|_| Error::CheckHiveSize)?;
        let mut out = vec![0u8; BLOCK + bin_size];
        let base = &mut out[..BLOCK];
        base[0..4].copy_from_slice(b"regf");
        // Equal sequence numbers: the hive is consistent (nothing to recover from a log).
        put32(base, 4, 1);
        put32(base, 8, 1);
        put64(base, 12, self.time);
        put32(base, 20, MAJOR);
        put32(base, 24, MINOR);
        put32(base, 28, 0); // primary file
        put32(base, 32, 1); // direct memory load
        put32(base, 36, root);
        put32(base, 40, bin_size32);
        put32(base, 44, 1); // clustering factor
        let checksum = checksum(&base[..CHECKSUM_AT]);
        put32(base, CHECKSUM_AT, checksum);
        let bin = &mut out[BLOCK..];
        bin[0..4].copy_from_slice(b"hbin");
        put32(bin, 4, 0);
        put32(bin, 8, bin_size32);
        put64(bin, 20, self.time);
        bin[HBIN_HEADER..used].copy_from_slice(&self.bytes);
        if bin_size > used {
            let free = i32::try_from(bin_size - used).map_err(|_| Error::CheckHiveSize)?;
            bin[used..used + 4].copy_from_slice(&free.to_le_bytes());
        }
        Ok(out)
    }
}

/// The base block's checksum: XOR of its first 127 double words, never 0 or all ones.
fn checksum(bytes: &[u8]) -> u32 {
    let sum = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .fold(0, |a, b| a ^ b);
    match sum {
        0 => 1,
        NONE => 0xFFFF_FFFE,
        sum => sum,
    }
}

/// The `lh` list's name hash: h = h * 37 + each upper-cased character.
fn hash(name: &str) -> u32 {
    name.bytes().fold(0u32, |h, c| {
        h.wrapping_mul(37)
            .wrapping_add(u32::from(c.to_ascii_uppercase()))
    })
}

fn check_name(name: &str) -> Result<(), Error> {
    let printable = name
        .bytes()
        .all(|b| (0x20..0x7F).contains(&b) && b != b'\\');
    if name.is_empty() || name.len() > 255 || !printable {
        return Err(Error::CheckName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn check_unique<'a>(key: &str, names: impl Iterator<Item = &'a String>) -> Result<(), Error> {
    let mut seen = BTreeSet::new();
    for name in names {
        if !seen.insert(name.to_ascii_uppercase()) {
            return Err(Error::CheckUnique {
                key: key.to_owned(),
                name: name.clone(),
            });
        }
    }
    Ok(())
}

/// The security cell: a self-relative descriptor owned by Administrators (group SYSTEM) that
/// gives Administrators and SYSTEM full control of the key and, inherited, of its subkeys.
fn security_cell(self_offset: u32) -> Vec<u8> {
    const ADMINISTRATORS: [u8; 16] = [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0];
    const SYSTEM: [u8; 12] = [1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0];
    /// KEY_ALL_ACCESS.
    const FULL: u32 = 0x000F_003F;
    /// ACE flags: inherited by subkeys.
    const CONTAINER_INHERIT: u8 = 0x02;
    let ace = |sid: &[u8]| {
        let mut ace = vec![0u8, CONTAINER_INHERIT];
        ace.extend_from_slice(&u16::try_from(8 + sid.len()).unwrap_or(0).to_le_bytes());
        ace.extend_from_slice(&FULL.to_le_bytes());
        ace.extend_from_slice(sid);
        ace
    };
    let aces = [ace(&ADMINISTRATORS), ace(&SYSTEM)].concat();
    let mut acl = vec![2u8, 0];
    acl.extend_from_slice(&u16::try_from(8 + aces.len()).unwrap_or(0).to_le_bytes());
    acl.extend_from_slice(&2u16.to_le_bytes());
    acl.extend_from_slice(&[0, 0]);
    acl.extend_from_slice(&aces);
    // Header (20 bytes), owner, group, DACL.
    let owner = 20u32;
    let group = owner + 16;
    let dacl = group + 12;
    let mut sd = vec![1u8, 0];
    // SE_SELF_RELATIVE | SE_DACL_PRESENT.
    sd.extend_from_slice(&0x8004u16.to_le_bytes());
    for field in [owner, group, 0, dacl] {
        sd.extend_from_slice(&field.to_le_bytes());
    }
    sd.extend_from_slice(&ADMINISTRATORS);
    sd.extend_from_slice(&SYSTEM);
    sd.extend_from_slice(&acl);
    let mut cell = vec![0u8; 20];
    cell[0..2].copy_from_slice(b"sk");
    put32(&mut cell, 4, self_offset);
    put32(&mut cell, 8, self_offset);
    put32(&mut cell, 16, u32::try_from(sd.len()).unwrap_or(0));
    cell.extend_from_slice(&sd);
    cell
}

fn put16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests;
