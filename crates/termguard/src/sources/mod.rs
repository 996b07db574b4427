//! Where notices come from.

pub mod parse;
pub mod sqs;
