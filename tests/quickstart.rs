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
    let binary = example("quickstart");
    assert!(
        binary.exists(),
        "{} is missing: run the README's test command (`cargo test` builds the examples)",
        binary.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(&binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Read until both ready-to-paste `curl` lines appear: the session's, then the API key's.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (curl, api_curl) = tokio::time::timeout(Duration::from_secs(60), async {
        let mut printed = Vec::new();
        let mut session = None;
        while let Some(line) = lines.next_line().await.unwrap() {
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
    // Keep draining the child's output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

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
