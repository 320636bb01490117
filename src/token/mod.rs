//! Session tokens: finding them in a request, their claims, signing keys and verification.

mod claims;
pub(crate) mod keys;
pub(crate) mod locate;
pub(crate) mod verify;

pub use claims::SessionClaims;
pub use verify::{AuthorizedPartyPolicy, Verifier};
