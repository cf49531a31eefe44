//! Reading OpenRouter's answers.

pub(crate) mod classify;
pub(crate) mod counts;
pub(crate) mod dialect;
pub(crate) mod endpoints;
pub(crate) mod keyinfo;
pub(crate) mod sse;
pub(crate) mod stream;
pub(crate) mod usage;
