//! Test utilities (feature `test-util`): [`DevIssuer`], a local stand-in for a Clerk instance's
//! token issuer, and [`FakeClerkApi`], a local stand-in for its Backend API.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use clerk_sync::testing::DevIssuer;
//!
//! let issuer = DevIssuer::start().await?;
//! let config = issuer.config().build()?; // issuer + JWKS URL of the local server
//! let token = issuer.token("user_2abc");  // shaped like a Clerk session token
//! let expired = issuer.token_for("user_2abc").expired_for(30).build();
//! # let _ = (config, token, expired);
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::StatusCode;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::ClerkConfig;
use crate::config::ClerkConfigBuilder;

mod fake_api;
mod org_claims;
use crate::time::unix_now;
pub use fake_api::{FakeClerkApi, Fault};

/// The `azp` of minted tokens and the authorized party of [`DevIssuer::config`].
pub const DEV_AUTHORIZED_PARTY: &str = "http://localhost:3000";

/// A local Clerk stand-in: a fresh RSA-2048 key, its JWKS served on `127.0.0.1:<random port>`,
/// and session tokens shaped like Clerk's (`kid` `ins_...`, `cat` session, `v: 2`,
/// `exp = iat + 60`, `nbf = iat - 10`, `sid`, `azp`).
///
/// The server stops when the `DevIssuer` is dropped.
pub struct DevIssuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: AbortHandle,
}

struct Shared {
    keys: RwLock<Vec<Arc<DevKey>>>,
    fetches: AtomicU64,
    stopped: AtomicBool,
    wrong_key: OnceLock<Option<Arc<DevKey>>>,
}

struct DevKey {
    kid: String,
    pair: KeyPair,
    n: String,
    e: String,
}

impl DevKey {
    fn generate(kid: String) -> std::io::Result<Self> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| std::io::Error::other("RSA key generation failed"))?;
        let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        Ok(Self {
            kid,
            n: URL_SAFE_NO_PAD.encode(&components.n),
            e: URL_SAFE_NO_PAD.encode(&components.e),
            pair,
        })
    }

    fn jwk(&self) -> Value {
        json!({"use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256", "n": self.n, "e": self.e})
    }
}

fn random_id(prefix: &str) -> String {
    random_hex_id(prefix, 12)
}

/// `prefix` and `bytes` random bytes in hex (Clerk's machine-token ids are 16 bytes). Only
/// ids for tests: a failing RNG leaves zeros, still a well-formed id.
pub(crate) fn random_hex_id(prefix: &str, bytes: usize) -> String {
    let mut random = vec![0u8; bytes];
    let _ = aws_lc_rs::rand::fill(&mut random);
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer())
            .field("kid", &self.current_key().kid)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// Generates a key and starts serving its JWKS at `/.well-known/jwks.json`.
    pub async fn start() -> std::io::Result<Self> {
        let key = DevKey::generate(random_id("ins_"))?;
        let shared = Arc::new(Shared {
            keys: RwLock::new(vec![Arc::new(key)]),
            fetches: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            wrong_key: OnceLock::new(),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = shared.clone();
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let state = state.clone();
                async move { serve_jwks(&state) }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
        .abort_handle();
        Ok(Self {
            shared,
            addr,
            server,
        })
    }

    /// The issuer (`iss`) of minted tokens: `http://127.0.0.1:<port>`.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// A config builder set to this issuer, its JWKS URL and [`DEV_AUTHORIZED_PARTY`].
    pub fn config(&self) -> ClerkConfigBuilder {
        ClerkConfig::builder()
            .issuer(self.issuer())
            .jwks_url(self.jwks_url())
            .authorized_parties([DEV_AUTHORIZED_PARTY])
    }

    /// The current signing key as an SPKI PEM, the format of `CLERK_JWT_KEY`.
    pub fn public_key_pem(&self) -> String {
        let key = self.current_key();
        let der = key
            .pair
            .public_key()
            .as_der()
            .map(|der| der.as_ref().to_vec())
            .unwrap_or_default();
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .filter_map(|chunk| std::str::from_utf8(chunk).ok())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// The `kid` new tokens are signed with.
    pub fn kid(&self) -> String {
        self.current_key().kid.clone()
    }

    /// Adds a new key to the JWKS and signs new tokens with it; the old key stays published.
    /// Returns the new `kid`.
    pub fn rotate_key(&self) -> std::io::Result<String> {
        let key = DevKey::generate(random_id("ins_"))?;
        let kid = key.kid.clone();
        self.write_keys().push(Arc::new(key));
        Ok(kid)
    }

    /// Stops publishing the key `kid` (tokens it signed no longer verify once a verifier
    /// refreshes its key set). Returns whether it was published.
    pub fn retire_key(&self, kid: &str) -> bool {
        let mut keys = self.write_keys();
        let before = keys.len();
        keys.retain(|key| key.kid != kid);
        keys.len() != before
    }

    /// The JWKS document this issuer serves (every published key), for example to serve it
    /// from [`FakeClerkApi`] as the Backend API's `/v1/jwks`.
    pub fn jwks(&self) -> Value {
        jwks_document(&self.shared)
    }

    /// How many times the JWKS was served.
    pub fn jwks_fetches(&self) -> u64 {
        self.shared.fetches.load(Ordering::SeqCst)
    }

    /// Stops the JWKS server: new connections are refused and kept-alive ones get 503.
    pub fn stop_jwks(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.server.abort();
    }

    /// A valid session token for `user_id` with Clerk's default claims.
    pub fn token(&self, user_id: &str) -> String {
        self.token_for(user_id).build()
    }

    /// A token builder for `user_id`, starting from Clerk's default shape.
    pub fn token_for(&self, user_id: &str) -> TokenBuilder<'_> {
        let key = self.current_key();
        let now = unix_now();
        let mut header = Map::new();
        header.insert("alg".into(), "RS256".into());
        header.insert("cat".into(), "cl_B7d4PD111AAA".into());
        header.insert("kid".into(), key.kid.clone().into());
        header.insert("typ".into(), "JWT".into());
        let claims = json!({
            "azp": DEV_AUTHORIZED_PARTY,
            "exp": now + 60,
            "fva": [0, -1],
            "iat": now,
            "iss": self.issuer(),
            "nbf": now - 10,
            "sid": random_id("sess_"),
            "sub": user_id,
            "v": 2,
        });
        TokenBuilder {
            issuer: self,
            key,
            header,
            claims: claims.as_object().cloned().unwrap_or_default(),
            signing: Signing::Rs256,
        }
    }

    /// A JWT template for `user_id` as Clerk mints them for third parties: header `cat`
    /// `cl_B7d4PD222AAA`, no `sid`, no `azp`, valid for a day.
    pub fn template_for(&self, user_id: &str) -> TokenBuilder<'_> {
        self.token_for(user_id)
            .header("cat", "cl_B7d4PD222AAA")
            .without_claim("sid")
            .without_claim("azp")
            .without_claim("v")
            .without_claim("fva")
            .claim("exp", unix_now() + 86_400)
    }

    /// A machine-to-machine JWT for `machine_id` (`mch_...`): header `cat`
    /// `cl_B7d4PD333AAA`, `sub` the machine, no session.
    pub fn m2m_jwt_for(&self, machine_id: &str) -> TokenBuilder<'_> {
        self.token_for(machine_id)
            .header("cat", "cl_B7d4PD333AAA")
            .without_claim("sid")
            .without_claim("azp")
            .without_claim("fva")
            .claim("jti", random_id("mt_"))
    }

    /// An OAuth access token in JWT form (RFC 9068) for `user_id`: header `typ` `at+jwt`,
    /// the session category left as [`token_for`](Self::token_for) sets it.
    pub fn oauth_jwt_for(&self, user_id: &str) -> TokenBuilder<'_> {
        self.token_for(user_id)
            .header("typ", "at+jwt")
            .without_claim("sid")
            .claim("client_id", "client_dev")
            .claim("scope", "profile email")
            .claim("jti", random_id("oat_"))
    }

    fn current_key(&self) -> Arc<DevKey> {
        let keys = match self.shared.keys.read() {
            Ok(keys) => keys,
            Err(poisoned) => poisoned.into_inner(),
        };
        keys.last().cloned().expect("a DevIssuer always has a key")
    }

    fn write_keys(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<DevKey>>> {
        match self.shared.keys.write() {
            Ok(keys) => keys,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn serve_jwks(shared: &Shared) -> Response {
    if shared.stopped.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    axum::Json(jwks_document(shared)).into_response()
}

fn jwks_document(shared: &Shared) -> Value {
    let keys = match shared.keys.read() {
        Ok(keys) => keys,
        Err(poisoned) => poisoned.into_inner(),
    };
    let keys: Vec<Value> = keys.iter().map(|key| key.jwk()).collect();
    json!({ "keys": keys })
}

enum Signing {
    Rs256,
    WrongKey,
    Unsigned,
    Hs256(Vec<u8>),
    Tampered,
}

/// Builds one token; every method changes one thing from Clerk's default shape.
pub struct TokenBuilder<'a> {
    issuer: &'a DevIssuer,
    key: Arc<DevKey>,
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signing: Signing,
}

impl std::fmt::Debug for TokenBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBuilder")
            .field("header", &self.header)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

impl TokenBuilder<'_> {
    /// Sets a claim (custom claims such as `email` too).
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// Removes a claim.
    pub fn without_claim(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Sets a header field (`alg`, `cat`, `kid`, ...).
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.header.insert(name.into(), value.into());
        self
    }

    /// Removes a header field.
    pub fn without_header(mut self, name: &str) -> Self {
        self.header.remove(name);
        self
    }

    /// Sets `iat` and derives `nbf = iat - 10` and `exp = iat + 60`, as Clerk does.
    pub fn issued_at(self, iat: i64) -> Self {
        self.claim("iat", iat)
            .claim("nbf", iat - 10)
            .claim("exp", iat + 60)
    }

    /// A token whose `exp` passed `seconds` ago (issued 60 s before that).
    pub fn expired_for(self, seconds: i64) -> Self {
        self.issued_at(unix_now() - 60 - seconds)
    }

    /// Signs with a freshly generated key that the JWKS does not contain, under the same `kid`.
    pub fn wrong_signature(mut self) -> Self {
        self.signing = Signing::WrongKey;
        self
    }

    /// Signs correctly, then changes the payload (`sub` becomes `user_tampered`).
    pub fn tampered(mut self) -> Self {
        self.signing = Signing::Tampered;
        self
    }

    /// `alg: none` and an empty signature.
    pub fn unsigned(mut self) -> Self {
        self.header.insert("alg".into(), "none".into());
        self.signing = Signing::Unsigned;
        self
    }

    /// `alg: HS256`, HMAC-signed with `secret` (for example the public key's PEM bytes, the
    /// classic algorithm-confusion attack).
    pub fn hs256(mut self, secret: &[u8]) -> Self {
        self.header.insert("alg".into(), "HS256".into());
        self.signing = Signing::Hs256(secret.to_vec());
        self
    }

    /// Encodes and signs the token.
    pub fn build(self) -> String {
        let encode = |value: &Map<String, Value>| {
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
        };
        let message = format!("{}.{}", encode(&self.header), encode(&self.claims));
        let signature = match &self.signing {
            Signing::Rs256 | Signing::Tampered => rsa_sign(&self.key, &message),
            Signing::WrongKey => {
                let wrong = self
                    .issuer
                    .shared
                    .wrong_key
                    .get_or_init(|| DevKey::generate(self.key.kid.clone()).ok().map(Arc::new));
                wrong
                    .as_ref()
                    .map(|key| rsa_sign(key, &message))
                    .unwrap_or_default()
            }
            Signing::Unsigned => Vec::new(),
            Signing::Hs256(secret) => {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
                aws_lc_rs::hmac::sign(&key, message.as_bytes())
                    .as_ref()
                    .to_vec()
            }
        };
        let message = if matches!(self.signing, Signing::Tampered) {
            let mut claims = self.claims.clone();
            claims.insert("sub".into(), "user_tampered".into());
            format!("{}.{}", encode(&self.header), encode(&claims))
        } else {
            message
        };
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn rsa_sign(key: &DevKey, message: &str) -> Vec<u8> {
    let mut signature = vec![0; key.pair.public_modulus_len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    match key
        .pair
        .sign(&RSA_PKCS1_SHA256, &rng, message.as_bytes(), &mut signature)
    {
        Ok(()) => signature,
        Err(_) => Vec::new(),
    }
}

/// The `svix-signature` value Svix would send for this delivery (`secret` as in
/// `CLERK_WEBHOOK_SIGNING_SECRET`). Checked against vectors made by Svix's own library.
pub fn sign_webhook(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, crate::ConfigError> {
    let secret = crate::secret::WebhookSecret::parse(secret)?;
    Ok(crate::webhook::sign(&secret, id, timestamp, body))
}

/// A `POST path` request carrying `body` as Clerk would deliver it now: JSON content type and
/// the three Svix headers, signed with `secret`.
pub fn signed_webhook_request(
    path: &str,
    secret: &str,
    id: &str,
    body: &str,
) -> Result<http::Request<axum::body::Body>, crate::ConfigError> {
    let timestamp = unix_now();
    let signature = sign_webhook(secret, id, timestamp, body.as_bytes())?;
    http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("svix-id", id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .body(axum::body::Body::from(body.to_owned()))
        .map_err(|error| crate::ConfigError::new("svix-id", error.to_string()))
}
