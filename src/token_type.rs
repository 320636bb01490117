//! [`TokenType`]: the kinds of Clerk token (a leaf: errors and detection both name them).

use std::fmt;

/// The kinds of Clerk token, named as Clerk's SDKs name them (`tokenType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenType {
    /// A browser session's JWT (`session_token`).
    SessionToken,
    /// An API key, opaque `ak_…` (`api_key`).
    ApiKey,
    /// A machine-to-machine token: opaque `mt_…`, or a JWT whose `sub` is a machine `mch_…`
    /// (`m2m_token`).
    M2mToken,
    /// An OAuth access token: opaque `oat_…`, or a JWT with header `typ` `at+jwt` or
    /// `application/at+jwt` (`oauth_token`).
    OAuthToken,
}

impl TokenType {
    /// The type an opaque token's prefix names, as Clerk's JS SDK reads it: `mt_` M2M, `oat_`
    /// OAuth, `ak_` API key; `None` for anything else (a JWT, whose type needs its claims).
    pub fn from_prefix(token: &str) -> Option<Self> {
        Self::from_prefix_bytes(token.as_bytes())
    }

    /// [`from_prefix`](Self::from_prefix) of a token's bytes.
    pub(crate) fn from_prefix_bytes(token: &[u8]) -> Option<Self> {
        if token.starts_with(b"mt_") {
            Some(Self::M2mToken)
        } else if token.starts_with(b"oat_") {
            Some(Self::OAuthToken)
        } else if token.starts_with(b"ak_") {
            Some(Self::ApiKey)
        } else {
            None
        }
    }

    /// Clerk's name of the type: `session_token`, `api_key`, `m2m_token`, `oauth_token`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionToken => "session_token",
            Self::ApiKey => "api_key",
            Self::M2mToken => "m2m_token",
            Self::OAuthToken => "oauth_token",
        }
    }
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The token types a layer takes: a set of [`TokenType`]s, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepted(u8);

impl Accepted {
    /// Session tokens only: what `clerk.layer()` takes.
    pub(crate) const SESSIONS: Self = Self(1);
    /// Every type: `accepts_any()`.
    pub(crate) const ANY: Self = Self(0b1111);

    fn bit(token_type: TokenType) -> u8 {
        match token_type {
            TokenType::SessionToken => 1,
            TokenType::ApiKey => 1 << 1,
            TokenType::M2mToken => 1 << 2,
            TokenType::OAuthToken => 1 << 3,
        }
    }

    /// The set of `types` (empty when `types` is).
    pub(crate) fn of(types: impl IntoIterator<Item = TokenType>) -> Self {
        Self(types.into_iter().fold(0, |set, t| set | Self::bit(t)))
    }

    /// Whether `token_type` is in the set.
    pub(crate) fn contains(self, token_type: TokenType) -> bool {
        self.0 & Self::bit(token_type) != 0
    }

    /// The set without machine types: what a token from a cookie may be.
    pub(crate) fn sessions_only(self) -> Self {
        Self(self.0 & Self::SESSIONS.0)
    }

    /// Whether an opaque machine type (`ak_`, `mt_`, `oat_`) is in the set: those need the
    /// Backend API.
    pub(crate) fn any_opaque(self) -> bool {
        self.0 & 0b1110 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sets() {
        let all = [
            TokenType::SessionToken,
            TokenType::ApiKey,
            TokenType::M2mToken,
            TokenType::OAuthToken,
        ];
        assert!(all.iter().all(|t| Accepted::ANY.contains(*t)));
        assert_eq!(Accepted::of(all), Accepted::ANY);
        let keys = Accepted::of([TokenType::ApiKey]);
        assert!(keys.contains(TokenType::ApiKey) && !keys.contains(TokenType::SessionToken));
        assert!(keys.any_opaque() && !Accepted::SESSIONS.any_opaque());
        assert_eq!(keys.sessions_only(), Accepted::of([]));
        assert_eq!(Accepted::ANY.sessions_only(), Accepted::SESSIONS);
        assert!(!Accepted::of([]).contains(TokenType::SessionToken));
    }
}
