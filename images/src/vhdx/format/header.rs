//! File type identifier and header (MS-VHDX 2.2.1, 2.2.2).

use super::{
    Error, FILE_IDENTIFIER_SIZE, HEADER_SIZE, MIB, expect_checksum, expect_signature, guid_at,
    need, put, seal, u16_at, u32_at, u64_at, utf16_decode, utf16_encode,
};
use crate::guid::Guid;

const FILE_SIGNATURE: &str = "vhdxfile";
const HEADER_SIGNATURE: &str = "head";
const HEADER_CHECKSUM: usize = 4;
const CREATOR_BYTES: usize = 512;
/// The only header version defined (MS-VHDX 2.2.2: Version).
pub const HEADER_VERSION: u16 = 1;
/// The only log version defined.
pub const LOG_VERSION: u16 = 0;

/// The file type identifier at offset 0: signature and the name of the program that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentifier {
    /// Free text naming the creating program (at most 256 UTF-16 units).
    pub creator: String,
}

impl FileIdentifier {
    /// Decodes the identifier from the first bytes of a file.
    pub fn decode(buf: &[u8]) -> Result<FileIdentifier, Error> {
        need("file identifier", buf, FILE_IDENTIFIER_SIZE)?;
        expect_signature("file identifier", buf, FILE_SIGNATURE)?;
        let creator = utf16_decode(&buf[8..8 + CREATOR_BYTES]);
        let creator = creator.trim_end_matches('\0').to_owned();
        Ok(FileIdentifier { creator })
    }

    /// Encodes the identifier; a creator longer than the field is cut at 255 units.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![0u8; FILE_IDENTIFIER_SIZE];
        put(&mut buf, 0, FILE_SIGNATURE.as_bytes());
        let mut text = utf16_encode(&self.creator);
        text.truncate(CREATOR_BYTES - 2);
        put(&mut buf, 8, &text);
        buf
    }
}

/// One copy of the VHDX header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Larger is newer; the reader uses the valid copy with the larger number.
    pub sequence_number: u64,
    /// Changes whenever the file is opened for writing.
    pub file_write_guid: Guid,
    /// Changes whenever guest-visible data changes; children record it as `parent_linkage`.
    pub data_write_guid: Guid,
    /// Non-zero when the log may hold entries that must be replayed.
    pub log_guid: Guid,
    /// Log format version, 0.
    pub log_version: u16,
    /// Header version, 1.
    pub version: u16,
    /// Log size in bytes, a multiple of 1 MiB.
    pub log_length: u32,
    /// Log offset in bytes, a multiple of 1 MiB.
    pub log_offset: u64,
}

impl Header {
    /// Decodes and validates one header copy (signature, checksum, versions, log placement).
    pub fn decode(buf: &[u8]) -> Result<Header, Error> {
        const S: &str = "header";
        need(S, buf, HEADER_SIZE)?;
        let buf = &buf[..HEADER_SIZE];
        expect_signature(S, buf, HEADER_SIGNATURE)?;
        expect_checksum(S, buf, HEADER_CHECKSUM)?;
        let header = Header {
            sequence_number: u64_at(buf, 8),
            file_write_guid: guid_at(buf, 16),
            data_write_guid: guid_at(buf, 32),
            log_guid: guid_at(buf, 48),
            log_version: u16_at(buf, 64),
            version: u16_at(buf, 66),
            log_length: u32_at(buf, 68),
            log_offset: u64_at(buf, 72),
        };
        let field = |field, value: u64, expected| Error::ValidateField {
            structure: S,
            field,
            value,
            expected,
        };
        if header.version != HEADER_VERSION {
            return Err(field("Version", header.version.into(), "1"));
        }
        if header.log_version != LOG_VERSION {
            return Err(field("LogVersion", header.log_version.into(), "0"));
        }
        if u64::from(header.log_length) % MIB != 0 {
            return Err(field(
                "LogLength",
                header.log_length.into(),
                "a multiple of 1 MiB",
            ));
        }
        if !header.log_offset.is_multiple_of(MIB)
            || (header.log_length > 0 && header.log_offset < MIB)
        {
            return Err(field(
                "LogOffset",
                header.log_offset,
                "a multiple of 1 MiB past the header area",
            ));
        }
        Ok(header)
    }

    /// Encodes this header with its checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_SIZE];
        put(&mut buf, 0, HEADER_SIGNATURE.as_bytes());
        put(&mut buf, 8, &self.sequence_number.to_le_bytes());
        put(&mut buf, 16, &self.file_write_guid.to_bytes());
        put(&mut buf, 32, &self.data_write_guid.to_bytes());
        put(&mut buf, 48, &self.log_guid.to_bytes());
        put(&mut buf, 64, &self.log_version.to_le_bytes());
        put(&mut buf, 66, &self.version.to_le_bytes());
        put(&mut buf, 68, &self.log_length.to_le_bytes());
        put(&mut buf, 72, &self.log_offset.to_le_bytes());
        seal(&mut buf, HEADER_CHECKSUM);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            sequence_number: 7,
            file_write_guid: Guid::derived("t", b"f"),
            data_write_guid: Guid::derived("t", b"d"),
            log_guid: Guid::ZERO,
            log_version: 0,
            version: 1,
            log_length: 1 << 20,
            log_offset: 1 << 20,
        }
    }

    #[test]
    fn header_round_trips() {
        let h = sample();
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn header_errors_each_have_their_variant() {
        let good = sample().encode();
        assert!(matches!(
            Header::decode(&good[..100]),
            Err(Error::ReadTruncated { .. })
        ));
        let mut bad = good.clone();
        bad[0] = b'x';
        assert!(matches!(
            Header::decode(&bad),
            Err(Error::MatchSignature { .. })
        ));
        let mut bad = good.clone();
        bad[200] ^= 1;
        assert!(matches!(
            Header::decode(&bad),
            Err(Error::VerifyChecksum { .. })
        ));
        let mut h = sample();
        h.version = 2;
        assert!(matches!(
            Header::decode(&h.encode()),
            Err(Error::ValidateField {
                field: "Version",
                ..
            })
        ));
        let mut h = sample();
        h.log_offset = 4096;
        assert!(matches!(
            Header::decode(&h.encode()),
            Err(Error::ValidateField {
                field: "LogOffset",
                ..
            })
        ));
    }

    #[test]
    fn identifier_round_trips() {
        let id = FileIdentifier {
            creator: "Slipway 0.1".into(),
        };
        assert_eq!(FileIdentifier::decode(&id.encode()).unwrap(), id);
    }
}
