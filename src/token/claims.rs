//! The claims of a Clerk session token.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The claims of a verified Clerk session token.
///
/// The registered and Clerk-defined claims are fields; everything else (custom claims added
/// under "Customize session token" in Clerk's dashboard, organisation claims, `fva`, ...) is in
/// [`custom`](Self::custom).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionClaims {
    /// The Clerk user id (`user_...`).
    pub sub: String,
    /// The issuer: the instance's Frontend API URL.
    pub iss: String,
    /// The session id (`sess_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at, seconds since the Unix epoch; also the version of the profile claims.
    pub iat: i64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Authorized party: the origin of the page the token was minted for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    /// Session status; `pending` means the session has unfinished tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts: Option<String>,
    /// Token format version (2 for current Clerk session tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u32>,
    /// Every other claim.
    #[serde(flatten)]
    pub custom: Map<String, Value>,
}

impl SessionClaims {
    /// A custom claim as a non-empty string, `None` when absent, not a string or empty.
    pub fn custom_str(&self, name: &str) -> Option<&str> {
        self.custom
            .get(name)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
    }
}
