//! BCD element values and their registry encoding.
//!
//! Every element is the key `Objects\{GUID}\Elements\XXXXXXXX` with one value `Element`
//! whose registry type follows the element's format (bits 24..28 of its type, Microsoft
//! `BcdElementType`). How each format is stored, as bcdedit-made stores and the offline
//! writers that imitate them show (jpz4085/BCD-SYS `winload.sh`, a public `create_bcd.pl`
//! PXE script, the Misty Projects BCDEdit notes):
//!
//! | format | registry type | data |
//! | --- | --- | --- |
//! | 1 device | REG_BINARY | the layout in [`super::device`] |
//! | 2 string | REG_SZ | UTF-16LE, NUL-terminated |
//! | 3 object | REG_SZ | `{guid}` in lower case |
//! | 4 object list | REG_MULTI_SZ | `{guid}` strings, each NUL-terminated, then a NUL |
//! | 5 integer | REG_BINARY | 8 bytes little-endian |
//! | 6 boolean | REG_BINARY | 1 byte, 0 or 1 |
//! | 7 integer list | REG_BINARY | 8 bytes little-endian each |
//! | 8 binary | REG_BINARY | as is (ntbcd.h `BCD_ELEMENT_DATATYPE_FORMAT_BINARY`) |

use std::fmt;

use super::Error;
use super::device::{Device, DeviceFault};
use crate::guid::{Guid, ParseGuidError};

/// Registry value type `REG_SZ`: a NUL-terminated UTF-16LE string.
pub const REG_SZ: u32 = 1;
/// Registry value type `REG_BINARY`.
pub const REG_BINARY: u32 = 3;
/// Registry value type `REG_DWORD`: 4 bytes little-endian.
pub const REG_DWORD: u32 = 4;
/// Registry value type `REG_MULTI_SZ`: NUL-terminated UTF-16LE strings, then a NUL.
pub const REG_MULTI_SZ: u32 = 7;

/// The data format of an element, bits 24..28 of its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// 1: a device ([`Device`]).
    Device,
    /// 2: a string.
    String,
    /// 3: another object, by GUID.
    Object,
    /// 4: a list of objects.
    ObjectList,
    /// 5: a 64-bit integer.
    Integer,
    /// 6: a boolean.
    Boolean,
    /// 7: a list of 64-bit integers.
    IntegerList,
    /// 8: opaque bytes.
    Binary,
}

impl Format {
    /// The format of `element_type`, or `None` for a format number BCD does not define.
    pub const fn of(element_type: u32) -> Option<Format> {
        match (element_type >> 24) & 0xf {
            1 => Some(Format::Device),
            2 => Some(Format::String),
            3 => Some(Format::Object),
            4 => Some(Format::ObjectList),
            5 => Some(Format::Integer),
            6 => Some(Format::Boolean),
            7 => Some(Format::IntegerList),
            8 => Some(Format::Binary),
            _ => None,
        }
    }

    /// The registry value type elements of this format are stored as.
    pub const fn registry_kind(self) -> u32 {
        match self {
            Format::String | Format::Object => REG_SZ,
            Format::ObjectList => REG_MULTI_SZ,
            Format::Device
            | Format::Integer
            | Format::Boolean
            | Format::IntegerList
            | Format::Binary => REG_BINARY,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Format::Device => "device",
            Format::String => "string",
            Format::Object => "object",
            Format::ObjectList => "object list",
            Format::Integer => "integer",
            Format::Boolean => "boolean",
            Format::IntegerList => "integer list",
            Format::Binary => "binary",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The value of one BCD element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementValue {
    /// Format 1.
    Device(Device),
    /// Format 2.
    String(String),
    /// Format 3.
    Object(Guid),
    /// Format 4.
    ObjectList(Vec<Guid>),
    /// Format 5.
    Integer(u64),
    /// Format 6.
    Boolean(bool),
    /// Format 7.
    IntegerList(Vec<u64>),
    /// Format 8.
    Binary(Vec<u8>),
}

impl ElementValue {
    /// The format this value belongs to.
    pub const fn format(&self) -> Format {
        match self {
            ElementValue::Device(_) => Format::Device,
            ElementValue::String(_) => Format::String,
            ElementValue::Object(_) => Format::Object,
            ElementValue::ObjectList(_) => Format::ObjectList,
            ElementValue::Integer(_) => Format::Integer,
            ElementValue::Boolean(_) => Format::Boolean,
            ElementValue::IntegerList(_) => Format::IntegerList,
            ElementValue::Binary(_) => Format::Binary,
        }
    }
}

/// A registry value: its `REG_*` type number and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegValue {
    /// The `REG_*` type ([`REG_SZ`], [`REG_BINARY`], [`REG_DWORD`], [`REG_MULTI_SZ`]).
    pub kind: u32,
    /// The data, as the hive stores it.
    pub data: Vec<u8>,
}

impl RegValue {
    /// A `REG_DWORD`.
    pub fn dword(value: u32) -> RegValue {
        RegValue {
            kind: REG_DWORD,
            data: value.to_le_bytes().to_vec(),
        }
    }
}

/// Why a value cannot be encoded for an element type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeFault {
    /// The type's format number is not one BCD defines.
    #[error("its format number {format} is not one BCD defines")]
    CheckFormat {
        /// Bits 24..28 of the type.
        format: u32,
    },
    /// The value is of another format than the type.
    #[error("its format is {expected} but the value given is {given}")]
    MatchFormat {
        /// The type's format.
        expected: Format,
        /// The value's format.
        given: Format,
    },
    /// A string holding NUL, which the registry encoding cannot carry.
    #[error("the string {text:?} holds a NUL character")]
    CheckString {
        /// The string.
        text: String,
    },
    /// The device cannot be encoded.
    #[error("the device cannot be encoded")]
    EncodeDevice(#[source] DeviceFault),
}

/// Why registry data is not a valid value for an element type.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueFault {
    /// The type's format number is not one BCD defines.
    #[error("its format number {format} is not one BCD defines")]
    CheckFormat {
        /// Bits 24..28 of the type.
        format: u32,
    },
    /// The registry type is not the one the format is stored as.
    #[error("registry type {kind}, but {format} elements are stored as type {expected}")]
    MatchKind {
        /// The registry type found.
        kind: u32,
        /// The element's format.
        format: Format,
        /// The registry type expected.
        expected: u32,
    },
    /// UTF-16 data of an odd number of bytes.
    #[error("{len} bytes of UTF-16 text: not a whole number of characters")]
    ReadUtf16 {
        /// Bytes given.
        len: usize,
    },
    /// UTF-16 data that is not valid UTF-16 (an unpaired surrogate).
    #[error("the text is not valid UTF-16")]
    DecodeUtf16,
    /// A string with a NUL before its end.
    #[error("the string holds a NUL before its end")]
    CheckString,
    /// An empty string inside an object list.
    #[error("entry {index} of the list is empty")]
    CheckList {
        /// Zero-based position of the empty entry.
        index: usize,
    },
    /// Text that is not a GUID.
    #[error("not a GUID")]
    ParseGuid(#[source] ParseGuidError),
    /// Integer data that is not 8 bytes.
    #[error("{len} bytes, an integer is 8")]
    ReadInteger {
        /// Bytes given.
        len: usize,
    },
    /// Integer-list data that is not a multiple of 8 bytes.
    #[error("{len} bytes, not a whole number of 8-byte integers")]
    ReadIntegerList {
        /// Bytes given.
        len: usize,
    },
    /// Boolean data that is not one byte of 0 or 1.
    #[error("boolean data {data:02x?}, expected one byte of 0 or 1")]
    ReadBoolean {
        /// The data (at most the first 8 bytes).
        data: Vec<u8>,
    },
}

fn format_of(element_type: u32) -> Result<Format, u32> {
    Format::of(element_type).ok_or((element_type >> 24) & 0xf)
}

/// A GUID as BCD writes it in strings and key names: lower case, in braces.
pub fn braced(guid: Guid) -> String {
    format!("{{{}}}", guid.to_string().to_ascii_lowercase())
}

/// An element's key name under `Elements`: 8 lower-case hexadecimal digits.
pub fn element_key(element_type: u32) -> String {
    format!("{element_type:08x}")
}

fn utf16(text: &str) -> impl Iterator<Item = u8> + '_ {
    text.encode_utf16().flat_map(u16::to_le_bytes)
}

fn check_string(text: &str) -> Result<(), EncodeFault> {
    if text.contains('\0') {
        return Err(EncodeFault::CheckString {
            text: text.to_owned(),
        });
    }
    Ok(())
}

fn sz(text: &str) -> Result<Vec<u8>, EncodeFault> {
    check_string(text)?;
    Ok(utf16(text).chain([0, 0]).collect())
}

fn multi_sz(items: &[String]) -> Result<Vec<u8>, EncodeFault> {
    let mut data = Vec::new();
    for item in items {
        // Items are braced GUIDs: never empty (an empty item would end the list early).
        check_string(item)?;
        data.extend(utf16(item).chain([0, 0]));
    }
    data.extend([0, 0]);
    Ok(data)
}

/// Encodes `value` for an element of type `element_type`, refusing a value whose format is
/// not the type's.
pub fn encode(element_type: u32, value: &ElementValue) -> Result<RegValue, Error> {
    let fail = |reason| Error::EncodeElement {
        element_type,
        reason,
    };
    let expected =
        format_of(element_type).map_err(|format| fail(EncodeFault::CheckFormat { format }))?;
    if value.format() != expected {
        return Err(fail(EncodeFault::MatchFormat {
            expected,
            given: value.format(),
        }));
    }
    let data = match value {
        ElementValue::Device(device) => device
            .to_bytes()
            .map_err(|fault| fail(EncodeFault::EncodeDevice(fault)))?,
        ElementValue::String(text) => sz(text).map_err(fail)?,
        ElementValue::Object(guid) => sz(&braced(*guid)).map_err(fail)?,
        ElementValue::ObjectList(guids) => {
            let texts: Vec<String> = guids.iter().map(|g| braced(*g)).collect();
            multi_sz(&texts).map_err(fail)?
        }
        ElementValue::Integer(n) => n.to_le_bytes().to_vec(),
        ElementValue::Boolean(b) => vec![u8::from(*b)],
        ElementValue::IntegerList(ns) => ns.iter().flat_map(|n| n.to_le_bytes()).collect(),
        ElementValue::Binary(bytes) => bytes.clone(),
    };
    Ok(RegValue {
        kind: expected.registry_kind(),
        data,
    })
}

fn units(data: &[u8]) -> Result<Vec<u16>, ValueFault> {
    if !data.len().is_multiple_of(2) {
        return Err(ValueFault::ReadUtf16 { len: data.len() });
    }
    Ok(data
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect())
}

fn trim_nuls(units: &[u16]) -> &[u16] {
    let end = units.iter().rposition(|&u| u != 0).map_or(0, |i| i + 1);
    &units[..end]
}

/// REG_SZ data as text. Trailing NULs are dropped (the terminator, and padding some writers
/// add); a NUL before the end is refused.
fn read_sz(data: &[u8]) -> Result<String, ValueFault> {
    let all = units(data)?;
    let text = trim_nuls(&all);
    if text.contains(&0) {
        return Err(ValueFault::CheckString);
    }
    String::from_utf16(text).map_err(|_| ValueFault::DecodeUtf16)
}

/// REG_MULTI_SZ data as strings. The final terminator may be missing; an empty string before
/// the end is refused.
fn read_multi_sz(data: &[u8]) -> Result<Vec<String>, ValueFault> {
    let all = units(data)?;
    let text = trim_nuls(&all);
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(|&u| u == 0)
        .enumerate()
        .map(|(index, item)| {
            if item.is_empty() {
                return Err(ValueFault::CheckList { index });
            }
            String::from_utf16(item).map_err(|_| ValueFault::DecodeUtf16)
        })
        .collect()
}

fn parse_guid(text: &str) -> Result<Guid, ValueFault> {
    text.parse().map_err(ValueFault::ParseGuid)
}

fn read_u64(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    u64::from_le_bytes(word)
}

/// Decodes the registry value of an element of type `element_type`. The data may be
/// anything: every length is checked, nothing panics.
pub fn decode(element_type: u32, kind: u32, data: &[u8]) -> Result<ElementValue, Error> {
    let fail = |reason| Error::DecodeElement {
        element_type,
        reason,
    };
    let format =
        format_of(element_type).map_err(|format| fail(ValueFault::CheckFormat { format }))?;
    let expected = format.registry_kind();
    if kind != expected {
        return Err(fail(ValueFault::MatchKind {
            kind,
            format,
            expected,
        }));
    }
    let value = match format {
        Format::Device => ElementValue::Device(Device::from_bytes(data).map_err(|reason| {
            Error::DecodeDevice {
                element_type,
                reason,
            }
        })?),
        Format::String => ElementValue::String(read_sz(data).map_err(fail)?),
        Format::Object => {
            ElementValue::Object(parse_guid(&read_sz(data).map_err(fail)?).map_err(fail)?)
        }
        Format::ObjectList => ElementValue::ObjectList(
            read_multi_sz(data)
                .and_then(|items| items.iter().map(|t| parse_guid(t)).collect())
                .map_err(fail)?,
        ),
        Format::Integer => {
            if data.len() != 8 {
                return Err(fail(ValueFault::ReadInteger { len: data.len() }));
            }
            ElementValue::Integer(read_u64(data))
        }
        Format::Boolean => match data {
            [0] => ElementValue::Boolean(false),
            [1] => ElementValue::Boolean(true),
            _ => {
                return Err(fail(ValueFault::ReadBoolean {
                    data: data.iter().take(8).copied().collect(),
                }));
            }
        },
        Format::IntegerList => {
            if !data.len().is_multiple_of(8) {
                return Err(fail(ValueFault::ReadIntegerList { len: data.len() }));
            }
            ElementValue::IntegerList(data.chunks_exact(8).map(read_u64).collect())
        }
        Format::Binary => ElementValue::Binary(data.to_vec()),
    };
    Ok(value)
}
