//! The server `scripts/loadtest.sh` drives: the same handler twice on `127.0.0.1`, once bare
//! and once behind the layer, with a local Clerk stand-in (`DevIssuer`) and a SQLite store.
//!
//! It mints one token per user (`LOADTEST_USERS`, default 1,000), writes them one per line to
//! `LOADTEST_TOKENS` (default `target/loadtest-tokens.txt`), syncs every user once (so the load
//! test measures what a busy server does: known tokens, known users), prints
//! `ready bare=<port> layered=<port>` and serves until `LOADTEST_SECONDS` (default 120) have
//! passed, then exits on its own.
//!
//! Several processes sharing one Redis limiter (`scripts/loadtest.sh` with
//! `LOADTEST_PROCESSES`):
//! - `LOADTEST_KEY_DIR`: the first process to start there writes its issuer and public key
//!   (`issuer.txt`, `key.pem`) next to the tokens; the others find them, verify the same
//!   tokens with that key (`CLERK_JWT_KEY`-style, no JWKS) and mint nothing.
//! - `LOADTEST_REDIS_PREFIX`: when set, the layered app also serves `/limited`: the layer
//!   plus `RateLimitLayer` on the Redis at `REDIS_URL` (keys under that prefix) with the
//!   limit `LOADTEST_LIMIT` (default `5/h`) for every user, and `/me` gets the same limiter
//!   with a limit no request reaches (each request pays one Redis round trip).

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use clerk_sync::testing::{DEV_AUTHORIZED_PARTY, DevIssuer};
use clerk_sync::{
    ClerkConfig, ClerkSync, ClerkUser, Limit, RateLimitLayer, RedisRateLimitStore, SqliteUserStore,
    TierLimits,
};
use tower::{ServiceBuilder, ServiceExt};

async fn handler(user: Option<ClerkUser>) -> &'static str {
    if user.is_some() { "user" } else { "anonymous" }
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The config and the tokens: minted here by a dev issuer (returned: it serves the JWKS for
/// as long as it lives) and, with `key_dir`, published for the other processes; or read from
/// what the first process published (no issuer).
async fn keys(
    users: u64,
    seconds: u64,
    tokens_path: &str,
    key_dir: Option<&Path>,
) -> Result<(Option<DevIssuer>, ClerkConfig, Vec<String>), Box<dyn std::error::Error>> {
    if let Some(dir) = key_dir {
        let pem_path = dir.join("key.pem");
        if pem_path.exists() {
            let pem = std::fs::read_to_string(&pem_path)?;
            let issuer = std::fs::read_to_string(dir.join("issuer.txt"))?;
            let tokens = std::fs::read_to_string(tokens_path)?
                .lines()
                .map(str::to_owned)
                .collect();
            let config = ClerkConfig::builder()
                .jwt_key_pem(pem)
                .issuer(issuer.trim())
                .authorized_parties([DEV_AUTHORIZED_PARTY])
                .build()?;
            return Ok((None, config, tokens));
        }
    }
    let issuer = DevIssuer::start().await?;
    // Tokens valid for the whole run (Clerk's live 60 s and are refreshed by its frontend).
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + seconds
        + 600;
    let tokens: Vec<String> = (0..users)
        .map(|i| {
            issuer
                .token_for(&format!("user_load_{i}"))
                .claim("exp", exp)
                .build()
        })
        .collect();
    std::fs::write(tokens_path, tokens.join("\n") + "\n")?;
    if let Some(dir) = key_dir {
        std::fs::write(dir.join("issuer.txt"), issuer.issuer())?;
        // Written last, through a rename: its presence means everything else is there.
        let partial = dir.join("key.pem.partial");
        std::fs::write(&partial, issuer.public_key_pem())?;
        std::fs::rename(partial, dir.join("key.pem"))?;
    }
    let config = issuer.config().build()?;
    Ok((Some(issuer), config, tokens))
}

/// `/me`, and with `LOADTEST_REDIS_PREFIX` `/limited`, behind `clerk`'s layer and the Redis
/// limiter.
fn layered(clerk: &ClerkSync) -> Result<Router, Box<dyn std::error::Error>> {
    let Ok(prefix) = std::env::var("LOADTEST_REDIS_PREFIX") else {
        return Ok(Router::new()
            .route("/me", get(handler))
            .layer(clerk.layer()));
    };
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let limit: Limit = std::env::var("LOADTEST_LIMIT")
        .unwrap_or_else(|_| "5/h".into())
        .parse()?;
    let limited =
        |path: &str, limit: Limit, prefix: String| -> Result<Router, Box<dyn std::error::Error>> {
            let store = RedisRateLimitStore::new(&url)?.key_prefix(prefix);
            Ok(Router::new().route(path, get(handler)).layer(
                ServiceBuilder::new()
                    .layer(clerk.layer())
                    .layer(RateLimitLayer::with_store(TierLimits::new(limit), store)),
            ))
        };
    let never_reached = Limit::new(1_000_000_000, Duration::from_secs(1))?;
    Ok(
        limited("/me", never_reached, format!("{prefix}me:"))?.merge(limited(
            "/limited",
            limit,
            format!("{prefix}limited:"),
        )?),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let users = setting("LOADTEST_USERS", 1_000);
    let seconds = setting("LOADTEST_SECONDS", 120);
    let tokens_path = std::env::var("LOADTEST_TOKENS")
        .unwrap_or_else(|_| "target/loadtest-tokens.txt".to_owned());
    let key_dir = std::env::var_os("LOADTEST_KEY_DIR").map(std::path::PathBuf::from);

    let (issuer, config, tokens) = keys(users, seconds, &tokens_path, key_dir.as_deref()).await?;
    let dir = tempfile::tempdir()?;
    let store = SqliteUserStore::open(&dir.path().join("loadtest.db").to_string_lossy()).await?;
    let clerk = ClerkSync::builder(config, store).build()?;

    let bare = Router::new().route("/me", get(handler));
    // Warm-up through the layer alone: the limiters' budgets stay untouched.
    let warm = Router::new()
        .route("/me", get(handler))
        .layer(clerk.layer());
    let layered = layered(&clerk)?;
    for token in &tokens {
        let request = http::Request::get("/me")
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())?;
        let response = warm.clone().oneshot(request).await?;
        if !response.status().is_success() {
            return Err(format!("warm-up request failed: {}", response.status()).into());
        }
    }

    let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let layered_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "ready bare={} layered={} users={} synced={} keys={}",
        bare_listener.local_addr()?.port(),
        layered_listener.local_addr()?.port(),
        tokens.len(),
        clerk.stats().upserts_ok,
        if issuer.is_some() { "own" } else { "shared" }
    );
    let servers = async {
        tokio::try_join!(
            axum::serve(bare_listener, bare),
            axum::serve(layered_listener, layered)
        )
    };
    tokio::select! {
        result = servers => { result?; }
        () = tokio::time::sleep(Duration::from_secs(seconds)) => {}
    }
    let stats = clerk.stats();
    println!(
        "stopped: {} session hits, {} tokens verified, {} upserts",
        stats.token_cache_hits, stats.tokens_verified, stats.upserts_ok
    );
    Ok(())
}
