//! The Slipway node image as data.
//!
//! This crate holds everything both programs need to know about a node image: the VHDX
//! container it ships in ([`vhdx`]) and the identifiers those formats use ([`guid`]). Disk
//! layout, manifests, signatures and distribution land here as their issues are built.

pub mod guid;
pub mod vhdx;

#[cfg(feature = "cli")]
pub mod terminal;
