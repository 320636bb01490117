//! [`FakeClerkApi`]: Clerk's Backend API, the three routes this crate calls, on loopback.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::clerk_api::{ClerkApi, MAX_PAGE_SIZE, RetryPolicy};

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

/// A local stand-in for Clerk's Backend API: `GET /v1/users`, `GET /v1/users/{id}` and
/// `GET /v1/jwks` on `127.0.0.1:<random port>`.
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
        });
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/v1/users", get(list_users))
            .route("/v1/users/{id}", get(get_user))
            .route("/v1/jwks", get(jwks))
            .with_state(state.clone());
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
    /// requested order) with `fault`, however often it is retried.
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

fn invalid_param(name: &str, long_message: &str) -> Response {
    let mut response = clerk_errors(
        StatusCode::UNPROCESSABLE_ENTITY,
        "form_param_value_invalid",
        "is invalid",
        long_message,
    );
    if let Ok(body) = serde_json::to_vec(&json!({
        "errors": [{"message": "is invalid", "long_message": long_message,
                    "code": "form_param_value_invalid", "meta": {"param_name": name}}],
        "clerk_trace_id": "fake_trace",
    })) {
        *response.body_mut() = axum::body::Body::from(body);
    }
    response
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of each query parameter (Clerk keeps the first `order_by` too).
fn query_params(uri: &Uri) -> HashMap<String, String> {
    let mut params = HashMap::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        params
            .entry(percent_decode(name))
            .or_insert_with(|| percent_decode(value));
    }
    params
}

fn parse_index(id: &str, users: u64) -> Option<u64> {
    let digits = id.strip_prefix(ID_PREFIX)?;
    if digits.len() != 22 {
        return None;
    }
    digits.parse::<u64>().ok().filter(|index| *index < users)
}

async fn list_users(State(state): State<Arc<FakeState>>, headers: HeaderMap, uri: Uri) -> Response {
    state.list_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(response) = gate(&state, &headers).await {
        return response;
    }
    let params = query_params(&uri);
    let limit = match params.get("limit").map(|v| v.parse::<u64>()) {
        None => 10,
        Some(Ok(limit)) if (1..=u64::from(MAX_PAGE_SIZE)).contains(&limit) => limit,
        Some(_) => return invalid_param("limit", "limit must be an integer between 1 and 500"),
    };
    let offset = match params.get("offset").map(|v| v.parse::<u64>()) {
        None => 0,
        Some(Ok(offset)) => offset,
        Some(Err(_)) => return invalid_param("offset", "offset must be an integer >= 0"),
    };
    let order = params.get("order_by").map_or("-created_at", String::as_str);
    let (field, descending) = match order.strip_prefix('-') {
        Some(field) => (field, true),
        None => (order.strip_prefix('+').unwrap_or(order), false),
    };
    // In this fake, `updated_at` orders users like `created_at` does.
    if !matches!(field, "created_at" | "updated_at") {
        return invalid_param(
            "order_by",
            "this fake orders by created_at or updated_at only",
        );
    }
    let start = match params.get("starting_after") {
        None => offset,
        Some(_) if field != "created_at" => {
            return invalid_param(
                "starting_after",
                "starting_after can only be used when ordering by created_at",
            );
        }
        Some(_) if offset != 0 => {
            return invalid_param(
                "starting_after",
                "starting_after cannot be combined with a non-zero offset",
            );
        }
        Some(cursor) => match parse_index(cursor, state.users) {
            Some(index) if descending => state.users - index,
            Some(index) => index + 1,
            None => return invalid_param("starting_after", "no user with this id"),
        },
    };
    let page_fault = lock(&state.page_faults).get(&start).copied();
    if let Some(fault) = page_fault {
        return fault_response(&state, fault);
    }
    let end = start.saturating_add(limit).min(state.users);
    let updated_offset = state.updated_offset_ms.load(Ordering::SeqCst);
    let mut body =
        String::with_capacity(usize::try_from((end.saturating_sub(start)) * 1600).unwrap_or(0) + 2);
    body.push('[');
    for position in start..end {
        let index = if descending {
            state.users - 1 - position
        } else {
            position
        };
        if position > start {
            body.push(',');
        }
        write_user(&mut body, index, updated_offset);
    }
    body.push(']');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn get_user(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    state.user_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(response) = gate(&state, &headers).await {
        return response;
    }
    match parse_index(&id, state.users) {
        Some(index) => {
            let mut body = String::with_capacity(1600);
            write_user(
                &mut body,
                index,
                state.updated_offset_ms.load(Ordering::SeqCst),
            );
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        None => clerk_errors(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "not found",
            "Resource not found",
        ),
    }
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

fn write_email(out: &mut String, id: &str, address: &str, at: i64) {
    let _ = write!(
        out,
        r#"{{"id":"{id}","object":"email_address","email_address":"{address}","reserved":false,"verification":{{"object":"verification_otp","status":"verified","strategy":"email_code","attempts":1,"expire_at":{expire}}},"linked_to":[],"matches_sso_connection":false,"created_at":{at},"updated_at":{at}}}"#,
        expire = at + 600_000,
    );
}

/// One user as Clerk's `GET /v1/users` serializes it (every required field of the spec's
/// `User`, nullable ones as `null` where this user has no value).
fn write_user(out: &mut String, index: u64, updated_offset_ms: i64) {
    let id = FakeClerkApi::user_id(index);
    let created = created_at(index);
    let updated = created + 500 + updated_offset_ms;
    let primary = format!("idn_2fake{index:022}");
    let secondary = format!("idn_3fake{index:022}");
    let sparse = index.is_multiple_of(10);
    let username = if sparse {
        "null".to_owned()
    } else {
        format!(r#""user{index}""#)
    };
    let last_name = if sparse { "null" } else { r#""Example""# };
    let _ = write!(
        out,
        r#"{{"id":"{id}","object":"user","external_id":null,"primary_email_address_id":"{primary}","primary_phone_number_id":null,"primary_web3_wallet_id":null,"username":{username},"first_name":"User{index}","last_name":{last_name},"locale":null,"profile_image_url":"https://www.gravatar.com/avatar?d=mp","image_url":"https://img.clerk.com/fake/{index}","has_image":false,"public_metadata":{{}},"private_metadata":{{}},"unsafe_metadata":{{}},"email_addresses":["#
    );
    if index.is_multiple_of(3) {
        write_email(out, &secondary, &format!("old{index}@example.com"), created);
        out.push(',');
    }
    write_email(out, &primary, &FakeClerkApi::email(index), created);
    let _ = write!(
        out,
        r#"],"phone_numbers":[],"web3_wallets":[],"passkeys":[],"password_enabled":true,"two_factor_enabled":false,"totp_enabled":false,"backup_code_enabled":false,"mfa_enabled_at":null,"mfa_disabled_at":null,"password_last_updated_at":null,"external_accounts":[],"saml_accounts":[],"enterprise_accounts":[],"organization_memberships":[],"last_sign_in_at":{created},"banned":false,"locked":false,"deprovisioned":false,"lockout_expires_in_seconds":null,"verification_attempts_remaining":100,"updated_at":{updated},"created_at":{created},"delete_self_enabled":true,"create_organization_enabled":true,"create_organizations_limit":null,"last_active_at":{created},"legal_accepted_at":null,"bypass_client_trust":false}}"#
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_users_are_valid_json_with_the_spec_fields() {
        let mut body = String::new();
        write_user(&mut body, 3, 0);
        let user: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(user["object"], "user");
        assert_eq!(user["id"], FakeClerkApi::user_id(3));
        assert_eq!(user["email_addresses"].as_array().unwrap().len(), 2);
        assert_eq!(
            user["primary_email_address_id"],
            user["email_addresses"][1]["id"]
        );
        let mut sparse = String::new();
        write_user(&mut sparse, 10, 0);
        let sparse: Value = serde_json::from_str(&sparse).unwrap();
        assert!(sparse["username"].is_null() && sparse["last_name"].is_null());
    }

    #[test]
    fn ids_round_trip_and_queries_decode() {
        assert_eq!(parse_index(&FakeClerkApi::user_id(42), 100), Some(42));
        assert_eq!(parse_index(&FakeClerkApi::user_id(42), 10), None);
        assert_eq!(parse_index("user_other", 100), None);
        let uri: Uri = "/v1/users?limit=5&order_by=%2Bcreated_at&order_by=x"
            .parse()
            .unwrap();
        let params = query_params(&uri);
        assert_eq!(params["limit"], "5");
        assert_eq!(params["order_by"], "+created_at");
    }
}
