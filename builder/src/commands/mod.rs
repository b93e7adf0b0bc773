//! One module per `slipway` subcommand group.

pub mod vhdx;
