//! [`UserProfile`]: one versioned snapshot of a user, and how it is read from token claims.

use serde::Deserialize;

use crate::token::SessionClaims;

/// A snapshot of a Clerk user, as written by [`crate::UserStore::upsert`].
///
/// `None` fields are "unknown", never "erase": a store keeps what it has. `version_ms` orders
/// snapshots (Unix milliseconds; Clerk's `updated_at`, or the token's `iat` for claims): a
/// snapshot older than the stored one changes nothing. A snapshot without a version only fills
/// a row that has never had a versioned one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserProfile {
    /// Clerk user id (`user_...`).
    pub id: String,
    /// Primary email address.
    pub email: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Username.
    pub username: Option<String>,
    /// Profile image URL.
    pub image_url: Option<String>,
    /// Version of this snapshot, Unix milliseconds.
    pub version_ms: Option<i64>,
}

impl UserProfile {
    /// A snapshot that knows only the user id.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ..Self::default()
        }
    }

    /// Reads the profile from a token's custom claims.
    ///
    /// The version is the token's `iat` when at least one profile claim is present. A token
    /// with no profile claims carries no version, so it cannot make a later-arriving but newer
    /// profile (a webhook, say) look stale.
    pub fn from_claims(claims: &SessionClaims, names: &ProfileClaims) -> Self {
        let read = |name: &Option<String>| {
            name.as_deref()
                .and_then(|name| claims.custom_str(name))
                .map(str::to_owned)
        };
        let mut profile = Self {
            id: claims.sub.clone(),
            email: read(&names.email),
            first_name: read(&names.first_name),
            last_name: read(&names.last_name),
            username: read(&names.username),
            image_url: read(&names.image_url),
            version_ms: None,
        };
        if profile.has_fields() {
            profile.version_ms = Some(claims.iat.saturating_mul(1000));
        }
        profile
    }

    /// `true` when any profile field is known.
    pub fn has_fields(&self) -> bool {
        [
            &self.email,
            &self.first_name,
            &self.last_name,
            &self.username,
            &self.image_url,
        ]
        .iter()
        .any(|field| field.is_some())
    }
}

/// A user object as Clerk's webhooks and Backend API send it; unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ClerkUserObject {
    id: String,
    #[serde(default)]
    email_addresses: Option<Vec<EmailAddress>>,
    primary_email_address_id: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
    image_url: Option<String>,
    /// Unix milliseconds.
    updated_at: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
struct EmailAddress {
    // Optional in Clerk's spec of the object; an address without an id cannot be primary.
    id: Option<String>,
    email_address: String,
}

impl ClerkUserObject {
    /// The Clerk user id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The profile, versioned by `updated_at`; the email is the one whose id is
    /// `primary_email_address_id`. Empty strings count as unknown.
    pub(crate) fn into_profile(self) -> UserProfile {
        let known = |value: Option<String>| value.filter(|v| !v.is_empty());
        let email = self
            .primary_email_address_id
            .as_deref()
            .and_then(|primary| {
                self.email_addresses
                    .iter()
                    .flatten()
                    .find(|address| address.id.as_deref() == Some(primary))
                    .map(|address| address.email_address.clone())
            });
        UserProfile {
            id: self.id,
            email: known(email),
            first_name: known(self.first_name),
            last_name: known(self.last_name),
            username: known(self.username),
            image_url: known(self.image_url),
            version_ms: self.updated_at,
        }
    }
}

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
        let profile = UserProfile::from_claims(
            &claims(json!({"email": "a@example.com", "first_name": "Ada", "username": ""})),
            &ProfileClaims::default(),
        );
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
        let profile = UserProfile::from_claims(&claims(json!({})), &ProfileClaims::default());
        assert_eq!(profile, UserProfile::new("user_1"));
    }

    #[test]
    fn clerk_user_objects_give_the_primary_email_and_updated_at() {
        let user: ClerkUserObject = serde_json::from_value(json!({
            "object": "user", "id": "user_2g7", "username": null, "first_name": "John",
            "last_name": "", "image_url": "https://img.clerk.com/x",
            "primary_email_address_id": "idn_2",
            "email_addresses": [
                {"id": "idn_1", "object": "email_address", "email_address": "old@example.com"},
                {"id": "idn_2", "object": "email_address", "email_address": "john@example.com"}
            ],
            "updated_at": 1716883200000_i64, "created_at": 1716883200000_i64,
            "public_metadata": {}, "banned": false
        }))
        .unwrap();
        let profile = user.into_profile();
        assert_eq!(profile.email.as_deref(), Some("john@example.com"));
        assert_eq!(profile.first_name.as_deref(), Some("John"));
        assert_eq!(profile.last_name, None);
        assert_eq!(profile.username, None);
        assert_eq!(profile.version_ms, Some(1_716_883_200_000));

        let bare: ClerkUserObject =
            serde_json::from_value(json!({"id": "user_3", "email_addresses": null})).unwrap();
        assert_eq!(bare.into_profile(), UserProfile::new("user_3"));
    }

    #[test]
    fn claim_names_are_configurable() {
        let names = ProfileClaims::none().email(Some("primary_email"));
        let profile = UserProfile::from_claims(
            &claims(json!({"primary_email": "b@example.com", "first_name": "Bo"})),
            &names,
        );
        assert_eq!(profile.email.as_deref(), Some("b@example.com"));
        assert_eq!(profile.first_name, None);
    }
}
