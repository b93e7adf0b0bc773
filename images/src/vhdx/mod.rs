//! MS-VHDX v1: reading, writing, differencing children, log replay and checking.
//!
//! Written from Microsoft's [MS-VHDX] specification. The pieces:
//! - [`format`]: the on-disk structures, decoded and encoded with every field checked;
//! - [`reader`]: open a file (log replayed in memory), read guest data, follow parents;
//! - [`writer`]: stream a list of extents into a dynamic or fixed VHDX;
//! - [`child`]: create a differencing disk over a base, as Hyper-V's `New-VHD -Differencing`;
//! - [`update`]: change an existing file (replay its log in place, sparse writes to a child);
//! - [`check`]: report every problem in a file; [`export`]: guest content to a sparse raw file.

mod backing;
pub mod check;
pub mod child;
pub mod export;
pub mod format;
pub mod info;
mod layout;
pub mod log;
pub mod reader;
pub(crate) mod stream;
pub mod update;
pub mod writer;

pub use reader::{AllocatedBlock, Cursor, Kind, Vhdx};
pub use writer::{Extent, Identity, Options};
