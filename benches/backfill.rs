//! Backfill and reconcile throughput and memory: the release `clerk-sync backfill` binary
//! imports 10,000 and 100,000 users from `FakeClerkApi` (served by this process) into the
//! local PostgreSQL, then `clerk-sync reconcile` compares them (a dry run of a table in sync),
//! and, after every user's `updated_at` moved, repairs them (`--apply`: every row stale).
//!
//! Not a criterion bench: one import of 100k users is the measurement. Each size runs as a
//! fresh import (every row inserted) and a re-run (every row unchanged). Users per second
//! come from the command's own report (the import itself) and from the wall time of the
//! whole process (connect and migrate included); peak memory is the child's `VmHWM`.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench backfill
//! ```
//!
//! `BENCH_USERS="100000"` runs other sizes than 10,000 and 100,000. The reconcile lines add
//! the report's phases: the walk of Clerk's list, the comparison, and the repair.

use std::time::Instant;

use clerk_sync::testing::FakeClerkApi;
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};

const DATABASE: &str = "clerk_sync_bench_backfill";

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run only for real.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let Ok(base) = std::env::var("DATABASE_URL") else {
        println!("backfill bench skipped: DATABASE_URL is not set");
        return;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            println!("backfill bench skipped: no runtime: {error}");
            return;
        }
    };
    if let Err(error) = runtime.block_on(run(&base)) {
        eprintln!("backfill bench failed: {error}");
        std::process::exit(1);
    }
}

async fn run(base: &str) -> Result<(), Box<dyn std::error::Error>> {
    let server = base
        .rsplit_once('/')
        .ok_or("DATABASE_URL has no database")?
        .0;
    let url = format!("{server}/{DATABASE}");
    let mut admin = PgConnection::connect(base).await?;
    admin
        .execute("DROP DATABASE IF EXISTS clerk_sync_bench_backfill WITH (FORCE)")
        .await?;
    admin
        .execute("CREATE DATABASE clerk_sync_bench_backfill")
        .await?;

    println!(
        "{:>8} {:>10} {:>14} {:>16} {:>12} {:>10}",
        "users", "run", "users/s", "users/s (wall)", "peak RSS", "result"
    );
    let sizes = std::env::var("BENCH_USERS").unwrap_or_else(|_| "10000 100000".to_owned());
    let sizes = sizes
        .split_whitespace()
        .map(str::parse::<u64>)
        .collect::<Result<Vec<_>, _>>()?;
    for users in sizes {
        let fake = FakeClerkApi::start(users).await?;
        let mut db = PgConnection::connect(&url).await?;
        db.execute("DROP TABLE IF EXISTS clerk_rate_limits, clerk_rate_limits_ip, users, clerk_webhook_events, _clerk_sync_migrations")
            .await?;
        for run in ["fresh", "re-run"] {
            let started = Instant::now();
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_clerk-sync"))
                .args(["backfill", "--json"])
                .env("DATABASE_URL", &url)
                .env("CLERK_SECRET_KEY", FakeClerkApi::SECRET_KEY)
                .env("CLERK_API_URL", fake.url())
                .env("RUST_LOG", "warn")
                .output()
                .await?;
            let wall = started.elapsed();
            let report: Value = serde_json::from_slice(&output.stdout)
                .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&output.stderr)))?;
            let fetched = report["fetched"].as_u64().unwrap_or(0);
            let expected = if run == "fresh" {
                "inserted"
            } else {
                "unchanged"
            };
            let ok = output.status.success()
                && fetched == users
                && report[expected].as_u64() == Some(users);
            println!(
                "{:>8} {:>10} {:>14} {:>16.0} {:>9.1} MiB {:>10}",
                users,
                run,
                report["users_per_second"],
                users as f64 / wall.as_secs_f64(),
                report["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                if ok { expected } else { "WRONG" }
            );
            if !ok {
                return Err(format!("unexpected report: {report}").into());
            }
        }
        for run in ["reconcile", "reconcile --apply"] {
            let apply = run.ends_with("--apply");
            if apply {
                // Every user edited their profile: every row is stale.
                fake.touch_all(60_000);
            }
            let started = Instant::now();
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_clerk-sync"));
            command.args(["reconcile", "--json"]);
            if apply {
                command.arg("--apply");
            }
            let output = command
                .env("DATABASE_URL", &url)
                .env("CLERK_SECRET_KEY", FakeClerkApi::SECRET_KEY)
                .env("CLERK_API_URL", fake.url())
                .env("RUST_LOG", "warn")
                .output()
                .await?;
            let wall = started.elapsed();
            let report: Value = serde_json::from_slice(&output.stdout)
                .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&output.stderr)))?;
            let (class, expected) = if apply {
                ("updated", users)
            } else {
                ("in_sync", users)
            };
            let ok = output.status.success()
                && report["clerk_users"].as_u64() == Some(users)
                && report[class].as_u64() == Some(expected);
            let ms = |key: &str| report[key].as_u64().unwrap_or(0);
            println!(
                "{:>8} {:>18} {:>14} {:>16.0} {:>9.1} MiB {:>10}   walk {} ms, compare {} ms, repair {} ms",
                users,
                run,
                report["users_per_second"],
                users as f64 / wall.as_secs_f64(),
                report["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                if ok { class } else { "WRONG" },
                ms("walk_ms"),
                ms("compare_ms"),
                ms("elapsed_ms").saturating_sub(ms("walk_ms") + ms("compare_ms")),
            );
            if !ok {
                return Err(format!("unexpected report: {report}").into());
            }
        }
    }
    Ok(())
}
