//! The `clerk-sync` binary: `migrate`, `backfill` and `verify`, their output and exit codes,
//! run as a real process against the test's PostgreSQL database and `FakeClerkApi`.
#![allow(clippy::unwrap_used)]

use std::process::Output;

use clerk_sync::testing::{DevIssuer, FakeClerkApi, Fault};
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

/// The URL of the database `#[sqlx::test]` created for this test.
async fn database_url(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").unwrap();
    let server = base.rsplit_once('/').unwrap().0;
    format!("{server}/{name}")
}

/// The command with a clean Clerk environment (nothing inherited from the developer's shell).
fn clerk_sync() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clerk-sync"));
    for name in [
        "DATABASE_URL",
        "CLERK_SECRET_KEY",
        "CLERK_API_URL",
        "CLERK_PUBLISHABLE_KEY",
        "CLERK_JWT_KEY",
        "CLERK_JWKS_URL",
        "CLERK_ISSUER",
        "CLERK_AUTHORIZED_PARTIES",
    ] {
        command.env_remove(name);
    }
    command.env("RUST_LOG", "warn");
    command.kill_on_drop(true);
    command
}

/// The command on database `url` and the Backend API `fake`.
fn against(url: &str, fake: &FakeClerkApi) -> Command {
    let mut command = clerk_sync();
    command
        .env("DATABASE_URL", url)
        .env("CLERK_SECRET_KEY", FakeClerkApi::SECRET_KEY)
        .env("CLERK_API_URL", fake.url());
    command
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn backfill_json(url: &str, fake: &FakeClerkApi, extra: &[&str]) -> (i32, Value) {
    let output = against(url, fake)
        .args(["backfill", "--json", "--page-size", "100"])
        .args(extra)
        .output()
        .await
        .unwrap();
    let summary = serde_json::from_str(stdout(&output).trim())
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(&output), stderr(&output)));
    (output.status.code().unwrap(), summary)
}

#[sqlx::test(migrations = false)]
async fn migrate_creates_the_tables(pool: PgPool) {
    let url = database_url(&pool).await;
    let output = clerk_sync()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(tables.contains(&"users".to_owned()), "{tables:?}");
    assert!(tables.contains(&"clerk_webhook_events".to_owned()));
    // Twice is fine.
    let again = clerk_sync()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    assert_eq!(again.status.code(), Some(0));
}

#[sqlx::test(migrations = false)]
async fn backfill_imports_reports_and_is_idempotent(pool: PgPool) {
    let url = database_url(&pool).await;
    let fake = FakeClerkApi::start(250).await.unwrap();

    let (code, first) = backfill_json(&url, &fake, &[]).await;
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["fetched"], 250);
    assert_eq!(first["inserted"], 250);
    assert_eq!(first["failed"], 0);
    assert!(first["peak_rss_kib"].as_u64().unwrap() > 0);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 250);

    let (code, second) = backfill_json(&url, &fake, &[]).await;
    assert_eq!(code, 0);
    assert_eq!(second["unchanged"], 250, "{second}");
    assert_eq!(second["inserted"], 0);

    // The human summary names every count.
    let output = against(&url, &fake)
        .args(["backfill", "--page-size", "100"])
        .output()
        .await
        .unwrap();
    let text = stdout(&output);
    for word in [
        "backfill complete",
        "fetched",
        "inserted",
        "updated",
        "unchanged",
        "skipped",
        "failed",
    ] {
        assert!(text.contains(word), "{word} missing from:\n{text}");
    }
    assert!(text.contains("unchanged        250"), "{text}");
}

#[sqlx::test(migrations = false)]
async fn backfill_organizations_adds_both_walks_to_the_report(pool: PgPool) {
    let url = database_url(&pool).await;
    let fake = FakeClerkApi::start(3).await.unwrap();
    fake.add_organization("org_a", "a", "A");
    fake.add_membership("org_a", &FakeClerkApi::user_id(0), "org:admin");
    let (code, report) = backfill_json(&url, &fake, &["--organizations"]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["inserted"], 3);
    assert_eq!(report["organizations"]["inserted"], 1, "{report}");
    assert_eq!(report["memberships"]["inserted"], 1, "{report}");
    let role: String = sqlx::query_scalar(
        "SELECT role FROM organization_memberships WHERE organization_id = 'org_a'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(role, "org:admin");
}

#[sqlx::test(migrations = false)]
async fn backfill_exits_1_when_a_page_fails_and_keeps_the_rest(pool: PgPool) {
    let url = database_url(&pool).await;
    let fake = FakeClerkApi::start(250).await.unwrap();
    fake.fail_page_at(100, Fault::ServerError(503));
    // One retry (a 0.25–0.5 s backoff) keeps the test short.
    let (code, report) = backfill_json(&url, &fake, &["--retries", "1"]).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["failed"], 100);
    assert_eq!(report["failed_pages"], 1);
    assert_eq!(report["inserted"], 150);
    assert_eq!(fake.faults_served(), 2, "the page was tried twice");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 150, "the other pages were written");
}

#[tokio::test]
async fn backfill_dry_run_into_sqlite_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("users.db").display());
    let fake = FakeClerkApi::start(120).await.unwrap();
    let (code, report) = backfill_json(&url, &fake, &["--dry-run"]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["fetched"], 120);
    assert_eq!(report["dry_run"], true);
    let store = clerk_sync::SqliteUserStore::open(&url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn usage_and_unreachable_dependencies_have_their_exit_codes() {
    // No secret key: a configuration error, exit 2, naming the variable.
    let output = clerk_sync()
        .arg("backfill")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("CLERK_SECRET_KEY"),
        "{}",
        stderr(&output)
    );

    // An unsupported URL scheme: exit 2.
    let output = clerk_sync()
        .arg("migrate")
        .env("DATABASE_URL", "mysql://localhost/db")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));

    // A database that refuses connections: exit 3.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = clerk_sync()
        .args(["migrate", "--connect-timeout", "1"])
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/x"),
        )
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));

    // Bad arguments: clap's usage error, exit 2.
    let output = clerk_sync()
        .args(["backfill", "--page-size", "501"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

async fn verify(issuer: &DevIssuer, token: &str, via_stdin: bool) -> (i32, Value) {
    let mut command = clerk_sync();
    command
        .arg("verify")
        .env("CLERK_ISSUER", issuer.issuer())
        .env("CLERK_JWKS_URL", issuer.jwks_url())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if !via_stdin {
        command.arg(token);
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if via_stdin {
        stdin.write_all(token.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let value = serde_json::from_str(stdout(&output).trim())
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(&output), stderr(&output)));
    (output.status.code().unwrap(), value)
}

#[tokio::test]
async fn verify_prints_claims_or_the_rejection_code() {
    let issuer = DevIssuer::start().await.unwrap();

    let good = issuer
        .token_for("user_cli")
        .claim("email", "cli@example.com")
        .build();
    let (code, claims) = verify(&issuer, &good, false).await;
    assert_eq!(code, 0, "{claims}");
    assert_eq!(claims["sub"], "user_cli");
    assert_eq!(claims["iss"], issuer.issuer());
    assert_eq!(
        claims["email"], "cli@example.com",
        "custom claims are printed too"
    );

    let (code, claims) = verify(&issuer, &good, true).await;
    assert_eq!(
        (code, claims["sub"].as_str()),
        (0, Some("user_cli")),
        "from stdin"
    );

    let other = DevIssuer::start().await.unwrap();
    let cases = [
        (
            issuer.token_for("u").expired_for(30).build(),
            "token_expired",
        ),
        (
            issuer.token_for("u").wrong_signature().build(),
            "invalid_signature",
        ),
        (
            issuer.token_for("u").tampered().build(),
            "invalid_signature",
        ),
        (
            issuer.token_for("u").unsigned().build(),
            "invalid_signature",
        ),
        (
            issuer
                .token_for("u")
                .claim("iss", "https://evil.example")
                .build(),
            "invalid_issuer",
        ),
        (other.token("u"), "unknown_key"),
        ("not-a-jwt".to_owned(), "malformed_token"),
    ];
    for (token, expected) in cases {
        let (code, body) = verify(&issuer, &token, false).await;
        assert_eq!(code, 1, "{expected}: {body}");
        assert_eq!(body["error"], expected, "{body}");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }

    // Machine JWTs, verified with the instance keys: type, subject, scopes and claims.
    let m2m = issuer
        .m2m_jwt_for("mch_cli")
        .claim("scopes", "mch_a mch_b")
        .build();
    let (code, body) = verify(&issuer, &m2m, false).await;
    assert_eq!(code, 0, "{body}");
    assert_eq!(
        (body["token_type"].as_str(), body["subject"].as_str()),
        (Some("m2m_token"), Some("mch_cli"))
    );
    assert_eq!(body["scopes"], serde_json::json!(["mch_a", "mch_b"]));
    let oauth = issuer.oauth_jwt_for("user_cli").build();
    let (code, body) = verify(&issuer, &oauth, false).await;
    assert_eq!(code, 0, "{body}");
    assert_eq!(body["token_type"], "oauth_token");
    assert_eq!(body["scopes"], serde_json::json!(["profile", "email"]));
    assert_eq!(body["claims"]["client_id"], "client_dev");
    let wrong_cat = issuer
        .m2m_jwt_for("mch_cli")
        .header("cat", "cl_B7d4PD222AAA")
        .build();
    let (code, body) = verify(&issuer, &wrong_cat, false).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (1, Some("invalid_token_category"))
    );

    // Keys that cannot be fetched are the server's problem: exit 3.
    issuer.stop_jwks();
    let (code, body) = verify(&issuer, &good, false).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (3, Some("keys_unavailable"))
    );
}

#[tokio::test]
async fn verify_asks_the_backend_api_about_opaque_machine_tokens() {
    use clerk_sync::TokenType;

    let fake = FakeClerkApi::start(0).await.unwrap();
    let user = "user_2xhFjEI5X2qWRvtV13BzSj8H6Dk";
    fake.add_machine_token(
        "ak_cli",
        TokenType::ApiKey,
        FakeClerkApi::api_key_answer(user),
    );
    let mut revoked = FakeClerkApi::m2m_answer("mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk");
    revoked["revoked"] = true.into();
    fake.add_machine_token("mt_cli", TokenType::M2mToken, revoked);
    let run = |token: &'static str| {
        let mut command = clerk_sync();
        command
            .args(["verify", token])
            .env("CLERK_SECRET_KEY", FakeClerkApi::SECRET_KEY)
            .env("CLERK_API_URL", fake.url())
            .env("CLERK_ISSUER", "https://clerk.example.com")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        async move {
            let output = command.output().await.unwrap();
            let value: Value = serde_json::from_str(stdout(&output).trim())
                .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(&output), stderr(&output)));
            (output.status.code().unwrap(), value)
        }
    };
    let (code, key) = run("ak_cli").await;
    assert_eq!(code, 0, "{key}");
    assert_eq!(key["token_type"], "api_key");
    assert_eq!(key["subject"], user);
    assert_eq!(key["scopes"], serde_json::json!(["read", "write"]));
    let (code, body) = run("mt_cli").await;
    assert_eq!(
        (code, body["error"].as_str()),
        (1, Some("token_revoked")),
        "{body}"
    );
    let (code, body) = run("oat_unknown").await;
    assert_eq!(
        (code, body["error"].as_str()),
        (1, Some("invalid_token")),
        "{body}"
    );
    assert_eq!(fake.unversioned_verify_requests(), 3);
}

async fn reconcile_run(url: &str, fake: &FakeClerkApi, args: &[&str]) -> (i32, String) {
    let output = against(url, fake)
        .arg("reconcile")
        .args(args)
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap(),
        format!("{}{}", stdout(&output), stderr(&output)),
    )
}

#[sqlx::test(migrations = false)]
async fn reconcile_reports_json_repairs_with_apply_and_check_alerts(pool: PgPool) {
    let url = database_url(&pool).await;
    // Rows for Clerk's first 20 users, then Clerk has 25; one row Clerk never had, and one
    // row older than Clerk's snapshot.
    let (code, _) = backfill_json(&url, &FakeClerkApi::start(20).await.unwrap(), &[]).await;
    assert_eq!(code, 0);
    let fake = FakeClerkApi::start(25).await.unwrap();
    for sql in [
        "INSERT INTO users (id, email) VALUES ('user_stranger', 's@example.com')".to_owned(),
        format!(
            "UPDATE users SET email = 'old@example.com', \
             email_version = email_version - interval '1 day' WHERE id = '{}'",
            FakeClerkApi::user_id(0)
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }

    let (code, out) = reconcile_run(&url, &fake, &["--json", "--check"]).await;
    assert_eq!(code, 1, "--check: drift found\n{out}");
    let report: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    for (key, expected) in [
        ("clerk_users", 25),
        ("missing", 5),
        ("deleted_in_clerk", 1),
        ("stale", 1),
        ("in_sync", 19),
    ] {
        assert_eq!(report[key], expected, "{key}: {report}");
    }
    assert_eq!(report["applied"], false);
    assert_eq!(report["examples"]["deleted_in_clerk"][0], "user_stranger");
    assert_eq!(report["examples"]["stale"][0], FakeClerkApi::user_id(0));
    assert_eq!(report["examples"]["missing"].as_array().unwrap().len(), 5);

    // Without --check a dry run with drift is a success; nothing was written.
    let (code, out) = reconcile_run(&url, &fake, &[]).await;
    println!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dry run: nothing was written"), "{out}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE deleted_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 21);

    // A deletion limit below the drift refuses, exit 1, nothing written.
    let (code, out) = reconcile_run(&url, &fake, &["--apply", "--max-deletes", "0"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused"), "{out}");

    // --apply --check repairs and still says drift was found.
    let (code, out) = reconcile_run(&url, &fake, &["--apply", "--json", "--check"]).await;
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(report["applied"], true);
    assert_eq!(
        (&report["inserted"], &report["updated"], &report["deleted"]),
        (&Value::from(5), &Value::from(1), &Value::from(1))
    );
    // Then the table matches Clerk.
    let (code, out) = reconcile_run(&url, &fake, &["--check"]).await;
    assert_eq!(code, 0, "{out}");
}

#[sqlx::test(migrations = false)]
async fn reconcile_organizations_adds_both_lists_to_the_report(pool: PgPool) {
    let url = database_url(&pool).await;
    let fake = FakeClerkApi::start(2).await.unwrap();
    fake.add_organization("org_a", "a", "A");
    fake.add_membership("org_a", &FakeClerkApi::user_id(0), "org:admin");
    let (code, out) = reconcile_run(&url, &fake, &["--json", "--check", "--organizations"]).await;
    assert_eq!(code, 1, "--check: drift found\n{out}");
    let report: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(report["missing"], 2, "{report}");
    assert_eq!(report["organizations"]["missing"], 1, "{report}");
    assert_eq!(report["memberships"]["missing"], 1, "{report}");
    assert_eq!(
        report["memberships"]["examples"]["missing"][0],
        format!("org_a/{}", FakeClerkApi::user_id(0))
    );

    let (code, out) = reconcile_run(&url, &fake, &["--apply", "--organizations"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reconcile of 1 Clerk memberships"), "{out}");
    let (code, out) = reconcile_run(&url, &fake, &["--check", "--organizations"]).await;
    assert_eq!(code, 0, "no drift left\n{out}");
}
