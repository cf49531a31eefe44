//! Reading OpenRouter's answers.

pub(crate) mod classify;
pub(crate) mod counts;
pub(crate) mod endpoints;
pub(crate) mod keyinfo;
pub(crate) mod usage;
