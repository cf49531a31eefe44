//! Reading OpenRouter's answers.

pub mod classify;
pub mod keyinfo;
