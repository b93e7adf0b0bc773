//! One module per `slipway` subcommand group.

pub mod build;
pub mod inspect;
pub mod publish;
pub mod vhdx;
