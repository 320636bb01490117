//! [`FakeClerkApi`]: Clerk's Backend API, the routes this crate calls, on loopback.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::clerk_api::{ClerkApi, RetryPolicy};

mod machine;
mod orgs;
mod users;

/// `created_at` of user 0, Unix milliseconds (2023-11-14); user `i` was created `i` seconds
/// later.
const BASE_MS: i64 = 1_700_000_000_000;
const ID_PREFIX: &str = "user_2fake";

/// A failure [`FakeClerkApi`] answers instead of the real response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// `429 Too Many Requests` with `Retry-After: <seconds>`, as Clerk's rate limiter answers.
    TooManyRequests {
        /// The `Retry-After` value.
        retry_after_secs: u64,
    },
    /// This `5xx` status with a Clerk error body.
    ServerError(u16),
}

/// A local stand-in for Clerk's Backend API: `GET /v1/users`, `GET /v1/users/{id}`,
/// `GET /v1/jwks`, `GET /v1/organizations` and `GET /v1/organization_memberships` (over what
/// [`add_organization`](Self::add_organization) and [`add_membership`](Self::add_membership)
/// put there, `{"data", "total_count"}` pages by `limit`/`offset`/`order_by`),
/// `GET /v1/organizations/{id}` and `GET /v1/organizations/{id}/memberships` (`user_id`
/// filter), and the three machine-token verify endpoints (`POST /api_keys/verify`,
/// `/m2m_tokens/verify`, `/oauth_applications/access_tokens/verify`, with and without `/v1`)
/// on `127.0.0.1:<random port>`.
///
/// It serves `N` generated users whose JSON has the field names, types and nullability of
/// Clerk's `User` object (spec version 2026-05-12); user `i` has id [`user_id(i)`], email
/// [`email(i)`], `created_at` `i` seconds after 2023-11-14, every third user two email
/// addresses with the second one primary, and every tenth no username and no last name. The
/// list honours `limit` (1–500, default 10), `offset`, `starting_after` and `order_by`
/// (`created_at`/`updated_at` with `+`/`-`; default `-created_at`, newest first) with the
/// spec's rules: a cursor needs a `created_at` order and no offset, or the answer is 422.
/// Every request must carry `Authorization: Bearer <secret key>` (401 otherwise). Faults
/// (429 with `Retry-After`, 5xx) and latency can be injected, and requests are counted.
///
/// The server stops when the value is dropped.
///
/// [`user_id(i)`]: FakeClerkApi::user_id
/// [`email(i)`]: FakeClerkApi::email
pub struct FakeClerkApi {
    state: Arc<FakeState>,
    addr: SocketAddr,
    server: AbortHandle,
}

struct FakeState {
    users: u64,
    secret_key: String,
    updated_offset_ms: AtomicI64,
    jwks: RwLock<Value>,
    next_faults: Mutex<VecDeque<Fault>>,
    page_faults: Mutex<HashMap<u64, Fault>>,
    latency: Mutex<Duration>,
    list_requests: AtomicU64,
    user_requests: AtomicU64,
    jwks_requests: AtomicU64,
    faults_served: AtomicU64,
    /// Secret → its type and the verify endpoint's answer.
    machine_tokens: RwLock<HashMap<String, (crate::token_type::TokenType, Value)>>,
    /// Per verify endpoint (API keys, M2M, OAuth).
    verify_requests: [AtomicU64; 3],
    unversioned_verify_requests: AtomicU64,
    orgs: Mutex<orgs::Orgs>,
    org_list_requests: AtomicU64,
}

impl std::fmt::Debug for FakeClerkApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeClerkApi")
            .field("url", &self.url())
            .field("users", &self.state.users)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl FakeClerkApi {
    /// The secret key the fake expects as Bearer token.
    pub const SECRET_KEY: &'static str = "sk_test_fake_clerk_api";

    /// Starts serving `users` generated users.
    pub async fn start(users: u64) -> std::io::Result<Self> {
        let state = Arc::new(FakeState {
            users,
            secret_key: Self::SECRET_KEY.to_owned(),
            updated_offset_ms: AtomicI64::new(0),
            jwks: RwLock::new(json!({ "keys": [] })),
            next_faults: Mutex::new(VecDeque::new()),
            page_faults: Mutex::new(HashMap::new()),
            latency: Mutex::new(Duration::ZERO),
            list_requests: AtomicU64::new(0),
            user_requests: AtomicU64::new(0),
            jwks_requests: AtomicU64::new(0),
            faults_served: AtomicU64::new(0),
            machine_tokens: RwLock::new(HashMap::new()),
            verify_requests: Default::default(),
            unversioned_verify_requests: AtomicU64::new(0),
            orgs: Mutex::new(orgs::Orgs::default()),
            org_list_requests: AtomicU64::new(0),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/v1/users", get(users::list_users))
            .route("/v1/users/{id}", get(users::get_user))
            .route("/v1/jwks", get(jwks))
            .route("/v1/organizations", get(orgs::list_organizations))
            .route("/v1/organizations/{id}", get(orgs::get_organization))
            .route(
                "/v1/organizations/{id}/memberships",
                get(orgs::organization_memberships),
            )
            .route("/v1/organization_memberships", get(orgs::list_memberships));
        let app = machine::routes(app).with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
        .abort_handle();
        Ok(Self {
            state,
            addr,
            server,
        })
    }

    /// The base URL, for `CLERK_API_URL`: `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client for this fake with quick retries (10 ms backoff, 3 retries).
    pub fn client(&self) -> ClerkApi {
        // Both values are valid by construction: a known `sk_` key and an http URL.
        match ClerkApi::new(&self.url(), Self::SECRET_KEY) {
            Ok(api) => api.with_retry(RetryPolicy {
                max_retries: 3,
                initial_backoff: Duration::from_millis(10),
                max_wait: Duration::from_secs(2),
            }),
            Err(error) => unreachable!("fake API client: {error}"),
        }
    }

    /// The number of users served.
    pub fn user_count(&self) -> u64 {
        self.state.users
    }

    /// The id of user `index`.
    pub fn user_id(index: u64) -> String {
        format!("{ID_PREFIX}{index:022}")
    }

    /// The primary email of user `index`.
    pub fn email(index: u64) -> String {
        format!("user{index}@example.com")
    }

    /// The `updated_at` user `index` currently has, Unix milliseconds.
    pub fn updated_at_ms(&self, index: u64) -> i64 {
        created_at(index) + 500 + self.state.updated_offset_ms.load(Ordering::SeqCst)
    }

    /// Moves every user's `updated_at` forward, as if each had edited their profile.
    pub fn touch_all(&self, by_ms: i64) {
        self.state
            .updated_offset_ms
            .fetch_add(by_ms, Ordering::SeqCst);
    }

    /// Serves `document` as `GET /v1/jwks`, for example [`super::DevIssuer::jwks`].
    pub fn set_jwks(&self, document: Value) {
        match self.state.jwks.write() {
            Ok(mut jwks) => *jwks = document,
            Err(poisoned) => *poisoned.into_inner() = document,
        }
    }

    /// Answers the next `count` requests (any route) with `fault`.
    pub fn fail_next(&self, count: usize, fault: Fault) {
        lock(&self.state.next_faults).extend(std::iter::repeat_n(fault, count));
    }

    /// Answers every list request whose page would start at `position` (0-based, in the
    /// requested order; the `offset` of the organization lists) with `fault`, however often
    /// it is retried.
    pub fn fail_page_at(&self, position: u64, fault: Fault) {
        lock(&self.state.page_faults).insert(position, fault);
    }

    /// Delays every response by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.state.latency) = latency;
    }

    /// `GET /v1/users` requests received (faulted ones included).
    pub fn list_requests(&self) -> u64 {
        self.state.list_requests.load(Ordering::SeqCst)
    }

    /// `GET /v1/users/{id}` requests received (faulted ones included).
    pub fn user_requests(&self) -> u64 {
        self.state.user_requests.load(Ordering::SeqCst)
    }

    /// `GET /v1/jwks` requests received.
    pub fn jwks_requests(&self) -> u64 {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    /// Responses that were injected faults.
    pub fn faults_served(&self) -> u64 {
        self.state.faults_served.load(Ordering::SeqCst)
    }
}

impl Drop for FakeClerkApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn created_at(index: u64) -> i64 {
    BASE_MS + i64::try_from(index).unwrap_or(i64::MAX / 2_000) * 1000
}

fn clerk_errors(status: StatusCode, code: &str, message: &str, long_message: &str) -> Response {
    let body = json!({
        "errors": [{"message": message, "long_message": long_message, "code": code, "meta": {}}],
        "clerk_trace_id": "fake_trace",
    });
    (status, axum::Json(body)).into_response()
}

fn fault_response(state: &FakeState, fault: Fault) -> Response {
    state.faults_served.fetch_add(1, Ordering::SeqCst);
    match fault {
        Fault::TooManyRequests { retry_after_secs } => {
            let mut response = clerk_errors(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "Too Many Requests",
                "Too many requests, please retry later",
            );
            if let Ok(value) = retry_after_secs.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Fault::ServerError(code) => clerk_errors(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "internal_clerk_error",
            "Oops, an unexpected error occurred",
            "There was an internal error on our servers. We've been notified and are working on fixing it.",
        ),
    }
}

/// Latency, the Bearer check and queued faults, common to every route.
async fn gate(state: &FakeState, headers: &HeaderMap) -> Option<Response> {
    let latency = *lock(&state.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let expected = format!("Bearer {}", state.secret_key);
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorized {
        return Some(clerk_errors(
            StatusCode::UNAUTHORIZED,
            "authentication_invalid",
            "Invalid authentication",
            "The provided Clerk Secret Key is invalid. Make sure that your Clerk Secret Key is correct.",
        ));
    }
    let fault = lock(&state.next_faults).pop_front();
    fault.map(|fault| fault_response(state, fault))
}

async fn jwks(State(state): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    state.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(response) = gate(&state, &headers).await {
        return response;
    }
    let document = match state.jwks.read() {
        Ok(jwks) => jwks.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    axum::Json(document).into_response()
}
