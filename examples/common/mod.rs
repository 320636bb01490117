//! What the examples share: the pool, the Clerk config (or a local dev issuer), `GET /me`, and
//! serving with credentials kept out of the request logs.
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
use clerk_sync::testing::DevIssuer;
use clerk_sync::{ClerkConfig, ClerkSync, ClerkUser, PgUserStore, RateLimitLayer};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
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

pub struct Demo {
    pub pool: PgPool,
    pub clerk: ClerkSync,
    /// Set when no Clerk key source is configured.
    pub dev: Option<Arc<DevIssuer>>,
}

/// Logging, `DATABASE_URL`, migrations, and a `ClerkSync` from the `CLERK_*` variables, or
/// from a local dev issuer (with `dev_webhook_secret`) when no key source is set.
pub async fn demo(dev_webhook_secret: Option<&str>) -> Result<Demo, Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,clerk_sync=debug".into()),
        )
        .init();
    let database_url = std::env::var("DATABASE_URL").map_err(|_| {
        "DATABASE_URL is not set; for example DATABASE_URL=postgres://postgres@127.0.0.1:5432/test"
    })?;
    // Short acquire timeout: an outage answers 503 fast instead of piling up requests.
    // Neon: a cold compute can take a few hundred ms to accept the first connection.
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&database_url)
        .await?;
    clerk_sync::migrate(&pool).await?;

    let configured = KEY_SOURCES
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty()));
    let (config, dev) = if configured {
        (ClerkConfig::from_env()?, None)
    } else {
        let dev = Arc::new(DevIssuer::start().await?);
        let mut config = dev.config();
        if let Some(secret) = dev_webhook_secret {
            config = config.webhook_signing_secret(secret);
        }
        (config.build()?, Some(dev))
    };
    let clerk = ClerkSync::builder(config)
        .store(PgUserStore::new(pool.clone()))
        .build()?;
    Ok(Demo { pool, clerk, dev })
}

impl Demo {
    /// `GET /me` behind the layer, `GET /healthz`, and with a dev issuer `GET /dev/token/{id}`.
    pub fn app(&self) -> Router {
        self.app_with_limiter(None)
    }

    /// Like [`Demo::app`], with `limiter` inside the sync layer on `/me`.
    pub fn app_with_limiter(&self, limiter: Option<RateLimitLayer>) -> Router {
        let me = Router::new().route("/me", get(me));
        let me = match limiter {
            // Outermost first: verify and sync, then limit by the synced tier.
            Some(limiter) => me.layer(
                ServiceBuilder::new()
                    .layer(self.clerk.layer())
                    .layer(limiter),
            ),
            None => me.layer(self.clerk.layer()),
        };
        let mut app = me
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self.pool.clone());
        if let Some(dev) = &self.dev {
            let dev = dev.clone();
            app = app.route(
                "/dev/token/{user_id}",
                get(move |Path(user_id): Path<String>| async move { demo_token(&dev, &user_id) }),
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
        let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
        let listener = TcpListener::bind(&bind).await?;
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
            println!("more tokens: curl http://{addr}/dev/token/<user_id>");
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
    State(pool): State<PgPool>,
    user: ClerkUser,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT tier, email FROM users WHERE id = $1")
            .bind(user.user_id())
            .fetch_optional(&pool)
            .await
            .map_err(|error| {
                tracing::error!(%error, "reading the user row failed");
                let body = json!({"error": "database_error", "message": "could not read the user"});
                (StatusCode::SERVICE_UNAVAILABLE, Json(body))
            })?;
    let (tier, email) = row.unwrap_or_else(|| (user.tier().to_owned(), None));
    Ok(Json(json!({
        "user_id": user.user_id(),
        "session_id": user.session_id(),
        "tier": tier,
        "email": email,
    })))
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A dev token valid for an hour (real Clerk tokens live 60 s and are refreshed by the browser).
fn demo_token(dev: &DevIssuer, user_id: &str) -> String {
    dev.token_for(user_id)
        .claim("email", format!("{user_id}@example.com"))
        .claim("exp", unix_now() + 3600)
        .build()
}
