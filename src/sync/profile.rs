//! [`ProfileClaims`]: which session-token claims carry profile fields, and reading them.

use crate::store::UserProfile;
use crate::token::SessionClaims;

/// Names of the session-token claims that carry profile fields.
///
/// Clerk's session tokens carry no email or name by default: add them in the dashboard under
/// "Sessions → Customize session token", for example
/// `{"email": "{{user.primary_email_address}}", "first_name": "{{user.first_name}}"}`.
/// Defaults: `email`, `first_name`, `last_name`, `username`, `image_url`. Set a name to `None`
/// to ignore that claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileClaims {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
    image_url: Option<String>,
}

impl Default for ProfileClaims {
    fn default() -> Self {
        Self {
            email: Some("email".into()),
            first_name: Some("first_name".into()),
            last_name: Some("last_name".into()),
            username: Some("username".into()),
            image_url: Some("image_url".into()),
        }
    }
}

impl ProfileClaims {
    /// The profile in a token's custom claims.
    ///
    /// The version is the token's `iat` when at least one profile claim is present. A token
    /// with no profile claims carries no version, so it cannot make a later-arriving but newer
    /// profile (a webhook, say) look stale.
    pub fn read(&self, claims: &SessionClaims) -> UserProfile {
        let read = |name: &Option<String>| {
            name.as_deref()
                .and_then(|name| claims.custom_str(name))
                .map(str::to_owned)
        };
        let mut profile = UserProfile {
            id: claims.sub.clone(),
            email: read(&self.email),
            first_name: read(&self.first_name),
            last_name: read(&self.last_name),
            username: read(&self.username),
            image_url: read(&self.image_url),
            version_ms: None,
        };
        if profile.has_fields() {
            profile.version_ms = Some(claims.iat.saturating_mul(1000));
        }
        profile
    }

    /// Reads no profile claims at all: rows hold the user id alone.
    pub fn none() -> Self {
        Self {
            email: None,
            first_name: None,
            last_name: None,
            username: None,
            image_url: None,
        }
    }

    /// Claim carrying the primary email. Default: `email`.
    pub fn email(mut self, claim: Option<&str>) -> Self {
        self.email = claim.map(str::to_owned);
        self
    }

    /// Claim carrying the first name. Default: `first_name`.
    pub fn first_name(mut self, claim: Option<&str>) -> Self {
        self.first_name = claim.map(str::to_owned);
        self
    }

    /// Claim carrying the last name. Default: `last_name`.
    pub fn last_name(mut self, claim: Option<&str>) -> Self {
        self.last_name = claim.map(str::to_owned);
        self
    }

    /// Claim carrying the username. Default: `username`.
    pub fn username(mut self, claim: Option<&str>) -> Self {
        self.username = claim.map(str::to_owned);
        self
    }

    /// Claim carrying the image URL. Default: `image_url`.
    pub fn image_url(mut self, claim: Option<&str>) -> Self {
        self.image_url = claim.map(str::to_owned);
        self
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(custom: serde_json::Value) -> SessionClaims {
        let mut value = json!({"sub": "user_1", "iss": "https://x", "exp": 200, "iat": 100});
        if let (Some(base), Some(extra)) = (value.as_object_mut(), custom.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn profile_claims_are_read_and_versioned_by_iat() {
        let profile = ProfileClaims::default().read(&claims(
            json!({"email": "a@example.com", "first_name": "Ada", "username": ""}),
        ));
        assert_eq!(profile.id, "user_1");
        assert_eq!(profile.email.as_deref(), Some("a@example.com"));
        assert_eq!(profile.first_name.as_deref(), Some("Ada"));
        assert_eq!(
            profile.username, None,
            "empty strings are unknown, not values"
        );
        assert_eq!(profile.version_ms, Some(100_000));
    }

    #[test]
    fn tokens_without_profile_claims_carry_no_version() {
        let profile = ProfileClaims::default().read(&claims(json!({})));
        assert_eq!(profile, UserProfile::new("user_1"));
    }

    #[test]
    fn claim_names_are_configurable() {
        let names = ProfileClaims::none().email(Some("primary_email"));
        let profile = names.read(&claims(
            json!({"primary_email": "b@example.com", "first_name": "Bo"}),
        ));
        assert_eq!(profile.email.as_deref(), Some("b@example.com"));
        assert_eq!(profile.first_name, None);
    }
}
