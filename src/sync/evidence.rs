//! [`Evidence`]: what vouches for a synced user id, and how long a Backend API 404 stands.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// What vouches for the user id being synced, which decides what may be read from it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Evidence<'a> {
    /// A session token (the JWT): its profile claims are read, and a Backend API 404 counts
    /// when the token's `kid` is the secret key's instance's.
    Session(&'a str),
    /// An OAuth access token in JWT form: no profile fields (machine tokens carry no
    /// versioned snapshot of the user); a 404 counts as for sessions.
    MachineJwt(&'a str),
    /// An opaque token that the Backend API verified with the secret key: no profile fields;
    /// the instance is the secret key's by construction.
    Opaque,
}

/// Keeps a 404 verdict until the token's `exp`.
pub(super) struct UntilTokenExpiry;

impl moka::Expiry<Arc<str>, i64> for UntilTokenExpiry {
    fn expire_after_create(&self, _id: &Arc<str>, until: &i64, _now: Instant) -> Option<Duration> {
        let left = until.saturating_sub(crate::time::unix_now()).max(0);
        Some(Duration::from_secs(left.unsigned_abs()))
    }
}
