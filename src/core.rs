//! [`Core`]: the request pipeline in one place.
//!
//! ```text
//! headers ─ locate (Authorization, else the session cookie under Clerk's rules)
//!         ─ verified-token cache ─ hit, user current ─────────────────────▶ Hit
//!                                ─ expired ───────────────────────────────▶ Rejected
//!                                ─ its user no longer current ────────────▶ Pending
//!                                ─ absent: the token's type ─ not taken ──▶ Rejected
//!                                                           ─ session ────▶ Pending
//! Pending ─ verify (RS256, claims; skipped when the cache had the claims)
//!         ─ cookie rule on the verified `iat`
//!         ─ synced-user cache, else one upsert per user (Syncer)
//!         ─ cache the session ───────────────────────────────────────────▶ ClerkUser
//! ```
//!
//! [`Core::decide`] runs inside `Service::call` without I/O and answers most requests;
//! [`Core::finish`] continues a [`Decision::Pending`] from what the quick look found, so the
//! slow path never parses the headers or looks the token up a second time. The layer and the
//! webhook router hold the core; [`crate::ClerkSync`] only wires it together.

use std::fmt;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use tokio::sync::watch;

use crate::client_addr::ClientAddress;
use crate::error::{AuthError, complete_headers};
use crate::extract::{AnonymousRequest, ClerkUser};
use crate::stats::{Counters, Stats};
use crate::sync::Syncer;
use crate::time::unix_now;
use crate::token::Verifier;
use crate::token::locate::{Located, Source, locate};
use crate::token_cache::{Lookup, TokenCache};
use crate::token_type::TokenType;

/// Whether requests without a token pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Required,
    Optional,
}

/// Shapes the response of a rejection; see [`crate::ClerkSyncBuilder::on_rejection`].
pub(crate) type RejectionHook = Arc<dyn Fn(&AuthError) -> Response + Send + Sync>;

/// What [`Core::decide`] found.
pub(crate) enum Decision {
    /// A cached session whose user is current.
    Hit(ClerkUser),
    /// No token (or a signed-out browser's cookie), and the layer is optional.
    Anonymous,
    /// Rejected without I/O (already counted and logged).
    Rejected(AuthError),
    /// Needs verification or a sync: [`Core::finish`] continues from here.
    Pending(Pending),
}

/// What the quick look found, kept for the slow path: the token (copied, since the slow path
/// outlives the borrowed headers), where it came from, and the verified claims when the token
/// was cached but its user is no longer current.
pub(crate) struct Pending {
    token: Box<str>,
    source: Source,
    stale: Option<Arc<crate::token::SessionClaims>>,
    /// The key-removal epoch before verification; a session verified under an older one is
    /// not cached.
    key_epoch: u64,
}

/// The verifier, the verified-token cache and the syncer, deciding one request at a time.
pub(crate) struct Core {
    pub(crate) verifier: Verifier,
    pub(crate) syncer: Syncer,
    /// `None` when the token cache is off (`token_cache_capacity(0)`).
    pub(crate) tokens: Option<TokenCache>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) cookie_suffix: Option<String>,
    pub(crate) client_address: ClientAddress,
    pub(crate) on_rejection: Option<RejectionHook>,
    /// Dropped with the core (the last layer, router or handle): ends the background task.
    pub(crate) alive: watch::Sender<()>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("verifier", &self.verifier)
            .field("cached_users", &self.syncer.cached_users())
            .field(
                "cached_sessions",
                &self.tokens.as_ref().map_or(0, TokenCache::len),
            )
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The synchronous first look at a request: a rejection that needs no I/O, an anonymous
    /// request, a cached session whose user is current, or what the slow path needs.
    pub(crate) fn decide(&self, headers: &HeaderMap, mode: Mode) -> Decision {
        let located = match self.locate(headers, mode) {
            Ok(Some(located)) => located,
            Ok(None) => return Decision::Anonymous,
            Err(error) => return self.rejected(error),
        };
        let Some(tokens) = &self.tokens else {
            return self.new_token(located, 0);
        };
        match tokens.get(located.token(), unix_now(), |user| {
            self.syncer.is_current(user)
        }) {
            // The cookie rule holds for cached sessions too: a browser that signed out since is
            // signed out here.
            Lookup::Hit(user) => match signed_in(mode, located.check_client_uat(user.claims().iat))
            {
                Ok(true) => Decision::Hit(user),
                Ok(false) => Decision::Anonymous,
                Err(error) => self.rejected(error),
            },
            Lookup::Expired => self.rejected(AuthError::TokenExpired),
            // Claims verified under `epoch` are cached again under it.
            Lookup::Stale(claims, epoch) => {
                Decision::Pending(pending(located, Some(claims), epoch))
            }
            // The epoch is read before verification (in `finish`): a key removed from now on
            // keeps this session out of the cache. Not read on the hit path.
            Lookup::Absent => self.new_token(located, tokens.key_epoch()),
        }
    }

    /// A token not cached: an opaque machine token's prefix decides here, before any I/O,
    /// whether this route takes it; a JWT's type (`sub`, `typ`) is decided by verification,
    /// on the claims it parses anyway, before any key is fetched. Only session tokens are
    /// cached, so a hit needs neither.
    fn new_token(&self, located: Located<'_>, key_epoch: u64) -> Decision {
        match TokenType::from_prefix(located.token()) {
            None => Decision::Pending(pending(located, None, key_epoch)),
            Some(other) => self.rejected(AuthError::TokenTypeNotAccepted(other)),
        }
    }

    /// Continues a [`Decision::Pending`]: verifies the token unless the cache had its claims,
    /// applies the cookie rule, makes sure the user is synced and caches the session.
    /// `Ok(None)` is an anonymous request of the optional layer. Rejections are counted and
    /// logged.
    pub(crate) async fn finish(
        &self,
        pending: Pending,
        mode: Mode,
    ) -> Result<Option<ClerkUser>, AuthError> {
        let result = self.finish_inner(pending, mode).await;
        if let Err(error) = &result {
            self.record_rejection(error);
        }
        result
    }

    async fn finish_inner(
        &self,
        pending: Pending,
        mode: Mode,
    ) -> Result<Option<ClerkUser>, AuthError> {
        let token = &*pending.token;
        let claims = match (pending.stale, &self.tokens) {
            // A known token whose user was invalidated keeps its verified claims.
            (Some(claims), _) => {
                Counters::bump(&self.counters.token_cache_hits);
                claims
            }
            // The layer's token cache is the one that counts: the verifier's is bypassed.
            (None, Some(_)) => self.verifier.verify_fresh(token).await?,
            (None, None) => self.verifier.verify(token).await?,
        };
        // A cookie token minted before the browser's last session change is outdated; under
        // the optional layer the request is anonymous. Checked before anything is written.
        if !signed_in(mode, pending.source.check_client_uat(claims.iat))? {
            return Ok(None);
        }
        let (user, synced) = self.syncer.ensure(&claims, token).await?;
        let answer = ClerkUser::new(claims, user.tier.clone(), synced);
        if synced && let Some(tokens) = &self.tokens {
            tokens.insert(token, answer.clone(), user, unix_now(), pending.key_epoch);
        }
        Ok(Some(answer))
    }

    /// The request's token, `Ok(None)` for an anonymous request of the optional layer: no
    /// token, or a session cookie of a signed-out browser (Clerk treats that browser as signed
    /// out, not as an error). Decided without I/O.
    fn locate<'h>(
        &self,
        headers: &'h HeaderMap,
        mode: Mode,
    ) -> Result<Option<Located<'h>>, AuthError> {
        let located = match locate(headers, self.cookie_suffix.as_deref())? {
            Some(located) => located,
            None if mode == Mode::Optional => return Ok(None),
            None => return Err(AuthError::MissingToken),
        };
        Ok(signed_in(mode, located.check_signed_in())?.then_some(located))
    }

    fn rejected(&self, error: AuthError) -> Decision {
        self.record_rejection(&error);
        Decision::Rejected(error)
    }

    fn record_rejection(&self, error: &AuthError) {
        self.counters.reject(error);
        if error.is_server_fault() {
            tracing::warn!(code = error.code(), %error, "request rejected");
        } else {
            tracing::debug!(code = error.code(), %error, "request rejected");
        }
    }

    /// The response to a rejection: the app's [`RejectionHook`] or the JSON default, with
    /// `WWW-Authenticate` and `Retry-After` added where they apply and are missing.
    pub(crate) fn rejection(&self, error: AuthError) -> Response {
        let Some(hook) = &self.on_rejection else {
            return error.into_response();
        };
        let mut response = hook(&error);
        complete_headers(&mut response, error.challenge(), error.retry_after());
        response
    }

    /// The marker of an anonymous request, with the client's network when the server provides
    /// `ConnectInfo<SocketAddr>`.
    pub(crate) fn anonymous<B>(&self, request: &http::Request<B>) -> AnonymousRequest {
        let network = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| {
                let client = &self.client_address;
                client.network(client.client_ip(info.0.ip(), request.headers()))
            });
        AnonymousRequest { network }
    }

    /// Counters since the core was built.
    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.counters.snapshot();
        // A session hit is a token-cache hit and a user-cache hit at once.
        let session_hits = self.tokens.as_ref().map_or(0, TokenCache::hits);
        stats.token_cache_hits += session_hits;
        stats.user_cache_hits += session_hits;
        stats
    }
}

fn pending(
    located: Located<'_>,
    stale: Option<Arc<crate::token::SessionClaims>>,
    key_epoch: u64,
) -> Pending {
    Pending {
        token: located.token().into(),
        source: located.source(),
        stale,
        key_epoch,
    }
}

/// Applies the outcome of a cookie check (Clerk's `__client_uat` rule): `Ok(true)` signed in;
/// an outdated cookie is `Ok(false)` (anonymous) under the optional layer, as Clerk treats a
/// signed-out browser, and the rejection under the required one.
fn signed_in(mode: Mode, check: Result<(), AuthError>) -> Result<bool, AuthError> {
    match check {
        Ok(()) => Ok(true),
        Err(_) if mode == Mode::Optional => Ok(false),
        Err(error) => Err(error),
    }
}
