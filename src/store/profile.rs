//! [`UserProfile`]: one versioned snapshot of a user, and the Clerk user object it is read
//! from.

use serde::Deserialize;

/// A snapshot of a Clerk user, as written by [`crate::store::UserStore::upsert`].
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
}
