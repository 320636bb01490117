//! Instructions per request, counted by callgrind: where times drift between runs on this
//! machine (20% and more), instruction counts repeat. Each case runs in a child process of its
//! own: set up, warm up (every token once, so every session and user is cached), then
//! `REQUESTS` requests inside [`measured_requests`], the only function callgrind collects in
//! (`--toggle-collect`). The same child also runs natively, for the time per request beside
//! the count.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench instructions [-- FILTER]
//! ```
//!
//! Cases (the same router, handler and request as `benches/overhead.rs`, 10,000 users rotating,
//! an in-memory user store: the hit paths never reach the store):
//! `bare`, `layer/both_hit`, `layer/org_hit` (session tokens with an active organization) and
//! `layer/guarded_hit` (the same behind `require(Check::permission(..))`), `layer/api_key_hit`
//! (10,000 API keys, verified once by `FakeClerkApi`), and `layer/both_hit+ratelimit_memory`,
//! `_postgres` (needs `DATABASE_URL`), `_redis` (the local Redis, `REDIS_URL`); and the new
//! token for a known user: `rsa_floor` (one RSA-2048 verification of each token's signing
//! input with a parsed key, aws-lc-rs) beside `layer/new_token_cached_user` (every user
//! cached by the warm-up, then a token never seen per request). A case whose
//! service is missing is skipped with the reason. Needs `valgrind` on the `PATH`; each case's
//! callgrind profile stays in `target/callgrind/` for `callgrind_annotate`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use clerk_sync::authz::Check;
use clerk_sync::testing::{DevIssuer, FakeClerkApi};
use clerk_sync::{
    ClerkSync, ClerkUser, Limit, MemoryUserStore, PgRateLimitStore, ProfileSource, RateLimitLayer,
    RedisRateLimitStore, TierLimits, TokenType,
};
use http::Request;
use sqlx::postgres::PgPoolOptions;
use tower::ServiceExt;

mod common;

const USERS: usize = 10_000;
/// Requests counted per case: one more round of every user.
const REQUESTS: usize = 10_000;
const CASES: [&str; 10] = [
    "bare",
    "rsa_floor",
    "layer/new_token_cached_user",
    "layer/both_hit",
    "layer/org_hit",
    "layer/guarded_hit",
    "layer/api_key_hit",
    "layer/both_hit+ratelimit_memory",
    "layer/both_hit+ratelimit_postgres",
    "layer/both_hit+ratelimit_redis",
];

async fn handler(user: Option<ClerkUser>) -> &'static str {
    if user.is_some() { "user" } else { "anonymous" }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|arg| arg == "--case") {
        let case = args.get(at + 1).expect("--case NAME");
        child(case);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run only for real.
    if !args.iter().any(|arg| arg == "--bench") {
        return;
    }
    let valgrind = Command::new("valgrind").arg("--version").output();
    if !valgrind.is_ok_and(|output| output.status.success()) {
        println!(
            "instructions bench skipped: valgrind is not on the PATH (apt-get install valgrind)"
        );
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|arg| !arg.starts_with("--")).collect();
    let out = target_dir().join("callgrind");
    std::fs::create_dir_all(&out).unwrap();
    mint(&out);
    let me = std::env::current_exe().unwrap();
    println!(
        "{:<36} {:>14} {:>10} {:>12} {:>10}",
        "case", "instr/request", "÷ bare", "ns/request", "÷ bare"
    );
    let mut bare: Option<(f64, f64)> = None;
    for case in CASES {
        if !filters.is_empty() && !filters.iter().any(|f| case.contains(f.as_str())) {
            continue;
        }
        let native = Command::new(&me)
            .args(["--case", case])
            .env("INSTRUCTIONS_DIR", &out)
            .output()
            .unwrap();
        let native_out = String::from_utf8_lossy(&native.stdout);
        if let Some(reason) = native_out.strip_prefix("skip: ") {
            println!("{case:<36} skipped: {}", reason.trim());
            continue;
        }
        assert!(native.status.success(), "{case}: {native:?}");
        let ns: f64 = value(&native_out, "ns_per_request").expect("the child's time");
        let file = out.join(format!("{}.out", case.replace(['/', '+'], "_")));
        let counted = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg("--toggle-collect=*measured_requests*")
            .arg(format!("--callgrind-out-file={}", file.display()))
            .arg(&me)
            .args(["--case", case])
            .env("INSTRUCTIONS_DIR", &out)
            .output()
            .unwrap();
        assert!(
            counted.status.success(),
            "{case} under callgrind: {counted:?}"
        );
        let profile = std::fs::read_to_string(&file).unwrap();
        let total: f64 = profile
            .lines()
            .find_map(|line| line.strip_prefix("totals: "))
            .or_else(|| {
                profile
                    .lines()
                    .find_map(|line| line.strip_prefix("summary: "))
            })
            .and_then(|line| line.split_whitespace().next()?.parse().ok())
            .expect("callgrind's totals");
        let per_request = total / REQUESTS as f64;
        let base = *bare.get_or_insert((per_request, ns));
        println!(
            "{case:<36} {per_request:>14.0} {:>9.2}× {ns:>12.0} {:>9.2}×",
            per_request / base.0,
            ns / base.1
        );
    }
    println!("profiles: {} (callgrind_annotate <file>)", out.display());
}

/// Signs the tokens once, natively (RSA signing under callgrind would take minutes): the
/// issuer and its public key in `issuer.txt`, a session token per user in `sessions.txt`, one
/// with an active organization per user in `orgs.txt`, and a second session token per user in
/// `fresh.txt`.
fn mint(dir: &std::path::Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let issuer = rt.block_on(DevIssuer::start()).unwrap();
    let exp = unix_now() + 3600;
    let user = |i: usize| format!("user_bench_{i}");
    let sessions: Vec<String> = (0..USERS)
        .map(|i| issuer.token_for(&user(i)).claim("exp", exp).build())
        .collect();
    let orgs: Vec<String> = (0..USERS)
        .map(|i| {
            issuer
                .token_for(&user(i))
                .claim("exp", exp)
                .organization("org_bench", "bench", "member", &["org:invoices:read"])
                .build()
        })
        .collect();
    let issuer_file = format!("{}\n{}", issuer.issuer(), issuer.public_key_pem());
    std::fs::write(dir.join("issuer.txt"), issuer_file).unwrap();
    std::fs::write(dir.join("sessions.txt"), sessions.join("\n")).unwrap();
    std::fs::write(dir.join("orgs.txt"), orgs.join("\n")).unwrap();
    // A second token per user (new `sid` and `iat`), never seen by the warm-up.
    let fresh: Vec<String> = (0..USERS)
        .map(|i| issuer.token_for(&user(i)).claim("exp", exp).build())
        .collect();
    std::fs::write(dir.join("fresh.txt"), fresh.join("\n")).unwrap();
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `key=value` from the child's output.
fn value(output: &str, key: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))?
        .trim()
        .parse()
        .ok()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

/// Sets `case` up, warms it, and runs the counted requests.
fn child(case: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if case == "rsa_floor" {
        rsa_floor();
        return;
    }
    let Some((app, credentials)) = rt.block_on(setup(case)) else {
        return;
    };
    // The new-token case warms its users with their first tokens and counts their second.
    let fresh;
    let counted = if case == "layer/new_token_cached_user" {
        fresh = lines("fresh.txt");
        &fresh
    } else {
        &credentials
    };
    rt.block_on(async {
        for credential in &credentials {
            let response = app
                .clone()
                .oneshot(common::request(credential))
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "{case}: {}",
                response.status()
            );
        }
    });
    // Built outside the counted region: the requests are the same for every case.
    let requests: Vec<Request<Body>> = (0..REQUESTS)
        .map(|n| common::request(&counted[n % counted.len()]))
        .collect();
    let elapsed = measured_requests(&rt, &app, requests);
    println!(
        "ns_per_request={}",
        elapsed.as_nanos() as f64 / REQUESTS as f64
    );
}

/// A file the parent minted (in `INSTRUCTIONS_DIR`).
fn read(name: &str) -> String {
    let dir = PathBuf::from(std::env::var_os("INSTRUCTIONS_DIR").expect("INSTRUCTIONS_DIR"));
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// The lines of a file the parent minted.
fn lines(name: &str) -> Vec<String> {
    read(name).lines().map(str::to_owned).collect()
}

/// The floor of a new token: its RSA signature checked with a key parsed once, for the
/// tokens `layer/new_token_cached_user` counts.
fn rsa_floor() {
    use base64::Engine as _;
    let issuer_file = read("issuer.txt");
    let (_issuer, pem) = issuer_file.split_once('\n').unwrap();
    let key = common::rsa_key(pem);
    let signed: Vec<(String, Vec<u8>)> = lines("fresh.txt")
        .iter()
        .map(|token| {
            let (input, signature) = token.rsplit_once('.').unwrap();
            let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(signature)
                .unwrap();
            (input.to_owned(), signature)
        })
        .collect();
    let elapsed = measured_requests_rsa(&key, &signed);
    println!(
        "ns_per_request={}",
        elapsed.as_nanos() as f64 / REQUESTS as f64
    );
}

/// The counted region of `rsa_floor`: one verification per token.
#[inline(never)]
fn measured_requests_rsa(
    key: &aws_lc_rs::signature::ParsedPublicKey,
    signed: &[(String, Vec<u8>)],
) -> Duration {
    let started = Instant::now();
    for n in 0..REQUESTS {
        let (input, signature) = &signed[n % signed.len()];
        key.verify_sig(input.as_bytes(), signature).unwrap();
    }
    started.elapsed()
}

/// The counted region: every request through `app`, each response dropped.
#[inline(never)]
fn measured_requests(
    rt: &tokio::runtime::Runtime,
    app: &Router,
    requests: Vec<Request<Body>>,
) -> Duration {
    let started = Instant::now();
    rt.block_on(async {
        for request in requests {
            let response = app.clone().oneshot(request).await.unwrap();
            std::hint::black_box(response);
        }
    });
    started.elapsed()
}

/// The router of `case` and the credentials it rotates through; `None` (after printing
/// `skip: <reason>`) when a service it needs is missing.
async fn setup(case: &str) -> Option<(Router, Vec<String>)> {
    let issuer_file = read("issuer.txt");
    let (issuer, pem) = issuer_file.split_once('\n').unwrap();
    let config = clerk_sync::ClerkConfig::builder()
        .issuer(issuer)
        .jwt_key_pem(pem)
        .authorized_parties([clerk_sync::testing::DEV_AUTHORIZED_PARTY])
        .build()
        .unwrap();
    let user = |i: usize| format!("user_bench_{i}");
    let sessions = || lines("sessions.txt");
    let fake = FakeClerkApi::start(0).await.unwrap();
    let clerk = ClerkSync::builder(config, MemoryUserStore::new())
        .token_cache_capacity(100_000)
        .clerk_api(fake.client())
        .profile_source(ProfileSource::Claims)
        .machine_token_budget(u32::MAX, u32::MAX)
        .machine_token_cache_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let route = || Router::new().route("/me", get(handler));
    // A tier's size of limit that no request here reaches (two requests per user).
    let generous = || TierLimits::new(Limit::new(1_000, Duration::from_secs(1)).unwrap());
    let limited = |limiter: RateLimitLayer| {
        route().layer(
            tower::ServiceBuilder::new()
                .layer(clerk.layer())
                .layer(limiter),
        )
    };
    let app = match case {
        "bare" => (route(), sessions()),
        "layer/both_hit" | "layer/new_token_cached_user" => {
            (route().layer(clerk.layer()), sessions())
        }
        "layer/org_hit" | "layer/guarded_hit" => {
            let tokens = lines("orgs.txt");
            let app = if case == "layer/org_hit" {
                route().layer(clerk.layer())
            } else {
                route().layer(
                    tower::ServiceBuilder::new()
                        .layer(clerk.layer())
                        .layer(clerk.require(Check::permission("org:invoices:read"))),
                )
            };
            (app, tokens)
        }
        "layer/api_key_hit" => {
            let keys = (0..USERS)
                .map(|i| {
                    let key = format!("ak_bench{i:024x}");
                    fake.add_machine_token(
                        &key,
                        TokenType::ApiKey,
                        FakeClerkApi::api_key_answer(&user(i)),
                    );
                    key
                })
                .collect();
            let layer = clerk
                .layer()
                .accepts([TokenType::SessionToken, TokenType::ApiKey]);
            (route().layer(layer), keys)
        }
        "layer/both_hit+ratelimit_memory" => {
            (limited(RateLimitLayer::per_tier(generous())), sessions())
        }
        "layer/both_hit+ratelimit_postgres" => {
            let Ok(url) = std::env::var("DATABASE_URL") else {
                println!("skip: DATABASE_URL is not set");
                return None;
            };
            let pool = common::bench_pool(&url, PgPoolOptions::new().max_connections(2)).await;
            let store = PgRateLimitStore::new(pool);
            (
                limited(RateLimitLayer::with_store(generous(), store)),
                sessions(),
            )
        }
        "layer/both_hit+ratelimit_redis" => {
            let url =
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let run = format!("{:x}", unix_now());
            let store = RedisRateLimitStore::new(&url)
                .unwrap()
                .key_prefix(format!("clerk_sync_instructions:{run}:"));
            if let Err(error) = store.ping().await {
                println!("skip: {error}");
                return None;
            }
            (
                limited(RateLimitLayer::with_store(generous(), store)),
                sessions(),
            )
        }
        other => panic!("unknown case {other}"),
    };
    // The fake serves on this runtime; keep it for the process's life.
    std::mem::forget(fake);
    // As `axum::serve` does (`into_make_service`): every route made a `Route` once, rather
    // than the handler boxed and the layers applied again on every call.
    let (router, credentials) = app;
    Some((router.with_state(()), credentials))
}
