//! The server `scripts/loadtest.sh` drives: the same handler twice on `127.0.0.1`, once bare
//! and once behind the layer, with a local Clerk stand-in (`DevIssuer`) and a SQLite store.
//!
//! It mints one token per user (`LOADTEST_USERS`, default 1,000), writes them one per line to
//! `LOADTEST_TOKENS` (default `target/loadtest-tokens.txt`), syncs every user once (so the load
//! test measures what a busy server does: known tokens, known users), prints
//! `ready bare=<port> layered=<port>` and serves until `LOADTEST_SECONDS` (default 120) have
//! passed, then exits on its own.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use clerk_sync::testing::DevIssuer;
use clerk_sync::{ClerkSync, ClerkUser, SqliteUserStore};
use tower::ServiceExt;

async fn handler(user: Option<ClerkUser>) -> &'static str {
    if user.is_some() { "user" } else { "anonymous" }
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let users = setting("LOADTEST_USERS", 1_000);
    let seconds = setting("LOADTEST_SECONDS", 120);
    let tokens_path = std::env::var("LOADTEST_TOKENS")
        .unwrap_or_else(|_| "target/loadtest-tokens.txt".to_owned());

    let issuer = DevIssuer::start().await?;
    let dir = tempfile::tempdir()?;
    let store = SqliteUserStore::open(&dir.path().join("loadtest.db").to_string_lossy()).await?;
    let clerk = ClerkSync::builder(issuer.config().build()?, store).build()?;

    // Tokens valid for the whole run (Clerk's live 60 s and are refreshed by its frontend).
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + seconds
        + 60;
    let tokens: Vec<String> = (0..users)
        .map(|i| {
            issuer
                .token_for(&format!("user_load_{i}"))
                .claim("exp", exp)
                .build()
        })
        .collect();
    std::fs::write(&tokens_path, tokens.join("\n") + "\n")?;

    let bare = Router::new().route("/me", get(handler));
    let layered = Router::new()
        .route("/me", get(handler))
        .layer(clerk.layer());
    for token in &tokens {
        let request = http::Request::get("/me")
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())?;
        let response = layered.clone().oneshot(request).await?;
        if !response.status().is_success() {
            return Err(format!("warm-up request failed: {}", response.status()).into());
        }
    }

    let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let layered_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "ready bare={} layered={} users={users} synced={}",
        bare_listener.local_addr()?.port(),
        layered_listener.local_addr()?.port(),
        clerk.stats().upserts_ok
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
