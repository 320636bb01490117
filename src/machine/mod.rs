//! Opaque machine tokens (API keys, M2M and OAuth access tokens) verified by the Backend API.

mod api;
mod token;

pub use token::{MachineToken, Verdict};
