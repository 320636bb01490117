//! Opaque machine tokens (API keys, M2M and OAuth access tokens) verified by the Backend API.

mod api;
mod token;
// Wired into the layers by `accepts(..)` in the next part of issue 14; tested on its own now.
#[cfg_attr(not(test), allow(dead_code))]
mod verifier;

pub use token::{MachineToken, Verdict};
