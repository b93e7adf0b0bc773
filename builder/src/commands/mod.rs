//! One module per `slipway` subcommand group.

pub mod build;
pub mod vhdx;
