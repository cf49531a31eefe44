//! Reading OpenRouter's answers.

pub mod classify;
pub mod endpoints;
pub mod keyinfo;
pub mod usage;
