//! Where notices come from.

pub mod parse;
