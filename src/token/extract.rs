//! Finding the session token in a request: `Authorization` first, then the `__session` cookie.

use http::{HeaderMap, header};

use crate::error::AuthError;

/// Tokens longer than this are rejected before any parsing (Clerk's are well under 4 KiB).
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

const SESSION_COOKIE: &str = "__session";

/// The token of a request, `Ok(None)` when there is none.
///
/// `Authorization: Bearer <jwt>` (scheme case-insensitive) or a bare JWT in `Authorization`, as
/// Clerk's SDK accepts; otherwise the `__session` cookie. Another scheme (`Basic ...`) is a
/// malformed token rather than "no token", so a misconfigured client gets a precise error.
pub(crate) fn token_from_headers(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| AuthError::malformed("the Authorization header is not ASCII"))?
            .trim();
        let token = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            Some(_) => {
                return Err(AuthError::malformed(
                    "unsupported Authorization scheme; use `Bearer`",
                ));
            }
            None if value.eq_ignore_ascii_case("bearer") => "",
            None => value,
        };
        return checked(token).map(Some);
    }
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((name, token)) = pair.trim().split_once('=')
                && name == SESSION_COOKIE
            {
                return checked(token.trim_matches('"')).map(Some);
            }
        }
    }
    Ok(None)
}

fn checked(token: &str) -> Result<&str, AuthError> {
    if token.is_empty() {
        return Err(AuthError::malformed("the token is empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::malformed("the token is longer than 16 KiB"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer a.b.c", "bearer a.b.c", "BEARER  a.b.c "] {
            let map = headers(&[(header::AUTHORIZATION, value)]);
            assert_eq!(token_from_headers(&map), Ok(Some("a.b.c")), "{value}");
        }
    }

    #[test]
    fn bare_jwt_in_authorization_is_accepted() {
        let map = headers(&[(header::AUTHORIZATION, "a.b.c")]);
        assert_eq!(token_from_headers(&map), Ok(Some("a.b.c")));
    }

    #[test]
    fn session_cookie_is_used_without_authorization() {
        let map = headers(&[
            (header::COOKIE, "theme=dark"),
            (header::COOKIE, "__client_uat=1; __session=x.y.z; other=1"),
        ]);
        assert_eq!(token_from_headers(&map), Ok(Some("x.y.z")));
    }

    #[test]
    fn authorization_wins_over_cookie() {
        let map = headers(&[
            (header::AUTHORIZATION, "Bearer from.header.jwt"),
            (header::COOKIE, "__session=from.cookie.jwt"),
        ]);
        assert_eq!(token_from_headers(&map), Ok(Some("from.header.jwt")));
    }

    #[test]
    fn no_token_is_none() {
        let map = headers(&[(header::COOKIE, "__session_abc=1; session=2")]);
        assert_eq!(token_from_headers(&map), Ok(None));
    }

    #[test]
    fn other_schemes_empty_and_oversized_tokens_are_malformed() {
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", long.as_str()] {
            let map = headers(&[(header::AUTHORIZATION, value)]);
            let error = token_from_headers(&map).unwrap_err();
            assert_eq!(error.code(), "malformed_token", "{value}");
        }
        let exactly_max = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN));
        let map = headers(&[(header::AUTHORIZATION, &exactly_max)]);
        assert!(token_from_headers(&map).is_ok());
    }
}
