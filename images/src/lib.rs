//! The Slipway node image as data.
//!
//! This crate holds everything both programs need to know about a node image: the VHDX
//! container it ships in ([`vhdx`]), the GPT disk inside it as a list of extents ([`disk`]),
//! and the identifiers those formats use ([`guid`]). Manifests, signatures and distribution
//! land here as their issues are built.

pub mod atomic;
pub mod disk;
pub mod guid;
pub mod manifest;
pub mod oci;
pub mod sign;
pub mod uki;
pub mod vhdx;

#[cfg(feature = "cli")]
pub mod terminal;
