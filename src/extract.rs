//! [`ClerkUser`], [`ClerkMachine`] and [`ClerkPrincipal`]: who called, and their Axum
//! extractors.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::authz::{ActiveOrganization, Authorization, Check, Entitlements, FactorAges};
use crate::machine::MachineToken;
use crate::sync::{OrgStanding, SyncedUser};
use crate::token::SessionClaims;
use crate::token_type::TokenType;

/// The signed-in user of a request, put in the request extensions by [`crate::ClerkSyncLayer`].
///
/// A session token's user, or the user an API key or OAuth access token acts for (subject
/// `user_…`) on a layer that [`accepts`](crate::ClerkSyncLayer::accepts) those: the user row
/// is synced either way, and [`token_type`](Self::token_type) tells them apart. Extract it in
/// a handler as `ClerkUser` (the route must be behind the layer) or `Option<ClerkUser>`
/// (behind [`crate::ClerkSync::optional_layer`]); routes that machines may call too extract
/// [`ClerkPrincipal`]. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct ClerkUser {
    // One shared allocation, so that handing a cached user to a request is one reference
    // count increment.
    inner: Arc<Principal>,
}

#[derive(Debug)]
struct Principal {
    /// First: read by every hit of the verified-token cache (is the organization current?),
    /// beside the reference counts that the hit touches anyway.
    organization: OrgStanding,
    claims: Arc<SessionClaims>,
    /// Read from the claims on the first `has()` or guard (empty for machine tokens): hits that
    /// no guard looks at never pay for it (allocated up front, it slowed every hit by ~5%,
    /// spreading the cached users over more memory).
    authorization: OnceLock<Authorization>,
    /// The machine token behind the request; `None` for a session.
    machine: Option<Arc<MachineToken>>,
    tier: Arc<str>,
    synced: bool,
}

/// What a verified token says, before its user is synced: kept by the token cache so that a
/// session whose user was evicted is synced again without verifying again.
#[derive(Debug, Clone)]
pub(crate) struct Credential {
    pub(crate) claims: Arc<SessionClaims>,
    pub(crate) machine: Option<Arc<MachineToken>>,
}

impl ClerkUser {
    pub(crate) fn new(
        credential: Credential,
        tier: Arc<str>,
        synced: bool,
        organization: OrgStanding,
    ) -> Self {
        Self {
            inner: Arc::new(Principal {
                organization,
                authorization: OnceLock::new(),
                claims: credential.claims,
                machine: credential.machine,
                tier,
                synced,
            }),
        }
    }

    /// What the token said, shared.
    pub(crate) fn credential(&self) -> Credential {
        Credential {
            claims: self.inner.claims.clone(),
            machine: self.inner.machine.clone(),
        }
    }

    /// The Clerk user id (`sub`, or the machine token's subject), also the `users.id` of the
    /// row.
    pub fn user_id(&self) -> &str {
        &self.inner.claims.sub
    }

    /// The Clerk session id (`sid`); `None` for machine tokens.
    pub fn session_id(&self) -> Option<&str> {
        self.inner.claims.sid.as_deref()
    }

    /// All claims of the verified token.
    ///
    /// For a session token, its claims. For an OAuth access token in JWT form, the JWT's
    /// claims. For an opaque API key or OAuth token (verified by the Backend API, no JWT):
    /// `sub` is the subject, [`custom`](SessionClaims::custom) the key's custom claims, `exp`
    /// its expiration in seconds (`i64::MAX` when it has none), `iat` when this process
    /// verified it, `iss` empty and the session claims (`sid`, `azp`, `sts`, `v`) absent.
    /// Machine tokens never contribute profile fields to the row, whatever their claims.
    pub fn claims(&self) -> &SessionClaims {
        &self.inner.claims
    }

    /// The type of the token the request came with.
    pub fn token_type(&self) -> TokenType {
        self.inner
            .machine
            .as_ref()
            .map_or(TokenType::SessionToken, |machine| machine.token_type)
    }

    /// The machine token's scopes; empty for sessions.
    pub fn scopes(&self) -> &[String] {
        self.inner
            .machine
            .as_ref()
            .map_or(&[], |machine| &machine.scopes)
    }

    /// The API key or OAuth token the request came with; `None` for sessions.
    pub fn machine_token(&self) -> Option<&MachineToken> {
        self.inner.machine.as_deref()
    }

    /// Whether the user has everything `check` asks, with the semantics of Clerk's `has()`:
    /// a role or permission needs an active organization (and gets the `org:` prefix when
    /// it lacks one); every dimension asked must pass; an empty check never passes. Machine
    /// tokens carry no organization, feature, plan or factor claims: every check fails.
    ///
    /// ```
    /// use clerk_sync::ClerkUser;
    /// use clerk_sync::authz::Check;
    ///
    /// fn may_bill(user: &ClerkUser) -> bool {
    ///     user.has(Check::permission("org:invoices:read").and(Check::plan("o:pro")))
    /// }
    /// ```
    pub fn has(&self, check: impl std::borrow::Borrow<Check>) -> bool {
        check.borrow().decide(self.authorization()).is_ok()
    }

    /// The session's active organization (v2 `o`, or v1 `org_*` claims): id, slug, role,
    /// permissions. `None` too when the organization is deleted here, or the membership was
    /// deleted (by a webhook) after the token was issued: then every organization check
    /// fails.
    pub fn organization(&self) -> Option<&ActiveOrganization> {
        self.authorization().details.organization.as_ref()
    }

    /// The features of the session (`fea`), by scope.
    pub fn features(&self) -> &Entitlements {
        &self.authorization().details.features
    }

    /// The plans of the session (`pla`), by scope.
    pub fn plans(&self) -> &Entitlements {
        &self.authorization().details.plans
    }

    /// Minutes since the session's factors were verified (`fva`), when the token says.
    pub fn factor_ages(&self) -> Option<FactorAges> {
        self.authorization().details.factor_ages
    }

    pub(crate) fn authorization(&self) -> &Authorization {
        let inner = &*self.inner;
        inner
            .authorization
            .get_or_init(|| match (&inner.machine, &inner.organization) {
                (None, OrgStanding::Refused) => {
                    Authorization::read(&inner.claims).without_organization()
                }
                (None, _) => Authorization::read(&inner.claims),
                (Some(_), _) => Authorization::default(),
            })
    }

    /// The synced entry of the active organization, when it is synced.
    pub(crate) fn synced_organization(&self) -> Option<&SyncedUser> {
        match &self.inner.organization {
            OrgStanding::Synced(organization) => Some(organization),
            OrgStanding::Claims | OrgStanding::Refused => None,
        }
    }

    /// The active organization's tier as stored in `organizations.tier`, when the session has
    /// an active organization whose row is synced (`None` without one, or when the store
    /// keeps no organizations). The rate limiter's organization keying reads it.
    pub fn organization_tier(&self) -> Option<&str> {
        self.synced_organization()
            .map(|organization| &*organization.tier)
    }

    /// The user's tier as stored in the database (or the default tier when not synced).
    pub fn tier(&self) -> &str {
        &self.inner.tier
    }

    /// `true` when the user row is known to exist. Only `false` under
    /// [`crate::FailurePolicy::Open`] while the store is failing.
    pub fn synced(&self) -> bool {
        self.inner.synced
    }
}

/// A caller that is not a user: a machine (an M2M token, or an API key whose subject is
/// `mch_…`) or an organization (an API key whose subject is `org_…`). Put in the request
/// extensions by a layer that [`accepts`](crate::ClerkSyncLayer::accepts) machine tokens;
/// nothing is written to `users` for it. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct ClerkMachine {
    token: Arc<MachineToken>,
}

impl ClerkMachine {
    pub(crate) fn new(token: Arc<MachineToken>) -> Self {
        Self { token }
    }

    /// The type of the token the request came with.
    pub fn token_type(&self) -> TokenType {
        self.token.token_type
    }

    /// Who the token acts for: `mch_…`, `org_…` (or another id Clerk may add).
    pub fn subject(&self) -> &str {
        &self.token.subject
    }

    /// The machine id, when the subject is a machine (`mch_…`).
    pub fn machine_id(&self) -> Option<&str> {
        Some(self.subject()).filter(|subject| subject.starts_with("mch_"))
    }

    /// The organization id, when the subject is an organization (`org_…`).
    pub fn org_id(&self) -> Option<&str> {
        Some(self.subject()).filter(|subject| subject.starts_with("org_"))
    }

    /// The token's scopes (for M2M tokens, the machines it may call).
    pub fn scopes(&self) -> &[String] {
        &self.token.scopes
    }

    /// The token's custom claims: an API key's or M2M token's `claims`, or a JWT's claims
    /// other than `iss`, `sub`, `exp`, `nbf`, `iat` and `jti`.
    pub fn claims(&self) -> Option<&serde_json::Value> {
        self.token.claims.as_ref()
    }

    /// Everything known of the token.
    pub fn token(&self) -> &MachineToken {
        &self.token
    }
}

/// Whoever called: a user ([`ClerkUser`]: sessions and user-backed API keys and OAuth tokens)
/// or a machine ([`ClerkMachine`]). The extractor for routes behind a layer that accepts
/// machine tokens.
///
/// ```
/// use clerk_sync::ClerkPrincipal;
///
/// async fn who(caller: ClerkPrincipal) -> String {
///     format!("{} via {}", caller.subject(), caller.token_type())
/// }
/// ```
#[derive(Debug, Clone)]
pub enum ClerkPrincipal {
    /// A user, synced.
    User(ClerkUser),
    /// A machine or an organization.
    Machine(ClerkMachine),
}

impl ClerkPrincipal {
    /// The type of the token the request came with.
    pub fn token_type(&self) -> TokenType {
        match self {
            Self::User(user) => user.token_type(),
            Self::Machine(machine) => machine.token_type(),
        }
    }

    /// The user id, or the machine's or organization's.
    pub fn subject(&self) -> &str {
        match self {
            Self::User(user) => user.user_id(),
            Self::Machine(machine) => machine.subject(),
        }
    }

    /// The token's scopes (empty for sessions).
    pub fn scopes(&self) -> &[String] {
        match self {
            Self::User(user) => user.scopes(),
            Self::Machine(machine) => machine.scopes(),
        }
    }

    /// The user, when a user called.
    pub fn user(&self) -> Option<&ClerkUser> {
        match self {
            Self::User(user) => Some(user),
            Self::Machine(_) => None,
        }
    }

    /// The machine, when a machine or an organization called.
    pub fn machine(&self) -> Option<&ClerkMachine> {
        match self {
            Self::User(_) => None,
            Self::Machine(machine) => Some(machine),
        }
    }

    fn from_extensions(extensions: &http::Extensions) -> Option<Self> {
        if let Some(user) = extensions.get::<ClerkUser>() {
            return Some(Self::User(user.clone()));
        }
        extensions
            .get::<ClerkMachine>()
            .map(|machine| Self::Machine(machine.clone()))
    }
}

/// Rejection of the `ClerkUser` extractor: the route is not behind the layer. A server bug,
/// so a 500 that says how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "no ClerkUser in the request extensions: is `ClerkSyncLayer` (clerk.layer()) applied to this route? \
     For routes that allow anonymous requests, use clerk.optional_layer() and extract Option<ClerkUser>"
)]
pub struct MissingClerkLayer;

impl IntoResponse for MissingClerkLayer {
    fn into_response(self) -> Response {
        tracing::error!(code = "clerk_layer_missing", error = %self, "ClerkUser extracted without the layer");
        crate::error::error_response("clerk_layer_missing", &self.to_string())
    }
}

/// Rejection of the [`ClerkUser`] and [`ClerkMachine`] extractors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrincipalRejection {
    /// No principal at all: the route is not behind the layer (500).
    #[error(transparent)]
    MissingLayer(#[from] MissingClerkLayer),
    /// A machine called a route whose handler needs a user (403 `forbidden`).
    #[error("this route needs a user; the caller is a machine or an organization")]
    NotAUser,
    /// A user called a route whose handler needs a machine (403 `forbidden`).
    #[error("this route is for machine tokens; the caller is a user")]
    NotAMachine,
}

impl IntoResponse for PrincipalRejection {
    fn into_response(self) -> Response {
        match self {
            Self::MissingLayer(missing) => missing.into_response(),
            Self::NotAUser | Self::NotAMachine => {
                tracing::debug!(code = "forbidden", error = %self, "caller of the other kind");
                crate::error::error_response("forbidden", &self.to_string())
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClerkUser {
    type Rejection = PrincipalRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match ClerkPrincipal::from_extensions(&parts.extensions) {
            Some(ClerkPrincipal::User(user)) => Ok(user),
            Some(ClerkPrincipal::Machine(_)) => Err(PrincipalRejection::NotAUser),
            None => Err(MissingClerkLayer.into()),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for ClerkUser {
    type Rejection = PrincipalRejection;

    /// `None` for an anonymous request; a machine caller is refused (403), not `None`.
    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match ClerkPrincipal::from_extensions(&parts.extensions) {
            Some(ClerkPrincipal::User(user)) => Ok(Some(user)),
            Some(ClerkPrincipal::Machine(_)) => Err(PrincipalRejection::NotAUser),
            None => Ok(None),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClerkMachine {
    type Rejection = PrincipalRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match ClerkPrincipal::from_extensions(&parts.extensions) {
            Some(ClerkPrincipal::Machine(machine)) => Ok(machine),
            Some(ClerkPrincipal::User(_)) => Err(PrincipalRejection::NotAMachine),
            None => Err(MissingClerkLayer.into()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClerkPrincipal {
    type Rejection = MissingClerkLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_extensions(&parts.extensions).ok_or(MissingClerkLayer)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for ClerkPrincipal {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(Self::from_extensions(&parts.extensions))
    }
}

/// Put in the extensions of requests that passed the optional layer without a token, so the
/// rate limiter can tell "anonymous" from "the sync layer did not run". `network` is the
/// client's network by [`crate::ClientAddress`], when the server provides `ConnectInfo`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnonymousRequest {
    pub(crate) network: Option<std::net::IpAddr>,
}
