//! The Slipway node image as data.
//!
//! This crate holds everything both programs need to know about a node image: the VHDX
//! container it ships in ([`vhdx`]), the GPT disk inside it as a list of extents ([`disk`]), the
//! unified kernel image it boots ([`uki`]) or, for Windows, its BCD store's elements ([`bcd`])
//! and registry hives written from nothing for tests ([`regf`]), the manifest that describes it
//! ([`manifest`]), its
//! signatures ([`sign`]), its distribution as an OCI artifact with channels ([`oci`]), the host's
//! content store ([`store`]), and the identifiers and atomic files they use ([`guid`],
//! [`atomic`]).

pub mod atomic;
pub mod bcd;
pub mod disk;
pub mod guid;
pub mod manifest;
pub mod oci;
mod pio;
pub mod regf;
pub mod sign;
pub mod store;
pub mod uki;
pub mod vhdx;

#[cfg(feature = "cli")]
pub mod terminal;
