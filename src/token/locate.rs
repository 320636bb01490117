//! Finding the session token in a request: `Authorization` first, then the session cookie
//! under Clerk's cookie rules.

use http::{HeaderMap, header};

use crate::error::AuthError;

/// Tokens longer than this are rejected before any parsing (Clerk's are well under 4 KiB).
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

const SESSION_COOKIE: &str = "__session";
const CLIENT_UAT_COOKIE: &str = "__client_uat";

/// Where a request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Located<'a> {
    /// `Authorization: Bearer <token>` (or a bare JWT there), as sent: not yet known to be
    /// ASCII (see [`Located::token`]).
    Header(&'a [u8]),
    /// The session cookie, with the value of its `__client_uat` cookie (`0` when absent or not
    /// a number: signed out, as Clerk reads it).
    Cookie { token: &'a str, client_uat: i64 },
}

/// [`Located`] without the token: what the slow path keeps of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `Authorization`.
    Header,
    /// The session cookie, with its `__client_uat`.
    Cookie { client_uat: i64 },
}

impl Source {
    /// Clerk's rule for cookie tokens: `__client_uat` is set to 0 at sign-out and to the time
    /// of the last session change otherwise, so a cookie token counts only when that value is
    /// positive and not later than the token's `iat`. Header tokens always pass.
    pub(crate) fn check_client_uat(self, iat: i64) -> Result<(), AuthError> {
        match self {
            Self::Header => Ok(()),
            Self::Cookie { client_uat } if client_uat > 0 && client_uat <= iat => Ok(()),
            Self::Cookie { .. } => Err(AuthError::SessionOutdated),
        }
    }
}

impl<'a> Located<'a> {
    /// The token's bytes: what the cache is looked up by.
    pub(crate) fn bytes(self) -> &'a [u8] {
        match self {
            Self::Header(token) => token,
            Self::Cookie { token, .. } => token.as_bytes(),
        }
    }

    /// The token, refused unless it is ASCII (a cookie token always is). Asked before a
    /// token is verified, never on a cache hit.
    pub(crate) fn token(self) -> Result<&'a str, AuthError> {
        match self {
            Self::Header(token) if token.is_ascii() => {
                std::str::from_utf8(token).map_err(|_| not_ascii())
            }
            Self::Header(_) => Err(not_ascii()),
            Self::Cookie { token, .. } => Ok(token),
        }
    }

    /// Where the token came from, without borrowing it.
    pub(crate) fn source(self) -> Source {
        match self {
            Self::Header(_) => Source::Header,
            Self::Cookie { client_uat, .. } => Source::Cookie { client_uat },
        }
    }

    /// The part of [`Source::check_client_uat`] that needs no claims: a cookie
    /// token beside a signed-out `__client_uat` is refused before any verification.
    pub(crate) fn check_signed_in(self) -> Result<(), AuthError> {
        match self {
            Self::Cookie { client_uat, .. } if client_uat <= 0 => Err(AuthError::SessionOutdated),
            _ => Ok(()),
        }
    }
}

/// The token of a request, `Ok(None)` when there is none.
///
/// `Authorization: Bearer <jwt>` (scheme case-insensitive) or a bare JWT in `Authorization`, as
/// Clerk's SDK accepts; otherwise the session cookie. Another scheme (`Basic ...`) is a
/// malformed token rather than "no token", so a misconfigured client gets a precise error.
///
/// Cookies: when `__client_uat_<suffix>` is present (and a suffix is known, see
/// [`crate::config::cookie_suffix`]), `__session_<suffix>` and `__client_uat_<suffix>` are read, else
/// `__session` and `__client_uat`. An empty session cookie counts as none; two session cookies
/// of the name read with different values are a malformed token (never first-wins).
pub(crate) fn locate<'h>(
    headers: &'h HeaderMap,
    cookie_suffix: Option<&str>,
) -> Result<Option<Located<'h>>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        // Bytes, on the hit path of every request: a cached token is found by its bytes,
        // and only a token that missed is checked to be ASCII ([`Located::token`]), since only
        // verified (ASCII) tokens are ever cached. `HeaderValue::to_str` would read every
        // byte of every token first.
        let value = value.as_bytes().trim_ascii();
        let space = value.iter().position(|byte| *byte == b' ');
        let token = match space.map(|at| (&value[..at], &value[at + 1..])) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer") => rest.trim_ascii(),
            Some(_) if !value.is_ascii() => return Err(not_ascii()),
            Some(_) => {
                return Err(AuthError::malformed(
                    "unsupported Authorization scheme; use `Bearer`",
                ));
            }
            None if value.eq_ignore_ascii_case(b"bearer") => b"",
            None => value,
        };
        return checked(token.len()).map(|()| Some(Located::Header(token)));
    }
    if !headers.contains_key(header::COOKIE) {
        return Ok(None);
    }
    let mut plain = CookiePair::default();
    let mut suffixed = CookiePair::default();
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            if let Some(rest) = name.strip_prefix(SESSION_COOKIE) {
                match (rest, cookie_suffix) {
                    ("", _) => plain.session(value),
                    (rest, Some(suffix)) if rest.strip_prefix('_') == Some(suffix) => {
                        suffixed.session(value);
                    }
                    _ => {}
                }
            } else if let Some(rest) = name.strip_prefix(CLIENT_UAT_COOKIE) {
                match (rest, cookie_suffix) {
                    ("", _) => plain.client_uat(value),
                    (rest, Some(suffix)) if rest.strip_prefix('_') == Some(suffix) => {
                        suffixed.client_uat(value);
                    }
                    _ => {}
                }
            }
        }
    }
    let read = if suffixed.client_uat.is_some() {
        suffixed
    } else {
        plain
    };
    if read.conflicting {
        return Err(AuthError::malformed(
            "two session cookies with different values",
        ));
    }
    let Some(token) = read.session else {
        return Ok(None);
    };
    Ok(Some(Located::Cookie {
        token: checked(token.len()).map(|()| token)?,
        client_uat: read
            .client_uat
            .and_then(|value| value.parse().ok())
            .unwrap_or(0),
    }))
}

/// The session and `__client_uat` cookies of one name family.
#[derive(Default, Clone, Copy)]
struct CookiePair<'h> {
    session: Option<&'h str>,
    conflicting: bool,
    client_uat: Option<&'h str>,
}

impl<'h> CookiePair<'h> {
    fn session(&mut self, value: &'h str) {
        if value.is_empty() {
            return;
        }
        match self.session {
            Some(seen) if seen != value => self.conflicting = true,
            _ => self.session = Some(value),
        }
    }

    fn client_uat(&mut self, value: &'h str) {
        self.client_uat = Some(value);
    }
}

fn not_ascii() -> AuthError {
    AuthError::malformed("the Authorization header is not ASCII")
}

/// Refuses an empty token and one longer than [`MAX_TOKEN_LEN`], given its length.
fn checked(len: usize) -> Result<(), AuthError> {
    if len == 0 {
        return Err(AuthError::malformed("the token is empty"));
    }
    if len > MAX_TOKEN_LEN {
        return Err(AuthError::malformed("the token is longer than 16 KiB"));
    }
    Ok(())
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

    fn token_of(map: &HeaderMap) -> Result<Option<&str>, AuthError> {
        locate(map, None).map(|found| found.map(|located| located.token().unwrap()))
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer a.b.c", "bearer a.b.c", "BEARER  a.b.c "] {
            let map = headers(&[(header::AUTHORIZATION, value)]);
            assert_eq!(
                locate(&map, None),
                Ok(Some(Located::Header(b"a.b.c"))),
                "{value}"
            );
        }
    }

    #[test]
    fn bare_jwt_in_authorization_is_accepted() {
        let map = headers(&[(header::AUTHORIZATION, "a.b.c")]);
        assert_eq!(token_of(&map), Ok(Some("a.b.c")));
    }

    #[test]
    fn session_cookie_comes_with_its_client_uat() {
        let map = headers(&[
            (header::COOKIE, "theme=dark"),
            (
                header::COOKIE,
                "__client_uat=1700000000; __session=x.y.z; other=1",
            ),
        ]);
        assert_eq!(
            locate(&map, None),
            Ok(Some(Located::Cookie {
                token: "x.y.z",
                client_uat: 1_700_000_000
            }))
        );
        // Absent or not a number: 0, signed out.
        for cookies in ["__session=x.y.z", "__session=x.y.z; __client_uat=soon"] {
            let map = headers(&[(header::COOKIE, cookies)]);
            assert_eq!(
                locate(&map, None),
                Ok(Some(Located::Cookie {
                    token: "x.y.z",
                    client_uat: 0
                })),
                "{cookies}"
            );
        }
    }

    #[test]
    fn client_uat_rules() {
        let cookie = |client_uat| Located::Cookie {
            token: "t",
            client_uat,
        };
        assert_eq!(cookie(100).source().check_client_uat(100), Ok(()));
        assert_eq!(cookie(99).source().check_client_uat(100), Ok(()));
        for (uat, iat) in [(0, 100), (-1, 100), (101, 100)] {
            assert_eq!(
                cookie(uat).source().check_client_uat(iat),
                Err(AuthError::SessionOutdated),
                "{uat} vs {iat}"
            );
        }
        assert_eq!(cookie(0).check_signed_in(), Err(AuthError::SessionOutdated));
        assert_eq!(cookie(5).check_signed_in(), Ok(()));
        assert_eq!(Located::Header(b"t").source().check_client_uat(1), Ok(()));
        assert_eq!(Located::Header(b"t").check_signed_in(), Ok(()));
    }

    #[test]
    fn suffixed_cookies_win_when_their_client_uat_is_present() {
        let suffix = crate::config::cookie_suffix("pk_test_Y2xlcmsuZXhhbXBsZS5jb20k");
        assert_eq!(suffix.len(), 8);
        let both = format!(
            "__session=plain.t.k; __client_uat=5; __session_{suffix}=suffixed.t.k; \
             __client_uat_{suffix}=7; __session_otherapp=other.t.k"
        );
        let map = headers(&[(header::COOKIE, &both)]);
        assert_eq!(
            locate(&map, Some(&suffix)),
            Ok(Some(Located::Cookie {
                token: "suffixed.t.k",
                client_uat: 7
            }))
        );
        // Without the publishable key, only the plain names are read.
        assert_eq!(
            locate(&map, None),
            Ok(Some(Located::Cookie {
                token: "plain.t.k",
                client_uat: 5
            }))
        );
        // A suffixed session cookie without its client_uat: the plain names are read.
        let no_uat = format!("__session=plain.t.k; __client_uat=5; __session_{suffix}=s.t.k");
        let map = headers(&[(header::COOKIE, &no_uat)]);
        assert_eq!(token_of_suffixed(&map, &suffix), Some("plain.t.k"));
    }

    fn token_of_suffixed<'h>(map: &'h HeaderMap, suffix: &str) -> Option<&'h str> {
        locate(map, Some(suffix))
            .unwrap()
            .map(|located| located.token().unwrap())
    }

    #[test]
    fn duplicate_session_cookies_are_refused_unless_equal() {
        let map = headers(&[(
            header::COOKIE,
            "__session=a.b.c; __client_uat=1; __session=d.e.f",
        )]);
        assert_eq!(token_of(&map).unwrap_err().code(), "malformed_token");
        let map = headers(&[
            (header::COOKIE, "__session=a.b.c; __client_uat=1"),
            (header::COOKIE, "__session=a.b.c"),
        ]);
        assert_eq!(token_of(&map), Ok(Some("a.b.c")));
    }

    #[test]
    fn empty_session_cookie_is_no_token() {
        let map = headers(&[(header::COOKIE, "__session=; __client_uat=0")]);
        assert_eq!(token_of(&map), Ok(None));
        let map = headers(&[(header::COOKIE, "__session=\"\"; __session=a.b.c")]);
        assert_eq!(token_of(&map), Ok(Some("a.b.c")));
    }

    #[test]
    fn authorization_wins_over_cookie() {
        let map = headers(&[
            (header::AUTHORIZATION, "Bearer from.header.jwt"),
            (header::COOKIE, "__session=from.cookie.jwt"),
        ]);
        assert_eq!(token_of(&map), Ok(Some("from.header.jwt")));
    }

    #[test]
    fn no_token_is_none() {
        let map = headers(&[(header::COOKIE, "__session_abc=1; session=2")]);
        assert_eq!(token_of(&map), Ok(None));
        assert_eq!(token_of(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn other_schemes_empty_and_oversized_tokens_are_malformed() {
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", long.as_str()] {
            let map = headers(&[(header::AUTHORIZATION, value)]);
            let error = token_of(&map).unwrap_err();
            assert_eq!(error.code(), "malformed_token", "{value}");
        }
        let exactly_max = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN));
        let map = headers(&[(header::AUTHORIZATION, &exactly_max)]);
        assert!(token_of(&map).is_ok());
    }
}
