//! The rate limiter behind the sync layer, on every store, against the real PostgreSQL (and
//! the real Redis for the Redis store; more of it in `tests/redis.rs`).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use axum::routing::get;
use clerk_sync::ratelimit::{
    AnonymousPolicy, Decision, RateLimitKey, RateLimitRejection, RateLimitStore, StoreFailurePolicy,
};
use clerk_sync::store::StoreFuture;
use clerk_sync::testing::DevIssuer;
use clerk_sync::{
    ClerkSync, ClerkUser, ClientAddress, Limit, PgRateLimitStore, PgUserStore, RateLimitLayer,
    RedisRateLimitStore, TierLimit, TierLimits,
};
use common::{Capture, CountingStore, Reply, clerk, error_code, get_with_token, send};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::task::JoinSet;
use tower::{ServiceBuilder, ServiceExt};

fn limits(free: Limit) -> TierLimits {
    TierLimits::new(free)
        .tier("pro", Limit::per_minute(600).unwrap())
        .tier("staff", TierLimit::Unlimited)
}

/// `/me` behind sync (outermost) then the limiter; `/anon` behind the optional sync layer.
fn limited_app(clerk: &ClerkSync, limiter: RateLimitLayer) -> Router {
    let me = Router::new()
        .route(
            "/me",
            get(|user: ClerkUser| async move { user.tier().to_owned() }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(clerk.layer())
                .layer(limiter.clone()),
        );
    let anon = Router::new()
        .route("/anon", get(|| async { "anonymous ok" }))
        .layer(
            ServiceBuilder::new()
                .layer(clerk.optional_layer())
                .layer(limiter),
        );
    me.merge(anon)
}

fn header_u64(reply: &Reply, name: &str) -> u64 {
    reply.headers[name].to_str().unwrap().parse().unwrap()
}

async fn sync_and_clerk(pool: &PgPool) -> (DevIssuer, ClerkSync, CountingStore) {
    clerk_sync::migrate(pool).await.unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let store = CountingStore::new(pool.clone());
    let clerk = clerk(&issuer, store.clone(), |b| b);
    (issuer, clerk, store)
}

/// N requests pass with counting-down headers, the next gets 429 with `Retry-After`, and the
/// budget comes back after the period.
async fn exactly_n_then_429_then_refill(router: &Router, token: &str) {
    let n = 3;
    for remaining in (0..n).rev() {
        let reply = get_with_token(router, "/me", Some(token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(header_u64(&reply, "ratelimit-limit"), n);
        assert_eq!(header_u64(&reply, "ratelimit-remaining"), remaining);
        assert!(header_u64(&reply, "ratelimit-reset") <= 2);
    }
    let refused = get_with_token(router, "/me", Some(token)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&refused), "rate_limited");
    assert_eq!(header_u64(&refused, "ratelimit-remaining"), 0);
    // 3 per 2 s: one request's worth returns within 2/3 s, so `Retry-After` rounds up to 1.
    assert_eq!(header_u64(&refused, "retry-after"), 1);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    for _ in 0..n {
        assert_eq!(
            get_with_token(router, "/me", Some(token)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        get_with_token(router, "/me", Some(token)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[sqlx::test(migrations = false)]
async fn memory_store_admits_exactly_the_limit(pool: PgPool) {
    let (issuer, clerk, _) = sync_and_clerk(&pool).await;
    let limit = Limit::new(3, Duration::from_secs(2)).unwrap();
    let router = limited_app(&clerk, RateLimitLayer::per_tier(limits(limit)));
    exactly_n_then_429_then_refill(&router, &issuer.token("user_mem")).await;
}

#[sqlx::test(migrations = false)]
async fn postgres_store_admits_exactly_the_limit(pool: PgPool) {
    let (issuer, clerk, _) = sync_and_clerk(&pool).await;
    let limit = Limit::new(3, Duration::from_secs(2)).unwrap();
    let limiter = RateLimitLayer::with_store(limits(limit), PgRateLimitStore::new(pool.clone()));
    let router = limited_app(&clerk, limiter);
    exactly_n_then_429_then_refill(&router, &issuer.token("user_pg")).await;
}

#[sqlx::test(migrations = false)]
async fn redis_store_admits_exactly_the_limit(pool: PgPool) {
    let (issuer, clerk, _) = sync_and_clerk(&pool).await;
    let limit = Limit::new(3, Duration::from_secs(2)).unwrap();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("clerk_sync_test:exact:{}:", std::process::id());
    let store = RedisRateLimitStore::new(&url).unwrap().key_prefix(&prefix);
    let limiter = RateLimitLayer::with_store(limits(limit), store);
    let router = limited_app(&clerk, limiter.clone());
    exactly_n_then_429_then_refill(&router, &issuer.token("user_redis")).await;
    assert_eq!(limiter.stats().store_failures, 0);

    // One key, named `<prefix>{user:<id>}`, expiring when the budget is full again.
    let mut redis = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("{prefix}{{user:user_redis}}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((1..=2000).contains(&ttl), "PTTL {ttl} ms");
    tokio::time::sleep(Duration::from_millis(u64::try_from(ttl).unwrap() + 50)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(exists, 0, "nothing left to clean once the budget is back");
}

#[sqlx::test(migrations = false)]
async fn a_new_users_first_request_is_counted_after_its_row_exists(pool: PgPool) {
    let (issuer, clerk, store) = sync_and_clerk(&pool).await;
    let limiter = RateLimitLayer::with_store(
        limits(Limit::per_minute(5).unwrap()),
        PgRateLimitStore::new(pool.clone()),
    );
    let router = limited_app(&clerk, limiter);
    let reply = get_with_token(&router, "/me", Some(&issuer.token("user_brand_new"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(header_u64(&reply, "ratelimit-remaining"), 4);
    assert_eq!(store.calls(), 1);
    // The limiter's row is keyed by the namespaced user id.
    let limited: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM clerk_rate_limits WHERE key = 'user:user_brand_new')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(limited);
}

/// A Postgres limiter store that, at every check, looks up whether the user's row already
/// exists in `table`: the proof, with no foreign key, that the limiter runs after sync.
#[derive(Clone)]
struct RowCheckingStore {
    inner: PgRateLimitStore,
    pool: PgPool,
    table: &'static str,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
}

impl RateLimitStore for RowCheckingStore {
    fn check<'a>(&'a self, key: RateLimitKey<'a>, limit: Limit) -> StoreFuture<'a, Decision> {
        Box::pin(async move {
            if let RateLimitKey::User(id) = key {
                let sql = format!("SELECT EXISTS (SELECT 1 FROM {} WHERE id = $1)", self.table);
                let exists: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await
                    .unwrap();
                self.seen.lock().unwrap().push((id.to_owned(), exists));
            }
            self.inner.check(key, limit).await
        })
    }
}

#[sqlx::test(migrations = false)]
async fn the_postgres_limiter_works_with_a_custom_users_table(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    for sql in [
        "CREATE SCHEMA app",
        "CREATE TABLE app.users (LIKE public.users INCLUDING ALL)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let issuer = DevIssuer::start().await.unwrap();
    let users = PgUserStore::new(pool.clone())
        .with_table("app.users")
        .await
        .unwrap();
    let clerk = clerk(&issuer, users, |b| b);
    let store = RowCheckingStore {
        inner: PgRateLimitStore::new(pool.clone()),
        pool: pool.clone(),
        table: "app.users",
        seen: Arc::default(),
    };
    let limiter = RateLimitLayer::with_store(
        limits(Limit::new(2, Duration::from_secs(60)).unwrap()),
        store.clone(),
    );
    let router = limited_app(&clerk, limiter.clone());
    let token = issuer.token("user_custom_table");
    for remaining in [1, 0] {
        let reply = get_with_token(&router, "/me", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(header_u64(&reply, "ratelimit-remaining"), remaining);
    }
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "limiting is on"
    );
    assert_eq!(error_code(&reply), "rate_limited");
    assert_eq!(limiter.stats().store_failures, 0);
    let seen = store.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|(id, exists)| id == "user_custom_table" && *exists),
        "the row existed at every check: {seen:?}"
    );
    let in_public: i64 = sqlx::query_scalar("SELECT count(*) FROM public.users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(in_public, 0);
}

#[sqlx::test(migrations = false)]
async fn two_processes_share_one_limit_without_over_admission(
    pool_options: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = pool_options.connect_with(options.clone()).await.unwrap();
    let (issuer, _, _) = sync_and_clerk(&pool).await;
    let mut routers = Vec::new();
    for _ in 0..2 {
        let own_pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await
            .unwrap();
        let clerk = clerk(&issuer, CountingStore::new(own_pool.clone()), |b| b);
        let limiter = RateLimitLayer::with_store(
            limits(Limit::per_hour(20).unwrap()),
            PgRateLimitStore::new(own_pool),
        );
        routers.push(limited_app(&clerk, limiter));
    }
    let token = issuer.token("user_busy");
    let mut requests = JoinSet::new();
    for i in 0..60 {
        let router = routers[i % 2].clone();
        let token = token.clone();
        requests.spawn(async move { get_with_token(&router, "/me", Some(&token)).await.status });
    }
    let mut passed = 0;
    while let Some(status) = requests.join_next().await {
        match status.unwrap() {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(passed, 20, "one combined limit across both processes");
}

#[sqlx::test(migrations = false)]
async fn tier_upgrade_applies_on_the_next_request_after_invalidate(pool: PgPool) {
    let (issuer, clerk, _) = sync_and_clerk(&pool).await;
    let router = limited_app(
        &clerk,
        RateLimitLayer::per_tier(limits(Limit::per_minute(60).unwrap())),
    );
    let token = issuer.token("user_upgrading");
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(header_u64(&reply, "ratelimit-limit"), 60);

    sqlx::query("UPDATE users SET tier = 'pro' WHERE id = 'user_upgrading'")
        .execute(&pool)
        .await
        .unwrap();
    clerk.invalidate("user_upgrading").await.unwrap();
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(header_u64(&reply, "ratelimit-limit"), 600);

    sqlx::query("UPDATE users SET tier = 'staff' WHERE id = 'user_upgrading'")
        .execute(&pool)
        .await
        .unwrap();
    clerk.invalidate("user_upgrading").await.unwrap();
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        !reply.headers.contains_key("ratelimit-limit"),
        "unlimited tiers get no headers"
    );
}

#[sqlx::test(migrations = false)]
async fn members_share_their_organizations_budget_under_its_tier(pool: PgPool) {
    let (issuer, clerk, _) = sync_and_clerk(&pool).await;
    let limiter =
        RateLimitLayer::per_tier(limits(Limit::per_minute(3).unwrap())).per_organization();
    let router = limited_app(&clerk, limiter);
    let member = |user: &str, org: &str| {
        issuer
            .token_for(user)
            .claim("v", 2)
            .organization(org, "acme", "member", &[])
            .build()
    };
    let (ada, bo) = (
        member("user_ada", "org_acme"),
        member("user_bo", "org_acme"),
    );
    let mut codes = Vec::new();
    for token in [&ada, &bo, &ada, &bo] {
        codes.push(
            get_with_token(&router, "/me", Some(token))
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(codes, [200, 200, 200, 429], "one budget for both members");
    // Another organization, and a user without one, have their own budgets.
    let other = member("user_cy", "org_other");
    assert_eq!(
        get_with_token(&router, "/me", Some(&other)).await.status,
        StatusCode::OK
    );
    let solo = issuer.token("user_ada");
    assert_eq!(
        get_with_token(&router, "/me", Some(&solo)).await.status,
        StatusCode::OK
    );
    // The organization's tier, not the member's, sets the limit.
    assert_eq!(
        header_u64(
            &get_with_token(&router, "/me", Some(&other)).await,
            "ratelimit-limit"
        ),
        3
    );
    sqlx::query("UPDATE organizations SET tier = 'pro' WHERE id = 'org_other'")
        .execute(&pool)
        .await
        .unwrap();
    clerk.invalidate("org_other").await.unwrap();
    let reply = get_with_token(&router, "/me", Some(&other)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header_u64(&reply, "ratelimit-limit"), 600);
}

#[sqlx::test(migrations = false)]
async fn wrong_layer_order_is_a_500_that_says_how_to_fix_it(pool: PgPool) {
    let (issuer, clerk, store) = sync_and_clerk(&pool).await;
    // Router::layer: the last call is outermost, so here the limiter runs first.
    let router = Router::new()
        .route("/me", get(|| async { "unreachable" }))
        .layer(clerk.layer())
        .layer(RateLimitLayer::per_tier(limits(
            Limit::per_minute(60).unwrap(),
        )));
    let reply = get_with_token(&router, "/me", Some(&issuer.token("user_x"))).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(&reply), "rate_limit_misconfigured");
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("clerk.layer()") && message.contains("before"),
        "{message}"
    );
    assert_eq!(store.calls(), 0);
}

#[sqlx::test(migrations = false)]
async fn anonymous_requests_pass_or_are_limited_by_ip(pool: PgPool) {
    let (_, clerk, _) = sync_and_clerk(&pool).await;
    let free = limits(Limit::per_minute(60).unwrap());
    let open = limited_app(&clerk, RateLimitLayer::per_tier(free.clone()));
    for _ in 0..3 {
        let reply = get_with_token(&open, "/anon", None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!reply.headers.contains_key("ratelimit-limit"));
    }

    let by_ip = RateLimitLayer::per_tier(free)
        .anonymous(AnonymousPolicy::ByIp(Limit::per_minute(2).unwrap()));
    let router = limited_app(&clerk, by_ip);
    let from = |ip: [u8; 4]| {
        let mut request = Request::get("/anon").body(Body::empty()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        request
    };
    assert_eq!(
        send(&router, from([10, 0, 0, 1])).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&router, from([10, 0, 0, 1])).await.status,
        StatusCode::OK
    );
    let refused = send(&router, from([10, 0, 0, 1])).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&refused), "rate_limited");
    assert_eq!(
        send(&router, from([10, 0, 0, 2])).await.status,
        StatusCode::OK
    );

    // Without ConnectInfo the IP policy cannot work, and says so.
    let reply = get_with_token(&router, "/anon", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("connect_info")
    );
}

/// `/anon` from `peer`, with extra headers.
fn anon_from(peer: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::get("/anon");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::empty()).unwrap();
    let peer: std::net::IpAddr = peer.parse().unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
    request
}

/// Sends each request and returns their statuses.
async fn statuses(router: &Router, requests: Vec<Request<Body>>) -> Vec<u16> {
    let mut out = Vec::new();
    for request in requests {
        out.push(send(router, request).await.status.as_u16());
    }
    out
}

#[sqlx::test(migrations = false)]
async fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4(pool: PgPool) {
    let (issuer, _, store) = sync_and_clerk(&pool).await;
    let clerk = clerk(&issuer, store, |b| b);
    let by_ip = RateLimitLayer::with_store(
        limits(Limit::per_minute(60).unwrap()),
        PgRateLimitStore::new(pool.clone()),
    )
    .anonymous(AnonymousPolicy::ByIp(Limit::per_minute(2).unwrap()));
    let router = limited_app(&clerk, by_ip);
    // Three addresses of one /64: one budget of 2. Another /64 has its own.
    let rotating = vec![
        anon_from("2001:db8:1:2::1", &[]),
        anon_from("2001:db8:1:2:ffff::9", &[]),
        anon_from("2001:db8:1:2:abcd:1234:5678:9abc", &[]),
        anon_from("2001:db8:1:3::1", &[]),
    ];
    assert_eq!(statuses(&router, rotating).await, [200, 200, 429, 200]);
    // An IPv4-mapped peer spends the IPv4 address's budget.
    let mapped = vec![
        anon_from("203.0.113.9", &[]),
        anon_from("::ffff:203.0.113.9", &[]),
        anon_from("::ffff:203.0.113.9", &[]),
    ];
    assert_eq!(statuses(&router, mapped).await, [200, 200, 429]);
    let mut keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM clerk_rate_limits WHERE key LIKE 'ip:%'")
            .fetch_all(&pool)
            .await
            .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        ["ip:2001:db8:1:2::", "ip:2001:db8:1:3::", "ip:203.0.113.9"]
    );
}

#[sqlx::test(migrations = false)]
async fn forwarded_addresses_count_only_from_trusted_proxies(pool: PgPool) {
    let (issuer, _, store) = sync_and_clerk(&pool).await;
    let proxies = ClientAddress::new().trust_proxies(["10.0.0.0/8"]).unwrap();
    let clerk = clerk(&issuer, store, |b| b.client_address(proxies));
    let by_ip = RateLimitLayer::per_tier(limits(Limit::per_minute(60).unwrap()))
        .anonymous(AnonymousPolicy::ByIp(Limit::per_minute(2).unwrap()));
    let router = limited_app(&clerk, by_ip);

    // Behind the proxy: each client its own budget, whatever it prepends itself.
    let behind = vec![
        anon_from("10.0.0.1", &[("x-forwarded-for", "198.51.100.1")]),
        anon_from("10.0.0.2", &[("x-forwarded-for", "6.6.6.6, 198.51.100.1")]),
        anon_from(
            "10.0.0.1",
            &[("x-forwarded-for", "7.7.7.7, 198.51.100.1, 10.0.0.9")],
        ),
        anon_from("10.0.0.1", &[("x-forwarded-for", "198.51.100.2")]),
        anon_from("10.0.0.1", &[("forwarded", "for=\"[2001:db8::5]:443\"")]),
    ];
    assert_eq!(statuses(&router, behind).await, [200, 200, 429, 200, 200]);

    // An untrusted peer is keyed by its own address: headers it sends are ignored.
    let direct = vec![
        anon_from("203.0.113.50", &[("x-forwarded-for", "198.51.100.3")]),
        anon_from("203.0.113.50", &[("x-forwarded-for", "198.51.100.4")]),
        anon_from("203.0.113.50", &[("forwarded", "for=198.51.100.5")]),
    ];
    assert_eq!(statuses(&router, direct).await, [200, 200, 429]);
}

#[sqlx::test(migrations = false)]
async fn store_failures_pass_by_default_or_answer_503(pool: PgPool) {
    let (issuer, clerk, _) = sync_and_clerk(&pool).await;
    sqlx::query("DROP TABLE clerk_rate_limits")
        .execute(&pool)
        .await
        .unwrap();
    let free = limits(Limit::per_minute(60).unwrap());
    let token = issuer.token("user_outage");

    let capture = Capture::default();
    let guard = tracing::subscriber::set_default(capture.subscriber());
    let lenient = RateLimitLayer::with_store(free.clone(), PgRateLimitStore::new(pool.clone()));
    let router = limited_app(&clerk, lenient.clone());
    for _ in 0..5 {
        let reply = get_with_token(&router, "/me", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!reply.headers.contains_key("ratelimit-limit"));
    }
    drop(guard);
    // Impossible to miss, without a line per request: one error line with the count, and a
    // counter.
    assert_eq!(lenient.stats().store_failures, 5);
    let logs = capture.text();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("rate-limit store failing"))
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(
        lines[0].contains("ERROR") && lines[0].contains("UNLIMITED"),
        "{}",
        lines[0]
    );

    let strict = RateLimitLayer::with_store(free, PgRateLimitStore::new(pool.clone()))
        .on_store_failure(StoreFailurePolicy::Deny);
    let reply = get_with_token(&limited_app(&clerk, strict), "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&reply), "rate_limit_unavailable");
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
}

#[tokio::test]
async fn on_rejection_shapes_the_limiters_answers_and_the_crate_keeps_its_headers() {
    let issuer = DevIssuer::start().await.unwrap();
    let clerk = clerk(&issuer, clerk_sync::MemoryUserStore::new(), |b| b);
    let limiter = RateLimitLayer::per_tier(limits(Limit::per_minute(1).unwrap())).on_rejection(
        |rejection: &RateLimitRejection| {
            let body = format!("slow down: {} ({})", rejection.code(), rejection.message());
            (rejection.status(), body).into_response()
        },
    );
    let router = limited_app(&clerk, limiter);
    let token = issuer.token("user_hook");
    assert_eq!(
        get_with_token(&router, "/me", Some(&token)).await.status,
        StatusCode::OK
    );
    let response = router
        .clone()
        .oneshot(
            Request::get("/me")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let headers = response.headers().clone();
    assert_eq!(headers["ratelimit-limit"], "1");
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert!(
        headers.contains_key(header::RETRY_AFTER),
        "added by the crate"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).starts_with("slow down: rate_limited (rate limit of 1/m"),
        "{body:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn the_cleanup_deletes_only_rows_whose_budget_is_back(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let store = PgRateLimitStore::new(pool.clone());
    let short = Limit::new(1, Duration::from_millis(300)).unwrap();
    let long = Limit::per_hour(1).unwrap();
    store
        .check(RateLimitKey::User("user_short"), short)
        .await
        .unwrap();
    store
        .check(RateLimitKey::User("user_long"), long)
        .await
        .unwrap();
    assert_eq!(
        store.delete_expired().await.unwrap(),
        0,
        "both budgets are spent"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.delete_expired().await.unwrap(), 1);
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM clerk_rate_limits")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(keys, ["user:user_long"]);
}
