//! Clerk tokens: finding them in a request, their type, their claims, signing keys and
//! verification.

mod claims;
pub(crate) mod keys;
pub(crate) mod kind;
pub(crate) mod locate;
pub(crate) mod verify;

pub use claims::SessionClaims;
pub use verify::{AuthorizedPartyPolicy, Verifier};
