//! GUIDs as the on-disk formats Slipway writes store them (VHDX, GPT).
//!
//! Microsoft's formats store a GUID "mixed-endian": the first three fields little-endian, the
//! last eight bytes as they are. [`Guid`] keeps the on-disk byte order and converts only when
//! parsing or printing the canonical text form.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A 128-bit GUID, stored in its on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid([u8; 16]);

/// Why a GUID could not be parsed from text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("parse GUID {text:?}: expected 8-4-4-4-12 hexadecimal digits, optionally in braces")]
pub struct ParseGuidError {
    text: String,
}

/// Why a random GUID could not be made.
#[derive(Debug, thiserror::Error)]
#[error("read random bytes for a GUID from the operating system")]
pub struct RandomGuidError(#[source] getrandom::Error);

impl Guid {
    /// The all-zero GUID, which the formats use to mean "none".
    pub const ZERO: Guid = Guid([0; 16]);

    /// Builds a GUID from its on-disk (mixed-endian) bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// The on-disk (mixed-endian) bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// Builds a GUID from the fields of its canonical text form, as specifications print them.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// A random (version 4) GUID from the operating system's generator.
    pub fn random() -> Result<Guid, RandomGuidError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(RandomGuidError)?;
        Ok(Guid(stamp_version(bytes, 4)))
    }

    /// A GUID derived from `namespace` and `name` with SHA-256, stable across runs and machines.
    ///
    /// Reproducible builds use this so that the same recipe gives the same identifiers. The
    /// result carries version 8 ("custom") bits so it is never mistaken for a random GUID.
    pub fn derived(namespace: &str, name: &[u8]) -> Guid {
        let mut hash = Sha256::new();
        hash.update(namespace.as_bytes());
        hash.update([0u8]);
        hash.update(name);
        let digest = hash.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Guid(stamp_version(bytes, 8))
    }

    /// True for the all-zero GUID.
    pub fn is_zero(self) -> bool {
        self == Guid::ZERO
    }

    fn fields(self) -> (u32, u16, u16, [u8; 8]) {
        let b = self.0;
        let mut d4 = [0u8; 8];
        d4.copy_from_slice(&b[8..]);
        (
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            d4,
        )
    }
}

/// Sets the RFC 9562 version and variant bits. The version lives in the high nibble of the
/// third field, which is little-endian on disk, so byte 7 holds it.
fn stamp_version(mut bytes: [u8; 16], version: u8) -> [u8; 16] {
    bytes[7] = (bytes[7] & 0x0f) | (version << 4);
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}

impl fmt::Display for Guid {
    /// Canonical upper-case text form without braces, e.g. `2DC27766-F623-4200-9D64-115E9BFD4A08`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (d1, d2, d3, d4) = self.fields();
        write!(
            f,
            "{d1:08X}-{d2:04X}-{d3:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = ParseGuidError;

    /// Parses `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`, with or without braces, any case.
    fn from_str(text: &str) -> Result<Guid, ParseGuidError> {
        let err = || ParseGuidError {
            text: text.to_owned(),
        };
        let inner = match text.strip_prefix('{') {
            Some(rest) => rest.strip_suffix('}').ok_or_else(err)?,
            None => text,
        };
        let groups: Vec<&str> = inner.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if groups.len() != lens.len()
            || groups
                .iter()
                .zip(lens)
                .any(|(g, n)| g.len() != n || !g.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(err());
        }
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| err());
        let d1 = u32::try_from(hex(groups[0])?).map_err(|_| err())?;
        let d2 = u16::try_from(hex(groups[1])?).map_err(|_| err())?;
        let d3 = u16::try_from(hex(groups[2])?).map_err(|_| err())?;
        let tail = format!("{}{}", groups[3], groups[4]);
        let mut d4 = [0u8; 8];
        for (i, byte) in d4.iter_mut().enumerate() {
            *byte = u8::try_from(hex(&tail[2 * i..2 * i + 2])?).map_err(|_| err())?;
        }
        Ok(Guid::from_fields(d1, d2, d3, d4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_keeps_mixed_endian_bytes() {
        let guid: Guid = "2DC27766-F623-4200-9D64-115E9BFD4A08".parse().unwrap();
        assert_eq!(
            guid.to_bytes(),
            [
                0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD,
                0x4A, 0x08
            ]
        );
        assert_eq!(guid.to_string(), "2DC27766-F623-4200-9D64-115E9BFD4A08");
        assert_eq!(
            "{2dc27766-f623-4200-9d64-115e9bfd4a08}"
                .parse::<Guid>()
                .unwrap(),
            guid
        );
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "",
            "{2DC27766-F623-4200-9D64-115E9BFD4A08",
            "2DC27766F6234200-9D64-115E9BFD4A08",
            "ZZC27766-F623-4200-9D64-115E9BFD4A08",
            "+DC27766-F623-4200-9D64-115E9BFD4A08",
        ] {
            assert!(bad.parse::<Guid>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn derived_is_stable_and_distinct() {
        let a = Guid::derived("vhdx", b"disk");
        assert_eq!(a, Guid::derived("vhdx", b"disk"));
        assert_ne!(a, Guid::derived("vhdx", b"disk2"));
        assert_ne!(a, Guid::derived("gpt", b"disk"));
        assert_eq!(a.to_string().as_bytes()[14], b'8');
    }

    #[test]
    fn random_guids_differ() {
        let a = Guid::random().unwrap();
        let b = Guid::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.to_string().as_bytes()[14], b'4');
    }
}
