//! The Windows boot configuration data (BCD) store as data.
//!
//! A BCD store is a registry hive: `Objects\{GUID}` per object, with `Description\Type` (a
//! REG_DWORD, the object type) and `Elements\XXXXXXXX\Element` per element (the key name is
//! the element type in hexadecimal, the value's registry type follows the element's format).
//! Slipway writes the store of a Windows image offline: it takes the image's own
//! `Windows\System32\config\BCD-Template` and applies the edits [`store_edits`] lists with
//! hivex; [`read_store`] reads a store back from the hive's values for `slipway inspect`.
//!
//! - [`ids`]: well-known object GUIDs, object types, element types and enumerated values.
//! - [`element`]: element values ([`ElementValue`]) and their registry encoding
//!   ([`encode`], [`decode`]).
//! - [`device`]: the byte layout of device elements ([`Device`]).
//! - [`store`]: what to add for one boot manager and one Windows loader ([`BootSpec`],
//!   [`store_edits`]), and a store read back ([`Store`], [`Store::entries`]).
//!
//! Each file says which public sources its layouts come from.

pub mod device;
pub mod element;
pub mod ids;
pub mod store;

#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;

pub use device::{Device, DeviceFault};
pub use element::{
    ElementValue, EncodeFault, Format, REG_BINARY, REG_DWORD, REG_MULTI_SZ, REG_SZ, RegValue,
    ValueFault, braced, decode, element_key, encode,
};
pub use store::{
    BootSpec, Edit, Entry, HiveValue, Object, PartitionId, Store, read_store, store_edits,
};

use crate::guid::Guid;

/// Why a BCD element or store could not be encoded or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value could not be encoded for an element type.
    #[error("encode BCD element {element_type:08x}")]
    EncodeElement {
        /// The element type.
        element_type: u32,
        /// What is wrong with the value.
        #[source]
        reason: EncodeFault,
    },
    /// Registry data is not a valid value for an element type.
    #[error("decode BCD element {element_type:08x}")]
    DecodeElement {
        /// The element type.
        element_type: u32,
        /// What is wrong with the data.
        #[source]
        reason: ValueFault,
    },
    /// A device element's bytes are not a device this module reads.
    #[error("decode the device in BCD element {element_type:08x}")]
    DecodeDevice {
        /// The element type.
        element_type: u32,
        /// What is wrong with the bytes.
        #[source]
        reason: DeviceFault,
    },
    /// A key under `Objects` is not a GUID in braces.
    #[error("read BCD object key {key:?}: expected a GUID in braces")]
    ParseObjectKey {
        /// The key name.
        key: String,
    },
    /// A key under `Objects\{GUID}\Elements` is not 8 hexadecimal digits.
    #[error("read element key {key:?} of BCD object {}: expected 8 hexadecimal digits", braced(*object))]
    ParseElementKey {
        /// The object.
        object: Guid,
        /// The key name.
        key: String,
    },
    /// An object has no `Description\Type` value.
    #[error("BCD object {} has elements but no Description\\Type value", braced(*object))]
    FindObjectType {
        /// The object.
        object: Guid,
    },
    /// An object's `Description\Type` is not a REG_DWORD.
    #[error("BCD object {}: Description\\Type is registry type {kind} of {len} bytes, expected a REG_DWORD", braced(*object))]
    DecodeObjectType {
        /// The object.
        object: Guid,
        /// The registry type found.
        kind: u32,
        /// Bytes found.
        len: usize,
    },
    /// An element of an object could not be decoded.
    #[error("read BCD object {}", braced(*object))]
    ReadObject {
        /// The object.
        object: Guid,
        /// What failed.
        #[source]
        source: Box<Error>,
    },
    /// An object the boot manager names is not in the store.
    #[error("BCD object {} named by {needed_by} is not in the store", braced(*object))]
    FindObject {
        /// The object looked for.
        object: Guid,
        /// Who names it.
        needed_by: &'static str,
    },
    /// The boot specification cannot be written.
    #[error("check the BCD boot specification: {reason}")]
    CheckBootSpec {
        /// What is wrong.
        reason: String,
    },
}
