//! [`Core`]: the request pipeline in one place.
//!
//! ```text
//! headers ─ locate (Authorization, else the session cookie under Clerk's rules)
//!         ─ opaque prefix (ak_, mt_, oat_) of a type not taken ───────────▶ Rejected
//!         ─ verified-token cache ─ hit, caller current, type taken ───────▶ Hit
//!                                ─ expired ───────────────────────────────▶ Rejected
//!                                ─ its user no longer current ────────────▶ Pending
//!                                ─ absent ────────────────────────────────▶ Pending
//! Pending ─ opaque: Backend API verify (MachineVerifier: cached, budgeted, single flight)
//!         ─ JWT: verify (type taken?, RS256, claims; skipped when the cache had the claims)
//!         ─ cookie rule on the verified `iat` (sessions)
//!         ─ subject `user_…`: synced-user cache, else one upsert per user (Syncer)
//!         ─ cache the caller ────────────────────────────────▶ ClerkUser | ClerkMachine
//! ```
//!
//! [`Core::decide`] runs inside `Service::call` without I/O and answers most requests;
//! [`Core::finish`] continues a [`Decision::Pending`] from what the quick look found, so the
//! slow path never parses the headers or looks the token up a second time. The layer and the
//! webhook router hold the core; [`crate::ClerkSync`] only wires it together.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use tokio::sync::watch;

use crate::client_addr::ClientAddress;
use crate::error::{AuthError, complete_headers};
use crate::extract::{AnonymousRequest, ClerkMachine, ClerkUser, Credential};
use crate::log_throttle::Throttle;
use crate::machine::MachineToken;
use crate::machine::verifier::MachineVerifier;
use crate::stats::{Counters, Stats};
use crate::sync::{Evidence, OrgSync, Syncer};
use crate::time::unix_now;
use crate::token::Verifier;
use crate::token::locate::{Located, Source, locate};
use crate::token_cache::{Cached, Caller, Digest, Lookup, TokenCache};
use crate::token_type::{Accepted, TokenType};

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
    /// A cached token whose caller is current.
    Hit(Caller),
    /// No token (or a signed-out browser's cookie), and the layer is optional.
    Anonymous,
    /// Rejected without I/O (already counted and logged).
    Rejected(AuthError),
    /// Needs verification or a sync: [`Core::finish`] continues from here.
    Pending(Pending),
}

/// What the quick look found, kept for the slow path: the token (copied, since the slow path
/// outlives the borrowed headers), where it came from, the types it may be, and the verified
/// claims when the token was cached but its user is no longer current.
pub(crate) struct Pending {
    token: Box<str>,
    source: Source,
    /// The types taken for a token from this source.
    accepted: Accepted,
    /// An opaque machine token's type (by its prefix): the Backend API verifies it.
    opaque: Option<TokenType>,
    stale: Option<Credential>,
    /// Where the token goes in the verified-token cache (none without one): its digest,
    /// computed for the lookup and used again for the insert, and the key-removal epoch
    /// before verification (a session verified under an older one is not cached).
    slot: Option<(Digest, u64)>,
}

impl Pending {
    /// Whether verifying costs the client's budget (and so needs its address).
    pub(crate) fn needs_client(&self) -> bool {
        self.opaque.is_some()
    }
}

/// The verifiers, the verified-token cache and the syncer, deciding one request at a time.
pub(crate) struct Core {
    pub(crate) verifier: Verifier,
    /// Opaque machine tokens; `None` without a secret key.
    pub(crate) machine: Option<MachineVerifier>,
    pub(crate) syncer: Syncer,
    /// `None` when the token cache is off (`token_cache_capacity(0)`).
    pub(crate) tokens: Option<TokenCache>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) cookie_suffix: Option<String>,
    pub(crate) client_address: ClientAddress,
    pub(crate) on_rejection: Option<RejectionHook>,
    /// A layer taking opaque machine tokens without a secret key is logged once per interval.
    pub(crate) no_secret_key: Throttle,
    /// Dropped with the core (the last layer, router or handle): ends the background task.
    pub(crate) alive: watch::Sender<()>,
    /// What was handed to the metrics recorder so far.
    pub(crate) exported: crate::metrics::Exported,
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
    /// request, a cached token whose caller is current, or what the slow path needs.
    pub(crate) fn decide(&self, headers: &HeaderMap, mode: Mode, accepted: Accepted) -> Decision {
        let located = match self.locate(headers, mode) {
            Ok(Some(located)) => located,
            Ok(None) => return Decision::Anonymous,
            Err(error) => return self.rejected(error),
        };
        // Machine tokens come from `Authorization` only, never from cookies.
        let accepted = match located.source() {
            Source::Header => accepted,
            Source::Cookie { .. } => accepted.sessions_only(),
        };
        // An opaque token's type is its prefix: refused here, before any lookup or I/O.
        let opaque = TokenType::from_prefix_bytes(located.bytes());
        if let Some(token_type) = opaque.filter(|t| !accepted.contains(*t)) {
            return self.rejected(AuthError::TokenTypeNotAccepted(token_type));
        }
        let Some(tokens) = &self.tokens else {
            return self.pending(located, accepted, opaque, None, None);
        };
        let digest = tokens.digest(located.bytes());
        match tokens.get(digest, unix_now(), |user, answer| {
            self.syncer.is_current(user)
                && answer
                    .synced_organization()
                    .is_none_or(|org| self.syncer.organization_is_current(org))
        }) {
            // A cached machine JWT is of a type this layer may not take (the cache is shared
            // by every layer of one `ClerkSync`).
            Lookup::Hit(caller) if !accepted.contains(caller.token_type()) => {
                Counters::bump(&self.counters.hits_not_admitted);
                self.rejected(AuthError::TokenTypeNotAccepted(caller.token_type()))
            }
            // The cookie rule holds for cached sessions too: a browser that signed out since is
            // signed out here.
            Lookup::Hit(Caller::User(user)) => {
                // Header tokens need no claims here: the claims are not read on their hit.
                let cookie_rule = match located.source() {
                    Source::Header => Ok(()),
                    cookie => cookie.check_client_uat(user.claims().iat),
                };
                match signed_in(mode, cookie_rule) {
                    Ok(true) => Decision::Hit(Caller::User(user)),
                    Ok(false) => {
                        Counters::bump(&self.counters.hits_not_admitted);
                        Decision::Anonymous
                    }
                    Err(error) => {
                        Counters::bump(&self.counters.hits_not_admitted);
                        self.rejected(error)
                    }
                }
            }
            Lookup::Hit(machine) => Decision::Hit(machine),
            Lookup::Expired => self.rejected(AuthError::TokenExpired),
            // Claims verified under `epoch` are cached again under it.
            Lookup::Stale(credential, epoch) => self.pending(
                located,
                accepted,
                opaque,
                Some(credential),
                Some((digest, epoch)),
            ),
            // The epoch is read before verification (in `finish`): a key removed from now on
            // keeps this session out of the cache. Not read on the hit path.
            Lookup::Absent => {
                let slot = Some((digest, tokens.key_epoch()));
                self.pending(located, accepted, opaque, None, slot)
            }
        }
    }

    /// Continues a [`Decision::Pending`]: verifies the token (locally, or an opaque one with
    /// the Backend API) unless the cache had it, applies the cookie rule, makes sure a user
    /// is synced and caches the caller. `client` is the caller's network, whose budget pays
    /// for an opaque token not cached. `Ok(None)` is an anonymous request of the optional
    /// layer. Rejections are counted and logged.
    pub(crate) async fn finish(
        &self,
        pending: Pending,
        mode: Mode,
        client: Option<IpAddr>,
    ) -> Result<Option<Caller>, AuthError> {
        let started = std::time::Instant::now();
        let result = self.finish_inner(pending, mode, client).await;
        ::metrics::histogram!(crate::metrics::SYNC_DURATION).record(started.elapsed());
        if let Err(error) = &result {
            self.record_rejection(error);
        }
        result
    }

    async fn finish_inner(
        &self,
        pending: Pending,
        mode: Mode,
        client: Option<IpAddr>,
    ) -> Result<Option<Caller>, AuthError> {
        let token = &*pending.token;
        if let Some(token_type) = pending.opaque {
            return self
                .finish_opaque(
                    token_type,
                    token,
                    pending.slot.map(|(digest, _)| digest),
                    client,
                )
                .await
                .map(Some);
        }
        let credential = match pending.stale {
            // A known token whose user was invalidated keeps what it said.
            Some(credential) => {
                Counters::bump(&self.counters.token_cache_hits);
                credential
            }
            None => {
                let (token_type, claims) =
                    self.verifier.verify_fresh(token, pending.accepted).await?;
                let machine = (token_type != TokenType::SessionToken)
                    .then(|| Arc::new(MachineToken::from_jwt(token_type, &claims)));
                Credential { claims, machine }
            }
        };
        let exp = credential.claims.exp;
        let evidence = if credential.machine.is_none() {
            // A cookie token minted before the browser's last session change is outdated;
            // under the optional layer the request is anonymous. Checked before anything is
            // written.
            if !signed_in(mode, pending.source.check_client_uat(credential.claims.iat))? {
                return Ok(None);
            }
            Evidence::Session(token)
        } else {
            Evidence::MachineJwt(token)
        };
        let (caller, cached) = self.admit(credential, evidence).await?;
        if let (Some(tokens), Some((digest, epoch)), Some(cached)) =
            (&self.tokens, pending.slot, cached)
        {
            tokens.insert(digest, cached, exp, unix_now(), epoch);
        }
        Ok(Some(caller))
    }

    /// The caller a verified token stands for: its user, synced (and what to cache, `None`
    /// when the sync only passed under the fail-open policy), or a machine or organization,
    /// which is not written anywhere.
    async fn admit(
        &self,
        credential: Credential,
        evidence: Evidence<'_>,
    ) -> Result<(Caller, Option<Cached>), AuthError> {
        if let Some(machine) = credential.machine.as_ref().filter(|m| !is_user(&m.subject)) {
            Counters::bump(&self.counters.requests_synced);
            let machine = ClerkMachine::new(machine.clone());
            return Ok((
                Caller::Machine(machine.clone()),
                Some(Cached::Machine(machine)),
            ));
        }
        let (user, synced) = self.syncer.ensure(&credential.claims, evidence).await?;
        // Sessions only: machine tokens carry no organization claims.
        let organization = match evidence {
            Evidence::Session(_) if synced => {
                self.syncer
                    .ensure_organization(&credential.claims, &user)
                    .await?
            }
            _ => OrgSync::NONE,
        };
        Counters::bump(if synced {
            &self.counters.requests_synced
        } else {
            &self.counters.requests_unsynced
        });
        let cacheable = synced && organization.cacheable;
        let answer = ClerkUser::new(credential, user.tier.clone(), synced, organization.standing);
        let cached = cacheable.then(|| Cached::User(answer.clone(), user));
        Ok((Caller::User(answer), cached))
    }

    /// An opaque machine token: the Backend API's verdict (cached, budgeted), then its user
    /// synced when it acts for one.
    async fn finish_opaque(
        &self,
        token_type: TokenType,
        token: &str,
        digest: Option<Digest>,
        client: Option<IpAddr>,
    ) -> Result<Caller, AuthError> {
        let Some(verifier) = &self.machine else {
            if let Some(times) = self.no_secret_key.hit() {
                tracing::error!(
                    token.r#type = %token_type,
                    times,
                    "a layer accepts opaque machine tokens, but no CLERK_SECRET_KEY is \
                     configured to verify them with the Backend API"
                );
            }
            return Err(AuthError::VerificationUnavailable {
                retry_after_secs: 60,
            });
        };
        let trusted = verifier.verify(token_type, token, client).await?;
        let now = unix_now();
        let credential = Credential {
            claims: Arc::new(trusted.token.session_view(now)),
            machine: Some(trusted.token),
        };
        let (caller, cached) = self.admit(credential, Evidence::Opaque).await?;
        if let (Some(tokens), Some(digest), Some(cached)) = (&self.tokens, digest, cached) {
            tokens.insert_opaque(digest, cached, trusted.until_ms, now);
        }
        Ok(caller)
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

    /// What the slow path needs, once the token is known to be ASCII.
    fn pending(
        &self,
        located: Located<'_>,
        accepted: Accepted,
        opaque: Option<TokenType>,
        stale: Option<Credential>,
        slot: Option<(Digest, u64)>,
    ) -> Decision {
        match located.token() {
            Ok(token) => Decision::Pending(Pending {
                token: token.into(),
                source: located.source(),
                accepted,
                opaque,
                stale,
                slot,
            }),
            Err(error) => self.rejected(error),
        }
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

    /// The marker of an anonymous request, with the client's network.
    pub(crate) fn anonymous<B>(&self, request: &http::Request<B>) -> AnonymousRequest {
        Counters::bump(&self.counters.requests_anonymous);
        AnonymousRequest {
            network: self.client_network(request),
        }
    }

    /// The client's network by [`ClientAddress`], when the server provides
    /// `ConnectInfo<SocketAddr>`.
    pub(crate) fn client_network<B>(&self, request: &http::Request<B>) -> Option<IpAddr> {
        request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| {
                let client = &self.client_address;
                client.network(client.client_ip(info.0.ip(), request.headers()))
            })
    }

    /// Counters since the core was built.
    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.counters.snapshot();
        // A session hit is a token-cache hit and a user-cache hit at once.
        let session_hits = self.tokens.as_ref().map_or(0, TokenCache::hits);
        stats.token_cache_hits += session_hits;
        stats.user_cache_hits += session_hits;
        stats.requests_hit = session_hits.saturating_sub(
            self.counters
                .hits_not_admitted
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        stats
    }

    /// Hands the counters to the metrics recorder (see [`crate::metrics`]).
    pub(crate) fn record_metrics(&self) {
        crate::metrics::export_rate_limit_decisions();
        self.exported.export(
            self.stats(),
            self.syncer.cached_users(),
            self.tokens.as_ref().map_or(0, TokenCache::len) as u64,
        );
    }
}

/// Whether a machine token's subject is a user (synced like a session's) rather than a
/// machine or an organization.
fn is_user(subject: &str) -> bool {
    subject.starts_with("user_")
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
