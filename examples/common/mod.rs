//! What the examples share: the database (SQLite file by default, or `DATABASE_URL`), the
//! Clerk config (or a local dev issuer and Backend API), `GET /me`, `GET /api/me`, and serving with credentials kept out of
//! the request logs.
#![allow(dead_code)]

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::routing::get;
use axum::{Json, Router};
use clerk_sync::authz::{Check, Reverification};
use clerk_sync::testing::{DevIssuer, FakeClerkApi};
use clerk_sync::{
    ClerkConfig, ClerkPrincipal, ClerkSync, ClerkSyncBuilder, ClerkUser, PgUserStore,
    RateLimitLayer, RedisChannel, SqliteUserStore, TokenType,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, SqlitePool};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tracing_subscriber::EnvFilter;

const KEY_SOURCES: [&str; 4] = [
    "CLERK_PUBLISHABLE_KEY",
    "CLERK_SECRET_KEY",
    "CLERK_JWT_KEY",
    "CLERK_JWKS_URL",
];

/// Where users are stored: chosen by `DATABASE_URL`'s scheme, a SQLite file without it.
#[derive(Clone)]
pub enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The SQLite file used when `DATABASE_URL` is not set, relative to the working directory.
pub const DEFAULT_SQLITE_FILE: &str = "clerk-sync-quickstart.db";

impl Database {
    async fn connect() -> Result<(Self, String), Box<dyn Error>> {
        let url = std::env::var("DATABASE_URL").unwrap_or_default();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Short acquire timeout: an outage answers 503 fast instead of piling up requests.
            // Neon: a cold compute can take a few hundred ms to accept the first connection.
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(3))
                .connect(&url)
                .await?;
            clerk_sync::migrate(&pool).await?;
            return Ok((Self::Postgres(pool), "PostgreSQL (DATABASE_URL)".into()));
        }
        let path = if url.is_empty() {
            DEFAULT_SQLITE_FILE.to_owned()
        } else {
            url
        };
        let store = SqliteUserStore::open(&path).await?;
        Ok((
            Self::Sqlite(store.pool().clone()),
            format!("SQLite file {path}"),
        ))
    }

    /// The user's row as JSON, `None` when absent.
    async fn user_row(&self, id: &str) -> Result<Option<Value>, sqlx::Error> {
        type Row = (String, Option<String>, Option<String>, bool);
        let row: Option<Row> = match self {
            Self::Postgres(pool) => sqlx::query_as(
                "SELECT tier, email, first_name, deleted_at IS NOT NULL FROM users WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?,
            Self::Sqlite(pool) => sqlx::query_as(
                "SELECT tier, email, first_name, deleted_at IS NOT NULL FROM users WHERE id = ?1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?,
        };
        Ok(row.map(|(tier, email, first_name, deleted)| {
            json!({"id": id, "tier": tier, "email": email, "first_name": first_name, "deleted": deleted})
        }))
    }
}

pub struct Demo {
    pub database: Database,
    pub clerk: ClerkSync,
    /// Renders what the `metrics` recorder holds, for `GET /metrics`.
    pub metrics: PrometheusHandle,
    /// Set when no Clerk key source is configured.
    pub dev: Option<Arc<DevIssuer>>,
    /// With the dev issuer: a local stand-in for the Backend API that knows one API key, and
    /// that key.
    pub dev_api: Option<(FakeClerkApi, String)>,
}

/// Logging, `DATABASE_URL`, migrations, and a `ClerkSync` from the `CLERK_*` variables, or
/// from a local dev issuer (with `dev_webhook_secret`) when no key source is set.
pub async fn demo(dev_webhook_secret: Option<&str>) -> Result<Demo, Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,clerk_sync=debug".into()),
        )
        .init();
    // The Prometheus text format for `GET /metrics`, rendered on request.
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let (database, described) = Database::connect().await?;
    println!("users are stored in: {described}");

    let configured = KEY_SOURCES
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty()));
    let (config, dev, dev_api) = if configured {
        (ClerkConfig::from_env()?, None, None)
    } else {
        let dev = Arc::new(DevIssuer::start().await?);
        let mut config = dev.config();
        if let Some(secret) = dev_webhook_secret {
            config = config.webhook_signing_secret(secret);
        }
        // API keys are verified by the Backend API: locally, a fake one that knows one key,
        // owned by the fake's first user.
        let fake = FakeClerkApi::start(1).await?;
        let key = dev_api_key();
        let answer = FakeClerkApi::api_key_answer(&FakeClerkApi::user_id(0));
        fake.add_machine_token(&key, TokenType::ApiKey, answer);
        (config.build()?, Some(dev), Some((fake, key)))
    };
    let api = dev_api.as_ref().map(|(fake, _)| fake.client());
    let invalidation = invalidation()?;
    let finish = |builder: ClerkSyncBuilder| {
        let builder = match api {
            Some(api) => builder.clerk_api(api),
            None => builder,
        };
        match invalidation {
            Some(channel) => builder.invalidation(channel),
            None => builder,
        }
        .build()
    };
    let clerk = match &database {
        Database::Postgres(pool) => {
            finish(ClerkSync::builder(config, PgUserStore::new(pool.clone())))?
        }
        Database::Sqlite(pool) => finish(ClerkSync::builder(
            config,
            SqliteUserStore::new(pool.clone()),
        ))?,
    };
    // The invalidation listener and webhook-id pruning: explicit, never hidden in `build`.
    tokio::spawn(clerk.background());
    Ok(Demo {
        database,
        clerk,
        metrics,
        dev,
        dev_api,
    })
}

/// `REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `INVALIDATION`: `store` (default: the store's own, `LISTEN`/`NOTIFY` for PostgreSQL) or
/// `redis` (pub/sub on `REDIS_URL`, for PostgreSQL behind a transaction pooler).
fn invalidation() -> Result<Option<RedisChannel>, Box<dyn Error>> {
    match std::env::var("INVALIDATION").as_deref() {
        Err(_) | Ok("" | "store") => Ok(None),
        Ok("redis") => {
            let channel = RedisChannel::new(&redis_url())?;
            println!("invalidation: Redis pub/sub on REDIS_URL, channel clerk_sync_users");
            Ok(Some(channel))
        }
        Ok(other) => Err(format!("INVALIDATION: `{other}` is not store or redis").into()),
    }
}

impl Demo {
    /// `GET /me` behind the session layer, `GET /api/me` behind a layer that takes every
    /// token type (API keys, M2M and OAuth tokens too), `GET /healthz`, and with a dev issuer
    /// `GET /dev/token/{id}`.
    pub fn app(&self) -> Router {
        self.app_with_limiter(None)
    }

    /// Like [`Demo::app`], with `limiter` inside the sync layers of `/me` and `/api/me` (a
    /// user's sessions and API keys share one budget).
    pub fn app_with_limiter(&self, limiter: Option<RateLimitLayer>) -> Router {
        let me = Router::new().route("/me", get(me));
        let api = Router::new().route("/api/me", get(api_me));
        let any = self.clerk.layer().accepts_any();
        let (me, api) = match limiter {
            // Outermost first: verify and sync, then limit by the synced tier.
            Some(limiter) => (
                me.layer(
                    ServiceBuilder::new()
                        .layer(self.clerk.layer())
                        .layer(limiter.clone()),
                ),
                api.layer(ServiceBuilder::new().layer(any).layer(limiter)),
            ),
            None => (me.layer(self.clerk.layer()), api.layer(any)),
        };
        // Organization routes: a guard, and a live demo of `has()`.
        let org = Router::new()
            .route(
                "/org/invoices",
                get(|| async { Json(json!({"invoices": []})) })
                    .layer(self.clerk.require(Check::permission("org:invoices:read"))),
            )
            .route("/authorize", get(authorize))
            .layer(self.clerk.layer());
        let mut app = me
            .merge(api)
            .merge(org)
            .route("/healthz", get(healthz).with_state(self.clerk.clone()))
            .route(
                "/metrics",
                get(metrics).with_state((self.clerk.clone(), self.metrics.clone())),
            )
            .with_state(self.database.clone());
        if let Some(dev) = &self.dev {
            let dev = dev.clone();
            let database = self.database.clone();
            app = app
                .route(
                    "/dev/token/{user_id}",
                    get(move |Path(user_id): Path<String>| async move { demo_token(&dev, &user_id) }),
                )
                .route(
                    "/dev/users/{user_id}",
                    get(move |Path(user_id): Path<String>| async move {
                        match database.user_row(&user_id).await {
                            Ok(Some(row)) => Ok(Json(row)),
                            Ok(None) => Err((StatusCode::NOT_FOUND, "no such user row")),
                            Err(_) => Err((StatusCode::SERVICE_UNAVAILABLE, "database error")),
                        }
                    }),
                );
        }
        app
    }

    /// Binds `BIND` (default `127.0.0.1:3000`), prints `listening on <addr>` and, with a dev
    /// issuer, a ready `curl`; `hints` may print more. Serves until Ctrl-C.
    pub async fn serve(
        &self,
        app: Router,
        hints: impl FnOnce(SocketAddr),
    ) -> Result<(), Box<dyn Error>> {
        // Outermost first: mark credentials sensitive before the trace layer logs headers.
        let app =
            app.layer(TraceLayer::new_for_http())
                .layer(SetSensitiveRequestHeadersLayer::new([
                    AUTHORIZATION,
                    COOKIE,
                ]));
        let listener = match std::env::var("BIND") {
            Ok(bind) => TcpListener::bind(&bind).await?,
            // The default port may be taken: any free loopback port beats failing.
            Err(_) => match TcpListener::bind("127.0.0.1:3000").await {
                Ok(listener) => listener,
                Err(_) => TcpListener::bind("127.0.0.1:0").await?,
            },
        };
        let addr = listener.local_addr()?;
        println!("listening on {addr}");
        if let Some(dev) = &self.dev {
            println!(
                "no Clerk key source configured: using a local dev issuer ({})",
                dev.issuer()
            );
            println!("try (the token is valid for one hour):");
            println!(
                "  curl -H 'Authorization: Bearer {}' http://{addr}/me",
                demo_token(dev, "user_quickstart")
            );
            println!("then see the row it created:");
            println!("  curl http://{addr}/dev/users/user_quickstart");
            println!("more tokens: curl http://{addr}/dev/token/<user_id>");
        }
        if self.dev.is_some() {
            println!("its organization (org_quickstart, admin, org:invoices:read): try");
            println!("  GET /org/invoices and /authorize?permission=org:invoices:read&plan=o:pro");
        }
        if let Some((_, key)) = &self.dev_api {
            println!("an API consumer, with a dev API key (any token type works on /api/me):");
            println!("  curl -H 'Authorization: Bearer {key}' http://{addr}/api/me");
        }
        hints(addr);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    }
}

/// Reads the user back from the database: the layer wrote the row before this ran.
async fn me(
    State(database): State<Database>,
    user: ClerkUser,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let row = database.user_row(user.user_id()).await.map_err(|error| {
        tracing::error!(%error, "reading the user row failed");
        let body = json!({"error": "database_error", "message": "could not read the user"});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    })?;
    let row = row.unwrap_or_default();
    let org = user.organization();
    Ok(Json(json!({
        "user_id": user.user_id(),
        "session_id": user.session_id(),
        "tier": row.get("tier").cloned().unwrap_or_else(|| user.tier().into()),
        "email": row.get("email").cloned().unwrap_or(Value::Null),
        "org_id": org.map(|o| o.id.as_str()),
        "org_slug": org.and_then(|o| o.slug.as_deref()),
        "org_role": org.and_then(|o| o.role.as_deref()),
        // From the `organizations` row the layer wrote before this handler ran.
        "org_tier": user.organization_tier(),
    })))
}

/// `GET /authorize?role=…&permission=…&feature=…&plan=…&reverification=…`: `{"has": bool}` for
/// the caller's session, asking only the parameters given (`reverification` is one of Clerk's
/// presets: `strict_mfa`, `strict`, `moderate`, `lax`).
async fn authorize(
    user: ClerkUser,
    uri: axum::http::Uri,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let query = uri.query().unwrap_or_default().as_bytes();
    let mut check = Check::default();
    for (name, value) in url::form_urlencoded::parse(query) {
        let value = value.as_ref();
        let asked = match name.as_ref() {
            "role" => Check::role(value),
            "permission" => Check::permission(value),
            "feature" => Check::feature(value),
            "plan" => Check::plan(value),
            "reverification" => match Reverification::preset(value) {
                Some(preset) => Check::reverification(preset),
                None => {
                    return Err(bad_request(
                        "reverification is strict_mfa, strict, moderate or lax",
                    ));
                }
            },
            _ => {
                return Err(bad_request(
                    "parameters: role, permission, feature, plan, reverification",
                ));
            }
        };
        check = check.and(asked);
    }
    Ok(Json(json!({ "has": user.has(check) })))
}

fn bad_request(message: &str) -> (StatusCode, Json<Value>) {
    let body = json!({"error": "bad_request", "message": message});
    (StatusCode::BAD_REQUEST, Json(body))
}

/// Who called `/api/me`: a user (session, API key or OAuth token; tier from the synced row)
/// or a machine.
async fn api_me(
    State(database): State<Database>,
    caller: ClerkPrincipal,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let user = caller.user();
    let tier = match user {
        Some(user) => {
            let row = database.user_row(user.user_id()).await.map_err(|error| {
                tracing::error!(%error, "reading the user row failed");
                let body = json!({"error": "database_error", "message": "could not read the user"});
                (StatusCode::SERVICE_UNAVAILABLE, Json(body))
            })?;
            row.and_then(|row| row.get("tier").cloned())
                .unwrap_or_else(|| user.tier().into())
        }
        None => Value::Null,
    };
    let machine = caller.machine();
    Ok(Json(json!({
        "token_type": caller.token_type().as_str(),
        "subject": caller.subject(),
        "user_id": user.map(ClerkUser::user_id),
        "org_id": machine.and_then(|m| m.org_id()),
        "machine_id": machine.and_then(|m| m.machine_id()),
        "scopes": caller.scopes(),
        "tier": tier,
    })))
}

/// A fresh dev API key: `ak_` and 32 hex digits from the process's random hasher seeds.
fn dev_api_key() -> String {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    let (a, b) = (state.hash_one(1u8), state.hash_one(2u8));
    format!("ak_{a:016x}{b:016x}")
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A dev token valid for an hour (real Clerk tokens live 60 s and are refreshed by the browser),
/// with an active organization (`org_quickstart`, role admin, `org:invoices:read`), a plan and
/// a first factor verified a minute ago.
fn demo_token(dev: &DevIssuer, user_id: &str) -> String {
    dev.token_for(user_id)
        .claim("email", format!("{user_id}@example.com"))
        .claim("exp", unix_now() + 3600)
        .plans("o:pro")
        .organization(
            "org_quickstart",
            "quickstart",
            "admin",
            &["org:invoices:read"],
        )
        .factor_ages(1, -1)
        .build()
}

/// `GET /healthz`: `clerk.health()` as JSON; 503 when the store cannot be reached.
async fn healthz(State(clerk): State<ClerkSync>) -> (StatusCode, Json<Value>) {
    let health = clerk.health().await;
    let status = if health.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::to_value(health).unwrap_or_default()),
    )
}

/// `GET /metrics`: the Prometheus text format, with the handle's counters handed over first
/// so the scrape is current.
async fn metrics(State((clerk, handle)): State<(ClerkSync, PrometheusHandle)>) -> String {
    clerk.record_metrics();
    handle.render()
}
