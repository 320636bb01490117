//! Opaque machine tokens (API keys, M2M and OAuth access tokens) verified by the Backend API.

mod api;
mod token;
pub(crate) mod verifier;

pub use token::{MachineToken, Verdict};
