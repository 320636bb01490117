//! [`MachineToken`]: an opaque machine token as the Backend API describes it, and the verdict
//! on it.

use serde::Deserialize;
use serde_json::Value;

use crate::error::AuthError;
use crate::token::SessionClaims;
use crate::token_type::TokenType;

/// An API key, M2M token or OAuth access token that the Backend API verified.
///
/// `subject` is who the token acts for: a user (`user_…`), an organization (`org_…`, API keys
/// only) or a machine (`mch_…`). Expirations are Unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MachineToken {
    /// The token's type.
    pub token_type: TokenType,
    /// Clerk's id of the token (`ak_…`, `mt_…`, `oat_…`), not the secret.
    pub id: String,
    /// Who the token acts for.
    pub subject: String,
    /// Granted scopes (for M2M tokens, the machines it may talk to).
    pub scopes: Vec<String>,
    /// Custom claims set on the token, if any.
    pub claims: Option<serde_json::Value>,
    /// The API key's name (API keys only).
    pub name: Option<String>,
    /// The OAuth application's client id (OAuth tokens only).
    pub client_id: Option<String>,
    /// When the token expires, Unix milliseconds; `None`: never.
    pub expiration_ms: Option<i64>,
}

impl MachineToken {
    /// The token read from the verified claims of an M2M or OAuth JWT, as Clerk's JS SDK reads
    /// them: the id is `jti`; scopes are M2M's space-separated `scopes` (else its `aud`), or
    /// OAuth's `scp` array (else its space-separated `scope`); custom claims are every claim
    /// but `iss`, `sub`, `exp`, `nbf`, `iat` and `jti` (`None` when there are none); the
    /// expiration is `exp` in milliseconds. For the claims of a machine JWT that
    /// [`crate::Verifier::verify_jwt`] verified.
    pub fn from_jwt(token_type: TokenType, claims: &SessionClaims) -> Self {
        let custom = &claims.custom;
        let words = |name: &str| {
            custom.get(name).and_then(Value::as_str).map(|value| {
                value
                    .split(' ')
                    .filter(|word| !word.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
        };
        let strings = |name: &str| match custom.get(name) {
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            ),
            Some(Value::String(one)) => Some(vec![one.clone()]),
            _ => None,
        };
        let scopes = match token_type {
            TokenType::OAuthToken => strings("scp").or_else(|| words("scope")),
            _ => words("scopes").or_else(|| strings("aud")),
        };
        let mut rest = custom.clone();
        rest.remove("jti");
        // The typed fields: `sid`, `azp`, `sts`, `v` are claims like any other here.
        for (name, value) in [
            ("sid", claims.sid.clone().map(Value::from)),
            ("azp", claims.azp.clone().map(Value::from)),
            ("sts", claims.sts.clone().map(Value::from)),
            ("v", claims.v.map(Value::from)),
        ] {
            if let Some(value) = value {
                rest.insert(name.to_owned(), value);
            }
        }
        Self {
            token_type,
            id: custom
                .get("jti")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            subject: claims.sub.clone(),
            scopes: scopes.unwrap_or_default(),
            claims: (!rest.is_empty()).then_some(Value::Object(rest)),
            name: None,
            client_id: custom
                .get("client_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            expiration_ms: Some(claims.exp.saturating_mul(1000)),
        }
    }

    /// The claims a [`crate::ClerkUser`] backed by this token shows as
    /// [`claims()`](crate::ClerkUser::claims): `sub` the subject, `custom` the token's custom
    /// claims (when they are an object), `exp` the expiration in seconds (`i64::MAX`: never),
    /// `iat` the time of verification, `iss` empty, the session claims absent.
    pub(crate) fn session_view(&self, verified_at: i64) -> SessionClaims {
        let custom = match &self.claims {
            Some(Value::Object(claims)) => claims.clone(),
            _ => serde_json::Map::new(),
        };
        SessionClaims {
            sub: self.subject.clone(),
            iss: String::new(),
            sid: None,
            exp: self
                .expiration_ms
                .map_or(i64::MAX, |at| at.div_euclid(1000)),
            iat: verified_at,
            nbf: None,
            azp: None,
            sts: None,
            v: None,
            custom,
        }
    }
}

/// What the Backend API said of a machine token.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Verdict {
    /// Valid now.
    Valid(MachineToken),
    /// Revoked (401 `token_revoked`), whatever else the answer says.
    Revoked,
    /// Expired, by the answer's `expired` or an `expiration` in the past (401 `token_expired`).
    Expired,
    /// Unknown to Clerk or not a token at all: 404, 400/422, or OAuth's `{"active": false}`
    /// (401 `invalid_token`).
    Invalid,
}

impl Verdict {
    /// The token when valid, else the rejection the layers answer with: 401
    /// `token_revoked`, `token_expired` or `invalid_token`.
    pub fn into_result(self) -> Result<MachineToken, AuthError> {
        match self {
            Self::Valid(token) => Ok(token),
            Self::Revoked => Err(AuthError::TokenRevoked),
            Self::Expired => Err(AuthError::TokenExpired),
            Self::Invalid => Err(AuthError::InvalidToken),
        }
    }
}

/// The fields the three verify answers share (spec 2026-05-12); unknown fields are ignored.
#[derive(Deserialize)]
struct Answer {
    object: Option<String>,
    id: Option<String>,
    subject: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    claims: Option<serde_json::Value>,
    name: Option<String>,
    client_id: Option<String>,
    #[serde(default)]
    revoked: bool,
    #[serde(default)]
    expired: bool,
    expiration: Option<f64>,
    /// OAuth's answer for a token it does not know.
    active: Option<bool>,
}

/// The `object` each endpoint answers with.
fn expected_object(token_type: TokenType) -> &'static str {
    match token_type {
        TokenType::ApiKey => "api_key",
        TokenType::M2mToken => "machine_to_machine_token",
        TokenType::OAuthToken => "clerk_idp_oauth_access_token",
        TokenType::SessionToken => "session",
    }
}

/// An `expiration` in Unix milliseconds. The spec documents milliseconds for API keys and M2M
/// tokens, and its examples (also OAuth's, which has no description) are second-sized values
/// such as `1716883200`; a value under 10^11 is read as seconds (10^11 ms is 1973, 10^11 s
/// the year 5138), so both readings give the same instant.
fn expiration_ms(value: f64) -> i64 {
    let value = value.trunc();
    if value.abs() < 1e11 {
        (value * 1000.0) as i64
    } else {
        value as i64
    }
}

/// The verdict on a `200` of the endpoint for `token_type` at `now_ms`; `Err` names what in
/// the body is not the documented shape. A `200` that says revoked or expired (or whose
/// `expiration` has passed) is refused, although Clerk's JS SDK lets such answers through.
pub(crate) fn verdict(token_type: TokenType, body: &[u8], now_ms: i64) -> Result<Verdict, String> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if answer.active == Some(false) && answer.object.is_none() {
        return Ok(Verdict::Invalid);
    }
    let object = answer.object.as_deref().unwrap_or("missing");
    if object != expected_object(token_type) {
        return Err(format!(
            "`object` is `{object}`, expected `{}`",
            expected_object(token_type)
        ));
    }
    let (Some(id), Some(subject)) = (answer.id, answer.subject) else {
        return Err("`id` or `subject` is missing".to_owned());
    };
    if answer.revoked {
        return Ok(Verdict::Revoked);
    }
    let expiration_ms = answer.expiration.map(expiration_ms);
    if answer.expired || expiration_ms.is_some_and(|at| at <= now_ms) {
        return Ok(Verdict::Expired);
    }
    Ok(Verdict::Valid(MachineToken {
        token_type,
        id,
        subject,
        scopes: answer.scopes.unwrap_or_default(),
        claims: answer.claims.filter(|claims| !claims.is_null()),
        name: answer.name,
        client_id: answer.client_id,
        expiration_ms,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn api_key(changes: serde_json::Value) -> Vec<u8> {
        let mut body = json!({
            "object": "api_key", "id": "ak_3beecc9c60adb5f9b850e91a8ee1e992", "type": "api_key",
            "subject": "user_2xhFjEI5X2qWRvtV13BzSj8H6Dk", "name": "MY_SERVICE_API_KEY",
            "description": null, "claims": {"foo": "bar"}, "scopes": ["read", "write"],
            "revoked": false, "revocation_reason": null, "expired": false, "expiration": null,
            "created_by": null, "last_used_at": null, "created_at": 1716883200000_i64,
            "updated_at": 1716883200000_i64
        });
        if let (Some(body), Some(changes)) = (body.as_object_mut(), changes.as_object()) {
            body.extend(changes.clone());
        }
        serde_json::to_vec(&body).unwrap()
    }

    #[test]
    fn a_valid_api_key_gives_its_subject_scopes_and_claims() {
        let Ok(Verdict::Valid(token)) = verdict(TokenType::ApiKey, &api_key(json!({})), NOW) else {
            panic!("valid");
        };
        assert_eq!(token.subject, "user_2xhFjEI5X2qWRvtV13BzSj8H6Dk");
        assert_eq!(token.scopes, ["read", "write"]);
        assert_eq!(token.claims, Some(json!({"foo": "bar"})));
        assert_eq!(token.name.as_deref(), Some("MY_SERVICE_API_KEY"));
        assert_eq!(token.expiration_ms, None);
    }

    #[test]
    fn revoked_expired_and_past_expirations_are_refused_although_the_answer_is_200() {
        let revoked = api_key(json!({"revoked": true, "revocation_reason": "leaked"}));
        assert_eq!(
            verdict(TokenType::ApiKey, &revoked, NOW),
            Ok(Verdict::Revoked)
        );
        // Revoked wins over expired.
        let both = api_key(json!({"revoked": true, "expired": true}));
        assert_eq!(verdict(TokenType::ApiKey, &both, NOW), Ok(Verdict::Revoked));
        let expired = api_key(json!({"expired": true}));
        assert_eq!(
            verdict(TokenType::ApiKey, &expired, NOW),
            Ok(Verdict::Expired)
        );
        let past = api_key(json!({"expiration": NOW - 1}));
        assert_eq!(verdict(TokenType::ApiKey, &past, NOW), Ok(Verdict::Expired));
        let future = api_key(json!({"expiration": NOW + 60_000}));
        assert!(matches!(
            verdict(TokenType::ApiKey, &future, NOW),
            Ok(Verdict::Valid(MachineToken { expiration_ms: Some(at), .. })) if at == NOW + 60_000
        ));
        // Second-sized values are seconds (the spec's examples).
        let seconds = api_key(json!({"expiration": NOW / 1000 + 60}));
        assert!(matches!(
            verdict(TokenType::ApiKey, &seconds, NOW),
            Ok(Verdict::Valid(MachineToken { expiration_ms: Some(at), .. })) if at == NOW + 60_000
        ));
    }

    #[test]
    fn m2m_and_oauth_answers_are_read_and_an_inactive_oauth_token_is_invalid() {
        let m2m = json!({
            "object": "machine_to_machine_token", "id": "mt_f7f0ba8c3b4843ce7d85fcdd5e71853e",
            "subject": "mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk", "claims": null,
            "scopes": ["mch_2yGkLpQ7Y3rXSwtU24CzTk9I7Em"], "revoked": false,
            "revocation_reason": null, "expired": false, "expiration": null,
            "last_used_at": null, "created_at": 1716883200000_i64, "updated_at": 1716883200000_i64
        });
        let Ok(Verdict::Valid(token)) =
            verdict(TokenType::M2mToken, &serde_json::to_vec(&m2m).unwrap(), NOW)
        else {
            panic!("valid m2m");
        };
        assert_eq!(token.subject, "mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk");
        assert_eq!(token.claims, None);
        let oauth = json!({
            "object": "clerk_idp_oauth_access_token", "id": "oat_0ef5a7a33d87ed87ee7954c845d80450",
            "client_id": "client_2xhFjEI5X2qWRvtV13BzSj8H6Dk",
            "subject": "user_2xhFjEI5X2qWRvtV13BzSj8H6Dk", "scopes": ["read"], "revoked": false,
            "revocation_reason": null, "expired": false, "expiration": null,
            "created_at": 1716883200, "updated_at": 1716883200
        });
        let Ok(Verdict::Valid(token)) = verdict(
            TokenType::OAuthToken,
            &serde_json::to_vec(&oauth).unwrap(),
            NOW,
        ) else {
            panic!("valid oauth");
        };
        assert_eq!(
            token.client_id.as_deref(),
            Some("client_2xhFjEI5X2qWRvtV13BzSj8H6Dk")
        );
        assert_eq!(
            verdict(TokenType::OAuthToken, br#"{"active": false}"#, NOW),
            Ok(Verdict::Invalid)
        );
    }

    #[test]
    fn answers_of_another_shape_are_errors_not_verdicts() {
        // An M2M answer from the API-key endpoint, a body without an id, not JSON.
        let m2m = api_key(json!({"object": "machine_to_machine_token"}));
        assert!(verdict(TokenType::ApiKey, &m2m, NOW).is_err());
        assert!(verdict(TokenType::ApiKey, br#"{"object": "api_key"}"#, NOW).is_err());
        assert!(verdict(TokenType::ApiKey, b"<html>", NOW).is_err());
        assert!(verdict(TokenType::ApiKey, br#"{"active": true}"#, NOW).is_err());
    }
}
