//! [`Verifier`]: RS256 signature, Clerk's header and claim rules, and the verified-token cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use moka::Expiry;
use moka::future::Cache;
use serde::Deserialize;

use super::claims::SessionClaims;
use super::keys::KeyStore;
use super::kind::{self, TokenType};
use super::locate::MAX_TOKEN_LEN;
use crate::error::AuthError;
use crate::stats::Counters;
use crate::time::unix_now;
use crate::token_type::Accepted;

/// What to do with the `azp` (authorized party) claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthorizedPartyPolicy {
    /// Do not look at `azp`.
    Ignore,
    /// When `azp` is present it must be one of the authorized parties; a token without `azp`
    /// passes. The default, because Clerk issues cookie tokens without `azp` when the request
    /// that refreshed them had no `Origin`. With no authorized parties configured there is
    /// nothing to check against and every `azp` passes.
    #[default]
    CheckWhenPresent,
    /// `azp` must be present and be one of the authorized parties.
    Required,
}

// Clerk's token categories (header `cat`), as its SDK checks them.
const CAT_SESSION: &str = "cl_B7d4PD111AAA";
const CAT_TEMPLATE: &str = "cl_B7d4PD222AAA";
const CAT_IGNORE: &str = "cl_I7d4PD111III";
const CAT_M2M: &str = "cl_B7d4PD333AAA";

/// Settings of a [`Verifier`], filled in by [`crate::ClerkSyncBuilder`].
pub(crate) struct VerifierOptions {
    pub(crate) issuer: Option<String>,
    pub(crate) leeway_secs: u64,
    pub(crate) authorized_parties: Vec<String>,
    pub(crate) azp_policy: AuthorizedPartyPolicy,
    pub(crate) allow_pending_sessions: bool,
    pub(crate) accept_jwt_templates: bool,
    pub(crate) token_cache_capacity: u64,
}

/// Verifies Clerk session tokens; cheap to clone.
///
/// Only RS256 is accepted whatever the header says, and the header must carry a `kid`. Only
/// session tokens pass, as Clerk's own `authenticateRequest` decides: the header's `cat`
/// (token category) must be absent, the session category (`cl_B7d4PD111AAA`) or the ignore
/// category (`cl_I7d4PD111III`); anything else is 401 `invalid_token_category`, JWT templates
/// (`cl_B7d4PD222AAA`) included unless [`crate::ClerkSyncBuilder::accept_jwt_templates`] says
/// otherwise. A JWT whose `sub` starts with `mch_` (an M2M token) or whose `typ` is `at+jwt`
/// or `application/at+jwt` (an OAuth access token) is 401 `token_type_not_accepted` for
/// [`verify`](Self::verify), whatever its `cat`; [`verify_jwt`](Self::verify_jwt) takes them. `exp`, `nbf` and `iat` are checked with the
/// configured leeway (5 s by default), `iss` against the configured issuer, `azp` by the
/// [`AuthorizedPartyPolicy`], and `sts: pending` is refused unless allowed. A verified token is
/// cached until its `exp` (plus leeway), and a cache hit checks `exp` again.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: KeyStore,
    issuer: Option<String>,
    leeway: i64,
    authorized_parties: Vec<String>,
    azp_policy: AuthorizedPartyPolicy,
    allow_pending_sessions: bool,
    accept_jwt_templates: bool,
    // `None` when the capacity is 0: every request is verified.
    cache: Option<Cache<Box<str>, Arc<SessionClaims>>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.issuer)
            .field("leeway", &self.inner.leeway)
            .field("azp_policy", &self.inner.azp_policy)
            .field("cached_tokens", &self.cached_tokens())
            .finish_non_exhaustive()
    }
}

/// Cache entries live until the token expires (plus leeway), never longer.
struct UntilExpiry {
    leeway: i64,
}

impl Expiry<Box<str>, Arc<SessionClaims>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _token: &Box<str>,
        claims: &Arc<SessionClaims>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let left = claims.exp.saturating_add(self.leeway) - unix_now();
        Some(Duration::from_secs(left.max(0).unsigned_abs()))
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    cat: Option<String>,
    typ: Option<String>,
}

impl Verifier {
    pub(crate) fn new(keys: KeyStore, options: VerifierOptions, counters: Arc<Counters>) -> Self {
        let leeway = i64::try_from(options.leeway_secs).unwrap_or(i64::MAX);
        let cache = (options.token_cache_capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(options.token_cache_capacity)
                .expire_after(UntilExpiry { leeway })
                .build()
        });
        Self {
            inner: Arc::new(Inner {
                keys,
                issuer: options.issuer,
                leeway,
                authorized_parties: options.authorized_parties,
                azp_policy: options.azp_policy,
                allow_pending_sessions: options.allow_pending_sessions,
                accept_jwt_templates: options.accept_jwt_templates,
                cache,
                counters,
            }),
        }
    }

    /// A verifier on its own, for tools and code that verify tokens without syncing users
    /// (the `clerk-sync verify` command): the config's key source, issuer and authorized
    /// parties, with the defaults of [`crate::ClerkSyncBuilder`] (5 s leeway, `azp` checked
    /// when present, pending sessions refused, JWKS refetch at most every 10 s, 5 s HTTP
    /// timeout) and no token cache.
    pub fn from_config(config: &crate::ClerkConfig) -> Result<Self, crate::ConfigError> {
        let counters = Arc::new(Counters::default());
        let keys = KeyStore::new(
            &config.key_source,
            crate::token::keys::KeyOptions {
                min_refresh_interval: Duration::from_secs(10),
                max_age: Duration::from_secs(3600),
                http_timeout: Duration::from_secs(5),
            },
            counters.clone(),
        )?;
        Ok(Self::new(
            keys,
            VerifierOptions {
                issuer: config.issuer.clone(),
                leeway_secs: 5,
                authorized_parties: config.authorized_parties.clone(),
                azp_policy: AuthorizedPartyPolicy::default(),
                allow_pending_sessions: false,
                accept_jwt_templates: false,
                token_cache_capacity: 0,
            },
            counters,
        ))
    }

    /// Verifies a session token and returns its claims.
    ///
    /// A token verified before and not yet expired is answered from the cache without any
    /// signature work; concurrent first uses of one token share one verification.
    pub async fn verify(&self, token: &str) -> Result<Arc<SessionClaims>, AuthError> {
        let inner = &self.inner;
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::malformed("the token is longer than 16 KiB"));
        }
        let session = |token| async move {
            let (_, claims) = self.verify_uncached(token, Accepted::SESSIONS).await?;
            Ok(claims)
        };
        let Some(cache) = &inner.cache else {
            return session(token).await;
        };
        if let Some(claims) = cache.get(token).await {
            if claims.exp.saturating_add(inner.leeway) < unix_now() {
                return Err(AuthError::TokenExpired);
            }
            Counters::bump(&inner.counters.token_cache_hits);
            return Ok(claims);
        }
        cache
            .try_get_with(token.into(), session(token))
            .await
            .map_err(|error| (*error).clone())
    }

    /// Verifies a JWT of any type — a session token, or an M2M or OAuth access token in JWT
    /// form — and returns its type with its claims, without any cache. Sessions pass the
    /// session rules of [`verify`](Self::verify); an M2M JWT needs the category
    /// `cl_B7d4PD333AAA` or none; machine JWTs are checked for signature, `exp`, `nbf`, `iat`
    /// and `iss` like sessions, and not for `azp` or `sts`. Opaque machine tokens (`ak_…`,
    /// `mt_…`, `oat_…`) are not JWTs: the Backend API verifies them.
    pub async fn verify_jwt(
        &self,
        token: &str,
    ) -> Result<(TokenType, Arc<SessionClaims>), AuthError> {
        self.verify_fresh(token, Accepted::ANY).await
    }

    /// Verifies a JWT of a type in `accepted` without looking at or filling the token cache
    /// (the layer keeps its own). A type not accepted is refused before any key is fetched.
    pub(crate) async fn verify_fresh(
        &self,
        token: &str,
        accepted: Accepted,
    ) -> Result<(TokenType, Arc<SessionClaims>), AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::malformed("the token is longer than 16 KiB"));
        }
        self.verify_uncached(token, accepted).await
    }

    #[tracing::instrument(name = "clerk_sync.verify", skip_all, fields(user.id = tracing::field::Empty))]
    async fn verify_uncached(
        &self,
        token: &str,
        accepted: Accepted,
    ) -> Result<(TokenType, Arc<SessionClaims>), AuthError> {
        let inner = &self.inner;
        let header = parse_header(token)?;
        if header.alg != "RS256" {
            return Err(AuthError::bad_signature("only RS256 tokens are accepted"));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::malformed("the token header has no `kid`"))?;
        let (signing_input, signature) = token
            .rsplit_once('.')
            .ok_or_else(|| AuthError::malformed("a JWT has three dot-separated parts"))?;
        let payload = signing_input
            .split_once('.')
            .map(|(_, payload)| payload)
            .ok_or_else(|| AuthError::malformed("a JWT has three dot-separated parts"))?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| AuthError::malformed("the token payload is not base64url"))?;
        // Parsed once, into the claims the app gets (`exp`, `iat`, `sub` and `iss` required),
        // before the signature is checked: the token's type and category decide before any
        // key is fetched (Clerk's SDK decodes the token to detect its type too). Nothing in it
        // is trusted until the signature matches.
        let claims: SessionClaims = serde_json::from_slice(&payload).map_err(|_| {
            AuthError::malformed("the claims are not JSON, or a claim is missing or mistyped")
        })?;
        let token_type = kind::of_jwt(header.typ.as_deref(), &claims.sub);
        if !accepted.contains(token_type) {
            return Err(AuthError::TokenTypeNotAccepted(token_type));
        }
        match token_type {
            TokenType::SessionToken => {
                // Stricter than the detection: `typ` is a media type, compared
                // case-insensitively; an access token is never a session.
                if header.typ.as_deref().is_some_and(|typ| {
                    typ.eq_ignore_ascii_case("at+jwt")
                        || typ.eq_ignore_ascii_case("application/at+jwt")
                }) {
                    return Err(AuthError::TokenTypeNotAccepted(TokenType::OAuthToken));
                }
                match header.cat.as_deref() {
                    None | Some(CAT_SESSION | CAT_IGNORE) => {}
                    Some(CAT_TEMPLATE) if inner.accept_jwt_templates => {}
                    Some(_) => return Err(AuthError::InvalidTokenCategory),
                }
            }
            // As Clerk's SDK: an M2M JWT's category is absent or the M2M one.
            TokenType::M2mToken => {
                if header.cat.as_deref().is_some_and(|cat| cat != CAT_M2M) {
                    return Err(AuthError::InvalidTokenCategory);
                }
            }
            // Clerk's SDK does not look at an OAuth JWT's category; the template and M2M
            // categories, which name other kinds of token, are refused here.
            TokenType::OAuthToken | TokenType::ApiKey => {
                if matches!(header.cat.as_deref(), Some(CAT_TEMPLATE | CAT_M2M)) {
                    return Err(AuthError::InvalidTokenCategory);
                }
            }
        }
        let key = inner.keys.key_for(&kid).await?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::malformed("the token signature is not base64url"))?;
        key.verify_sig(signing_input.as_bytes(), &signature)
            .map_err(|_| AuthError::bad_signature("the signature does not match the key"))?;
        tracing::Span::current().record("user.id", claims.sub.as_str());
        let now = unix_now();
        if claims.exp.saturating_add(inner.leeway) < now {
            return Err(AuthError::TokenExpired);
        }
        // `nbf`, and `iat`: a token from the future is not valid yet.
        let latest = now.saturating_add(inner.leeway);
        if claims.nbf.is_some_and(|nbf| nbf > latest) || claims.iat > latest {
            return Err(AuthError::TokenNotYetValid);
        }
        if inner
            .issuer
            .as_deref()
            .is_some_and(|issuer| claims.iss != issuer)
        {
            return Err(AuthError::InvalidIssuer);
        }
        if claims.sub.trim().is_empty() {
            return Err(AuthError::malformed("the `sub` claim is empty"));
        }
        // `azp` and `sts` are session claims.
        if token_type == TokenType::SessionToken {
            self.check_authorized_party(claims.azp.as_deref())?;
            if claims.sts.as_deref() == Some("pending") && !inner.allow_pending_sessions {
                return Err(AuthError::SessionPending);
            }
        }
        Counters::bump(&inner.counters.tokens_verified);
        Ok((token_type, Arc::new(claims)))
    }

    fn check_authorized_party(&self, azp: Option<&str>) -> Result<(), AuthError> {
        let parties = &self.inner.authorized_parties;
        let allowed = |azp: &str| parties.iter().any(|party| party == azp);
        let ok = match (self.inner.azp_policy, azp) {
            (AuthorizedPartyPolicy::Ignore, _) => true,
            (AuthorizedPartyPolicy::CheckWhenPresent, None) => true,
            (AuthorizedPartyPolicy::CheckWhenPresent, Some(azp)) => {
                parties.is_empty() || allowed(azp)
            }
            (AuthorizedPartyPolicy::Required, Some(azp)) => allowed(azp),
            (AuthorizedPartyPolicy::Required, None) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(AuthError::InvalidAuthorizedParty)
        }
    }

    /// The key-removal epoch of this verifier's key set.
    pub(crate) fn key_health(&self) -> crate::health::KeyHealth {
        self.inner.keys.health()
    }

    pub(crate) fn key_epoch(&self) -> super::keys::KeyEpoch {
        self.inner.keys.epoch()
    }

    /// Number of tokens in the verified-token cache (approximate, as moka counts).
    pub fn cached_tokens(&self) -> u64 {
        self.inner.cache.as_ref().map_or(0, Cache::entry_count)
    }
}

/// The `kid` of a token's header (not verified: for tokens verified before).
pub(crate) fn header_kid(token: &str) -> Option<String> {
    parse_header(token).ok()?.kid
}

fn parse_header(token: &str) -> Result<RawHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::malformed("a JWT has three dot-separated parts"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::malformed("the token header is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::malformed("the token header is not a JWT header"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parsing_rejects_garbage() {
        for token in ["", "abc", "a.b", "a.b.c.d", "!!!.b.c", "e30.b.c"] {
            let error = parse_header(token).err().map(|e| e.code());
            assert_eq!(error, Some("malformed_token"), "{token:?}");
        }
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"ins_1","cat":"x"}"#);
        let parsed = parse_header(&format!("{header}.e30.sig")).unwrap();
        assert_eq!(
            (
                parsed.alg.as_str(),
                parsed.kid.as_deref(),
                parsed.cat.as_deref()
            ),
            ("RS256", Some("ins_1"), Some("x"))
        );
    }
}
