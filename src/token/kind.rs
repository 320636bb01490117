//! Which kind of Clerk token a request carries ([`TokenType`]), detected by its shape.

pub(crate) use crate::token_type::TokenType;

/// The type of a JWT from its header `typ` and its `sub`, in Clerk's order: a machine subject
/// (`mch_…`) is M2M, else a `typ` of `at+jwt` or `application/at+jwt` (exactly, as the JS SDK
/// compares) is OAuth, else a session token.
pub(crate) fn of_jwt(typ: Option<&str>, sub: &str) -> TokenType {
    if sub.starts_with("mch_") {
        TokenType::M2mToken
    } else if matches!(typ, Some("at+jwt" | "application/at+jwt")) {
        TokenType::OAuthToken
    } else {
        TokenType::SessionToken
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Header {
        typ: Option<String>,
    }

    #[derive(Deserialize)]
    struct Payload {
        sub: Option<String>,
    }

    /// The type of `token`, decided as `@clerk/backend`'s `getMachineTokenType` decides it: M2M
    /// first (prefix `mt_`, or a JWT whose `sub` starts with `mch_`), then OAuth (prefix `oat_`,
    /// or a JWT whose header `typ` is `at+jwt` or `application/at+jwt`), then API keys (prefix
    /// `ak_`); anything else is a session token (and a malformed one fails verification as such).
    /// Nothing is verified. The layer applies the two halves where they cost nothing extra:
    /// `TokenType::from_prefix` in `Service::call`, `of_jwt` inside verification, on the header and claims
    /// it parses anyway.
    fn detect(token: &str) -> TokenType {
        if token.starts_with("mt_") {
            return TokenType::M2mToken;
        }
        if let Some((header, payload)) = jwt_parts(token) {
            let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
            let sub = decode(payload)
                .and_then(|bytes| serde_json::from_slice::<Payload>(&bytes).ok())
                .and_then(|payload| payload.sub);
            let typ = decode(header)
                .and_then(|bytes| serde_json::from_slice::<Header>(&bytes).ok())
                .and_then(|header| header.typ);
            if let Some(sub) = sub.as_deref().filter(|sub| sub.starts_with("mch_")) {
                return of_jwt(typ.as_deref(), sub);
            }
            if of_jwt(typ.as_deref(), "") == TokenType::OAuthToken {
                return TokenType::OAuthToken;
            }
        }
        TokenType::from_prefix(token).unwrap_or(TokenType::SessionToken)
    }

    /// Header and payload of a token in JWT form: three non-empty base64url parts, as Clerk's
    /// `isJwtFormat` requires.
    fn jwt_parts(token: &str) -> Option<(&str, &str)> {
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        let base64url = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (parts.next().is_none() && base64url(header) && base64url(payload) && base64url(signature))
            .then_some((header, payload))
    }

    fn jwt(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn detection_follows_clerks_order() {
        let session = jwt(r#"{"alg":"RS256","kid":"ins_1"}"#, r#"{"sub":"user_1"}"#);
        let cases = [
            ("mt_1234567890abcdef", TokenType::M2mToken),
            ("oat_1234567890abcdef", TokenType::OAuthToken),
            ("ak_3beecc9c60adb5f9b850e91a8ee1e992", TokenType::ApiKey),
            (session.as_str(), TokenType::SessionToken),
            ("not-a-jwt", TokenType::SessionToken),
            ("", TokenType::SessionToken),
            // Prefixes are case-sensitive, as in the JS SDK.
            ("AK_123", TokenType::SessionToken),
        ];
        for (token, expected) in cases {
            assert_eq!(detect(token), expected, "{token}");
        }
        let m2m = jwt(
            r#"{"alg":"RS256"}"#,
            r#"{"sub":"mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk"}"#,
        );
        assert_eq!(detect(&m2m), TokenType::M2mToken);
        for typ in ["at+jwt", "application/at+jwt"] {
            let oauth = jwt(
                &format!(r#"{{"alg":"RS256","typ":"{typ}"}}"#),
                r#"{"sub":"user_1"}"#,
            );
            assert_eq!(detect(&oauth), TokenType::OAuthToken, "{typ}");
        }
        // Exact `typ` values only, as the JS SDK compares them.
        let upper = jwt(r#"{"alg":"RS256","typ":"AT+JWT"}"#, r#"{"sub":"user_1"}"#);
        assert_eq!(detect(&upper), TokenType::SessionToken);
        // A machine subject wins over an OAuth `typ` (M2M is checked first).
        let both = jwt(r#"{"typ":"at+jwt"}"#, r#"{"sub":"mch_1"}"#);
        assert_eq!(detect(&both), TokenType::M2mToken);
        // Not JWT-shaped (padding, four parts, an empty part): a session token to verify.
        let padded = format!("{session}=");
        assert_eq!(detect(&padded), TokenType::SessionToken);
        assert_eq!(detect(&format!("{m2m}.x")), TokenType::SessionToken);
        assert_eq!(detect("a..b"), TokenType::SessionToken);
        // Unparsable parts never panic.
        assert_eq!(detect("e30.!!!!.c2ln"), TokenType::SessionToken);
        assert_eq!(detect("e30.bm90IGpzb24.c2ln"), TokenType::SessionToken);
    }

    #[test]
    fn names_are_clerks() {
        let names: Vec<&str> = [
            TokenType::SessionToken,
            TokenType::ApiKey,
            TokenType::M2mToken,
            TokenType::OAuthToken,
        ]
        .iter()
        .map(|t| t.as_str())
        .collect();
        assert_eq!(
            names,
            ["session_token", "api_key", "m2m_token", "oauth_token"]
        );
    }
}
