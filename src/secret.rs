//! Secrets whose `Debug` output is redacted: the secret key and the webhook signing secret.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose;

use crate::error::ConfigError;

/// A secret string (secret key, webhook secret) whose `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"[redacted]\")")
    }
}

/// The key of a Svix webhook endpoint (`whsec_` + base64), decoded; `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct WebhookSecret(pub(crate) Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(\"[redacted]\")")
    }
}

impl WebhookSecret {
    /// Svix's format: an optional `whsec_` prefix, then standard base64 of the key bytes.
    pub(crate) fn parse(value: &str) -> Result<Self, ConfigError> {
        let value = value.trim();
        let encoded = value.strip_prefix("whsec_").unwrap_or(value);
        match general_purpose::STANDARD.decode(encoded) {
            Ok(key) if !key.is_empty() => Ok(Self(key)),
            _ => Err(ConfigError::new(
                "CLERK_WEBHOOK_SIGNING_SECRET",
                "expected `whsec_` followed by base64, as shown in Clerk's dashboard",
            )),
        }
    }
}
