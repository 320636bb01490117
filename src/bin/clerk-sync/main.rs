//! `clerk-sync`: migrate the database, backfill users from Clerk, reconcile the table with
//! Clerk, verify a session token.
//!
//! Exit status: 0 success; 1 the command ran but something failed (users not imported, token
//! rejected, a reconcile that did not complete or was refused, drift with `--check`); 2 bad
//! usage or configuration; 3 a dependency could not be reached (database, Clerk's Backend
//! API or JWKS) or a migration failed.

#![forbid(unsafe_code)]

mod reconcile;

use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use clerk_sync::clerk_api::RetryPolicy;
use clerk_sync::{
    BackfillOptions, BackfillReport, ClerkApi, ClerkConfig, PgUserStore, TokenType, Verifier,
    machine::MachineToken,
};
use sqlx::postgres::PgPoolOptions;

pub(crate) const FAILED: u8 = 1;
pub(crate) const USAGE: u8 = 2;
pub(crate) const UNAVAILABLE: u8 = 3;

/// Keeps a Postgres or SQLite database in step with a Clerk instance's users.
#[derive(Parser)]
#[command(name = "clerk-sync", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or update clerk-sync's tables in DATABASE_URL.
    Migrate(Database),
    /// Import every Clerk user (CLERK_SECRET_KEY, CLERK_API_URL) into DATABASE_URL.
    Backfill(BackfillArgs),
    /// Compare Clerk's users (CLERK_SECRET_KEY, CLERK_API_URL) with DATABASE_URL's table and
    /// report the drift: missing, deleted in Clerk, stale, in sync (and deleted here). A dry
    /// run unless --apply.
    Reconcile(reconcile::ReconcileArgs),
    /// Verify a token and print it as JSON: a session token with the configured keys (its
    /// claims); an M2M or OAuth JWT with the same keys, and an opaque API key, M2M or OAuth
    /// token (`ak_`, `mt_`, `oat_`) through the Backend API (CLERK_SECRET_KEY,
    /// CLERK_API_URL): its type, subject, scopes and claims.
    Verify {
        /// The token; read from standard input when absent or `-`.
        token: Option<String>,
    },
}

#[derive(Args)]
pub(crate) struct Database {
    /// `postgres://...` or `sqlite://path` (a SQLite file is created if missing).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Seconds to wait for a database connection (a Neon compute that scaled to zero takes a
    /// moment to wake).
    #[arg(long, default_value_t = 30)]
    connect_timeout: u64,
}

#[derive(Args)]
struct BackfillArgs {
    #[command(flatten)]
    database: Database,
    /// Users per Backend API request (Clerk serves at most 500).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=500))]
    page_size: u32,
    /// Fetch and parse every user, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Write to this table instead of `users` (PostgreSQL; same columns, see the README).
    #[arg(long)]
    table: Option<String>,
    /// Retries of a failed Backend API request (429 waits for `Retry-After`, 5xx and
    /// connection errors back off exponentially from 0.5 s) before its page counts as failed.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Pages written at the same time, each on its own connection (PostgreSQL; SQLite writes
    /// one page at a time).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    concurrency: u32,
    /// After the users, import every organization (`GET /v1/organizations`) and membership
    /// (`GET /v1/organization_memberships`) into `organizations` and
    /// `organization_memberships`.
    #[arg(long)]
    organizations: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,clerk_sync=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(UNAVAILABLE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Migrate(database) => migrate(&database).await,
            Command::Backfill(args) => backfill(args).await,
            Command::Reconcile(args) => reconcile::reconcile(args).await,
            Command::Verify { token } => verify(token).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

pub(crate) type Outcome = Result<u8, (u8, String)>;

pub(crate) enum Store {
    Postgres(sqlx::PgPool),
    #[cfg(feature = "sqlite")]
    Sqlite(clerk_sync::SqliteUserStore),
}

/// Connects (and, for SQLite, creates and migrates) the database the URL names.
pub(crate) async fn connect(database: &Database, connections: u32) -> Result<Store, (u8, String)> {
    let url = database.database_url.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // Generous timeouts: a Neon compute that scaled to zero takes a moment to wake.
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(database.connect_timeout))
            .connect(url)
            .await
            .map_err(|e| (UNAVAILABLE, format!("cannot connect to DATABASE_URL: {e}")))?;
        return Ok(Store::Postgres(pool));
    }
    #[cfg(feature = "sqlite")]
    if url.starts_with("sqlite:") {
        let store = clerk_sync::SqliteUserStore::open(url)
            .await
            .map_err(|e| (UNAVAILABLE, format!("cannot open DATABASE_URL: {e}")))?;
        return Ok(Store::Sqlite(store));
    }
    Err((
        USAGE,
        "DATABASE_URL: expected a postgres://, postgresql:// or sqlite: URL".to_owned(),
    ))
}

async fn migrate(database: &Database) -> Outcome {
    match connect(database, 1).await? {
        Store::Postgres(pool) => clerk_sync::migrate(&pool)
            .await
            .map_err(|e| (UNAVAILABLE, format!("migration failed: {e}")))?,
        // Opening a SQLite store migrates it.
        #[cfg(feature = "sqlite")]
        Store::Sqlite(_) => {}
    }
    println!("migrations applied");
    Ok(0)
}

async fn backfill(args: BackfillArgs) -> Outcome {
    let api = ClerkApi::from_env()
        .map_err(|e| (USAGE, e.to_string()))?
        .with_retry({
            let default = RetryPolicy::default();
            RetryPolicy::new(args.retries, default.initial_backoff, default.max_wait)
        });
    // Lowered to 1 for SQLite, when that feature is on.
    #[cfg_attr(not(feature = "sqlite"), allow(unused_mut))]
    let mut concurrency = usize::try_from(args.concurrency).unwrap_or(1);
    let store: Box<dyn clerk_sync::store::UserStore> = match (
        connect(&args.database, args.concurrency).await?,
        &args.table,
    ) {
        (Store::Postgres(pool), Some(table)) => Box::new(
            PgUserStore::new(pool)
                .with_table(table)
                .await
                .map_err(|e| (USAGE, e.to_string()))?,
        ),
        (Store::Postgres(pool), None) => {
            clerk_sync::migrate(&pool)
                .await
                .map_err(|e| (UNAVAILABLE, format!("migration failed: {e}")))?;
            Box::new(PgUserStore::new(pool))
        }
        #[cfg(feature = "sqlite")]
        (Store::Sqlite(_), Some(_)) => {
            return Err((USAGE, "--table is for PostgreSQL only".to_owned()));
        }
        #[cfg(feature = "sqlite")]
        (Store::Sqlite(store), None) => {
            // One writer at a time in SQLite anyway.
            concurrency = 1;
            Box::new(store)
        }
    };
    let options = BackfillOptions::default()
        .page_size(args.page_size)
        .write_concurrency(concurrency)
        .dry_run(args.dry_run);
    let progress = Progress::new(args.json);
    let report = clerk_sync::backfill(&api, store.as_ref(), options, |report| {
        progress.update(report);
    })
    .await;
    progress.finish();
    let organizations = if args.organizations {
        let walked = clerk_sync::backfill_organizations(&api, store.as_ref(), options, |_| {})
            .await
            .map_err(|e| (USAGE, e.to_string()))?;
        Some(walked)
    } else {
        None
    };
    let peak_rss_kib = peak_rss_kib();
    if args.json {
        let mut value = json_report(&report, report.users_per_second(), peak_rss_kib);
        if let (Some(object), Some(walked)) = (value.as_object_mut(), &organizations) {
            object.insert(
                "organizations".into(),
                serde_json::to_value(&walked.organizations).unwrap_or_default(),
            );
            object.insert(
                "memberships".into(),
                serde_json::to_value(&walked.memberships).unwrap_or_default(),
            );
        }
        println!("{value}");
    } else {
        print_summary(&report, peak_rss_kib);
        if let Some(walked) = &organizations {
            for (name, walk) in [
                ("organizations", &walked.organizations),
                ("memberships", &walked.memberships),
            ] {
                println!(
                    "{name}: fetched {}, inserted {}, updated {}, unchanged {}, skipped {} \
                     (deleted here), failed {}{}",
                    walk.fetched,
                    walk.inserted,
                    walk.updated,
                    walk.unchanged,
                    walk.skipped_deleted,
                    walk.failed,
                    if walk.aborted { ", stopped early" } else { "" }
                );
            }
        }
    }
    let success = report.is_success()
        && organizations
            .as_ref()
            .is_none_or(clerk_sync::OrganizationBackfillReport::is_success);
    Ok(if success { 0 } else { FAILED })
}

fn print_summary(report: &BackfillReport, peak_rss_kib: Option<u64>) {
    let verb = if report.dry_run {
        "dry run"
    } else {
        "backfill"
    };
    let state = if report.is_success() {
        "complete"
    } else {
        "finished with failures"
    };
    println!(
        "{verb} {state} in {:.1} s ({:.0} users/s, {} pages)",
        report.elapsed_ms as f64 / 1000.0,
        report.users_per_second(),
        report.pages
    );
    println!("  fetched    {:>9}", report.fetched);
    if !report.dry_run {
        println!("  inserted   {:>9}", report.inserted);
        println!("  updated    {:>9}", report.updated);
        println!("  unchanged  {:>9}", report.unchanged);
        println!(
            "  skipped    {:>9}  (deleted users, left deleted)",
            report.skipped_deleted
        );
    }
    println!(
        "  failed     {:>9}  ({} pages)",
        report.failed, report.failed_pages
    );
    if report.aborted {
        println!("  stopped early: Clerk's Backend API kept failing; run again later");
    }
    if let Some(kib) = peak_rss_kib {
        println!("  peak memory {:.1} MiB", kib as f64 / 1024.0);
    }
}

/// `report` as a JSON object, with `users_per_second` and `peak_rss_kib` added.
pub(crate) fn json_report(
    report: &impl serde::Serialize,
    users_per_second: f64,
    peak_rss_kib: Option<u64>,
) -> serde_json::Value {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("users_per_second".into(), users_per_second.round().into());
        object.insert("peak_rss_kib".into(), peak_rss_kib.into());
    }
    value
}

/// The process's peak resident memory (Linux `VmHWM`), KiB.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A progress bar on a terminal; otherwise a log line every 5 seconds.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} {human_pos} users fetched · {per_sec} · {elapsed} · {msg}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            last_line: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn update(&self, report: &BackfillReport) {
        let counts = format!(
            "inserted {} · updated {} · unchanged {} · skipped {} · failed {}",
            report.inserted,
            report.updated,
            report.unchanged,
            report.skipped_deleted,
            report.failed
        );
        if let Some(bar) = &self.bar {
            bar.set_position(report.fetched);
            bar.set_message(counts);
            return;
        }
        let Ok(mut last) = self.last_line.lock() else {
            return;
        };
        if last.elapsed() >= Duration::from_secs(5) {
            *last = Instant::now();
            tracing::info!(fetched = report.fetched, "backfill progress: {counts}");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// What `verify` prints of a machine token, opaque or JWT.
fn machine_json(machine: &MachineToken) -> serde_json::Value {
    serde_json::json!({
        "token_type": machine.token_type.as_str(),
        "id": machine.id,
        "subject": machine.subject,
        "scopes": machine.scopes,
        "claims": machine.claims,
        "name": machine.name,
        "client_id": machine.client_id,
        "expiration": machine.expiration_ms,
    })
}

/// An opaque API key, M2M or OAuth token through the Backend API: its type, id, subject,
/// scopes, claims and expiration, or the rejection the layers would answer.
async fn verify_machine(
    kind: TokenType,
    token: &str,
) -> Result<Result<serde_json::Value, clerk_sync::AuthError>, (u8, String)> {
    let api = ClerkApi::from_env().map_err(|e| (USAGE, e.to_string()))?;
    match api.verify_machine_token(kind, token).await {
        Ok(verdict) => Ok(verdict.into_result().map(|machine| machine_json(&machine))),
        Err(error) => Err((
            UNAVAILABLE,
            format!("the Backend API could not verify the token: {error}"),
        )),
    }
}

async fn verify(token: Option<String>) -> Outcome {
    let token = match token.filter(|t| t != "-") {
        Some(token) => token,
        None => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| (USAGE, format!("cannot read the token from stdin: {e}")))?;
            input
        }
    };
    let token = token.trim();
    let token = token
        .strip_prefix("Bearer ")
        .or_else(|| token.strip_prefix("bearer "))
        .unwrap_or(token);
    let config = ClerkConfig::from_env().map_err(|e| (USAGE, e.to_string()))?;
    let verified = match TokenType::from_prefix(token) {
        // Opaque machine tokens: the Backend API decides (CLERK_SECRET_KEY, CLERK_API_URL).
        Some(kind) => verify_machine(kind, token).await?,
        None => {
            let verifier = Verifier::from_config(&config).map_err(|e| (USAGE, e.to_string()))?;
            match verifier.verify_jwt(token).await {
                // A session's claims, as before.
                Ok((TokenType::SessionToken, claims)) => Ok(serde_json::to_value(&*claims)
                    .map_err(|e| (FAILED, format!("cannot print the claims: {e}")))?),
                // An M2M or OAuth JWT: the same shape as an opaque token's answer.
                Ok((kind, claims)) => Ok(machine_json(&MachineToken::from_jwt(kind, &claims))),
                Err(error) => Err(error),
            }
        }
    };
    match verified {
        Ok(json) => {
            let json = serde_json::to_string_pretty(&json)
                .map_err(|e| (FAILED, format!("cannot print the claims: {e}")))?;
            println!("{json}");
            Ok(0)
        }
        Err(error) => {
            println!(
                "{}",
                serde_json::json!({"error": error.code(), "message": error.to_string()})
            );
            Ok(if error.is_server_fault() {
                UNAVAILABLE
            } else {
                FAILED
            })
        }
    }
}
