//! End to end: the quickstart example as a child process with an empty environment (only
//! `PATH` and `HOME`): it must start a dev issuer and a SQLite file on its own, print a working
//! `curl`, and put the user's row in that file.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// `cargo test` builds the examples next to the test binaries' `deps` folder.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join("examples").join(name)
}

#[tokio::test]
async fn quickstart_runs_on_a_fresh_machine_with_nothing_configured() {
    let (mut child, dir, _, mut lines) = start_example("quickstart", &[]).await;
    // Read until both ready-to-paste `curl` lines appear: the session's, then the API key's.
    let (curl, api_curl) = tokio::time::timeout(Duration::from_secs(60), async {
        let mut printed = Vec::new();
        let mut session = None;
        while let Some(line) = lines.recv().await {
            if line
                .trim_start()
                .starts_with("curl -H 'Authorization: Bearer ")
            {
                match session.take() {
                    None => session = Some(line),
                    Some(first) => return (first, line),
                }
                continue;
            }
            printed.push(line);
        }
        panic!(
            "the quickstart exited without two curl lines:\n{}",
            printed.join("\n")
        );
    })
    .await
    .expect("no curl lines within 60 s");

    // curl -H 'Authorization: Bearer <token>' http://<addr>/me
    let (header, url) = curl.trim().rsplit_once("' ").unwrap();
    let token = header.rsplit_once("Bearer ").unwrap().1;
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/me"),
        "{url}"
    );

    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let me: serde_json::Value = response.json().await.unwrap();
    assert_eq!(me["user_id"], "user_quickstart");
    assert_eq!(me["tier"], "free");
    assert_eq!(
        (
            me["org_id"].as_str(),
            me["org_slug"].as_str(),
            me["org_role"].as_str()
        ),
        (
            Some("org_quickstart"),
            Some("quickstart"),
            Some("org:admin")
        )
    );
    assert_eq!(me["org_tier"], "free", "the organization row was synced");

    // The organization routes: a guard and `has()`.
    let base = url.trim_end_matches("/me");
    let get = |path: String| {
        let request = reqwest::Client::new().get(format!("{base}{path}"));
        async move { request.bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(get("/org/invoices".into()).await.status(), 200);
    for (query, expected) in [
        ("permission=org:invoices:read&plan=o:pro", true),
        ("role=admin&reverification=strict", true),
        ("role=member", false),
        ("permission=org:invoices:manage", false),
        ("", false),
    ] {
        let answer: serde_json::Value = get(format!("/authorize?{query}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(answer["has"], expected, "{query}");
    }
    assert_eq!(get("/authorize?colour=blue".into()).await.status(), 400);

    // The dev API key on `/api/me`: a user-backed API consumer, synced, with its scopes.
    let (header, url) = api_curl.trim().rsplit_once("' ").unwrap();
    let key = header.rsplit_once("Bearer ").unwrap().1;
    assert!(
        key.starts_with("ak_") && url.ends_with("/api/me"),
        "{api_curl}"
    );
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let api_me: serde_json::Value = response.json().await.unwrap();
    assert_eq!(api_me["token_type"], "api_key");
    assert!(
        api_me["user_id"].as_str().unwrap().starts_with("user_"),
        "{api_me}"
    );
    assert_eq!(api_me["tier"], "free");
    assert_eq!(api_me["scopes"], serde_json::json!(["read", "write"]));
    assert_eq!(api_me["machine_id"], serde_json::Value::Null);
    // `/me` stays session-only.
    let response = reqwest::Client::new()
        .get(url.replace("/api/me", "/me"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Health and metrics, outside the auth layer.
    let health: serde_json::Value = reqwest::get(format!("{base}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["store"]["reachable"], true);
    assert_eq!(health["keys"]["last_fetch"], "ok");
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "clerk_sync_requests_total{outcome=\"synced\"}",
        "clerk_sync_upserts_total{result=\"ok\"}",
        "clerk_sync_jwks_fetches_total{result=\"ok\"} 1",
        "clerk_sync_cached_sessions",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    // The row is in the SQLite file the quickstart created in its working directory.
    let file = dir.path().join("clerk-sync-quickstart.db");
    assert!(file.exists(), "no SQLite file in {}", dir.path().display());
    let store = clerk_sync::SqliteUserStore::open(file.to_str().unwrap())
        .await
        .unwrap();
    let row: (String, Option<String>) =
        sqlx::query_as("SELECT tier, email FROM users WHERE id = 'user_quickstart'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(row.0, "free");
    assert_eq!(row.1.as_deref(), Some("user_quickstart@example.com"));

    child.kill().await.unwrap();
}

/// Starts example `name` in an empty temporary directory with only `PATH`, `HOME` and `env`
/// set, and reads its output until `listening on <addr>`; the lines printed after it come on
/// the returned channel (the output is drained, so the child never blocks on a full pipe).
async fn start_example(
    name: &str,
    env: &[(&str, &str)],
) -> (
    tokio::process::Child,
    tempfile::TempDir,
    String,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let binary = example(name);
    assert!(
        binary.exists(),
        "{} is missing: run the README's test command (`cargo test` builds the examples)",
        binary.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(&binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        let mut printed = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("listening on ") {
                return format!("http://{addr}");
            }
            printed.push(line);
        }
        panic!("{name} exited before listening:\n{}", printed.join("\n"));
    })
    .await
    .expect("not listening within 60 s");
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = sender.send(line);
        }
    });
    (child, dir, base, receiver)
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test]
async fn the_rate_limited_example_limits_through_redis() {
    let (mut child, _dir, base, _lines) = start_example(
        "rate_limited_api",
        &[
            ("RATE_LIMIT_STORE", "redis"),
            ("REDIS_URL", &redis_url()),
            ("RATE_LIMITS", "free=3/h"),
        ],
    )
    .await;
    // A user of its own: the example's keys use the default prefix.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let user = format!("user_example_{nanos}");
    let http = reqwest::Client::new();
    let token = http
        .get(format!("{base}/dev/token/{user}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let response = http
            .get(format!("{base}/me"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        last = Some(response);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let refused = last.unwrap();
    assert_eq!(refused.headers()["retry-after"], "1200");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");

    let mut redis = redis::Client::open(redis_url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("clerk_sync:rl:{{user:{user}}}");
    let deleted: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(deleted, 1, "the budget lived in Redis under {key}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn the_webhooks_example_publishes_evictions_on_redis() {
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut subscriber = client.get_async_pubsub().await.unwrap();
    subscriber.subscribe("clerk_sync_users").await.unwrap();
    let (mut child, _dir, _base, mut lines) = start_example(
        "webhooks",
        &[("INVALIDATION", "redis"), ("REDIS_URL", &redis_url())],
    )
    .await;
    // The example prints a signed `curl` delivering `user.updated`:
    // curl -X POST <url> -H '…' -H 'svix-id: …' -H 'svix-timestamp: …' -H 'svix-signature: …' -d '<body>'
    let curl = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.recv().await {
            if line.trim_start().starts_with("curl -X POST") {
                return line;
            }
        }
        panic!("no webhook curl printed");
    })
    .await
    .unwrap();
    let url = curl.split_whitespace().nth(3).unwrap().to_owned();
    let header = |name: &str| {
        let start = curl.find(&format!("-H '{name}: ")).unwrap() + name.len() + 6;
        curl[start..].split('\'').next().unwrap().to_owned()
    };
    let body = curl
        .split_once(" -d '")
        .unwrap()
        .1
        .trim_end()
        .trim_end_matches('\'');
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("svix-id", header("svix-id"))
        .header("svix-timestamp", header("svix-timestamp"))
        .header("svix-signature", header("svix-signature"))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    use futures_util::StreamExt as _;
    let mut messages = subscriber.on_message();
    let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("no eviction published on Redis")
        .unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "user_quickstart");
    child.kill().await.unwrap();
}

#[test]
fn the_alert_rules_use_only_documented_metric_names() {
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/alerts.yml"),
    )
    .unwrap();
    let known = [
        clerk_sync::metrics::REQUESTS,
        clerk_sync::metrics::REJECTIONS,
        clerk_sync::metrics::UPSERTS,
        clerk_sync::metrics::SYNC_DURATION,
        clerk_sync::metrics::JWKS_FETCHES,
        clerk_sync::metrics::BACKEND_API_REQUESTS,
        clerk_sync::metrics::WEBHOOKS,
        clerk_sync::metrics::RATE_LIMIT_DECISIONS,
        clerk_sync::metrics::INVALIDATIONS,
        clerk_sync::metrics::CACHED_USERS,
        clerk_sync::metrics::CACHED_SESSIONS,
    ];
    let mut used = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("clerk_sync_") {
            assert!(
                known.contains(&word),
                "examples/alerts.yml uses an unknown metric: {word}"
            );
            used += 1;
        }
    }
    assert!(
        used >= 6,
        "the rules reference the metrics ({used} references)"
    );
}
