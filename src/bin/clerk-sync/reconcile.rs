//! `clerk-sync reconcile`: the drift report, and the repair with `--apply`.

use clap::Args;
use clerk_sync::clerk_api::RetryPolicy;
use clerk_sync::reconcile::{ReconcileError, ReconcileTarget};
use clerk_sync::{
    ClerkApi, OrganizationReconcileReport, PgUserStore, ReconcileOptions, ReconcileReport,
};

use crate::{
    Database, FAILED, Outcome, Store, UNAVAILABLE, USAGE, connect, json_report, peak_rss_kib,
};

#[derive(Args)]
pub(crate) struct ReconcileArgs {
    #[command(flatten)]
    database: Database,
    /// Repair the drift: insert the missing, update the stale, soft-delete users Clerk no
    /// longer has (each confirmed with GET /v1/users/{id} → 404). Without it nothing is
    /// written.
    #[arg(long)]
    apply: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Exit 1 when drift was found (before any repair, also with --apply): for a cron alert.
    #[arg(long)]
    check: bool,
    /// Refuse to delete more users than this (default: the larger of 100 and 1% of the
    /// table): a secret key of another instance must not empty the table.
    #[arg(long)]
    max_deletes: Option<u64>,
    /// Delete even more than --max-deletes.
    #[arg(long)]
    force: bool,
    /// Compare this table instead of `users` (PostgreSQL; same columns).
    #[arg(long)]
    table: Option<String>,
    /// Users per Backend API request (Clerk serves at most 500).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=500))]
    page_size: u32,
    /// Retries of a failed Backend API request before the walk counts as incomplete.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// After the users, the same for organizations (`GET /v1/organizations`) and memberships
    /// (`GET /v1/organization_memberships`); --max-deletes applies to each list.
    #[arg(long)]
    organizations: bool,
}

pub(crate) async fn reconcile(args: ReconcileArgs) -> Outcome {
    let api = ClerkApi::from_env()
        .map_err(|e| (USAGE, e.to_string()))?
        .with_retry({
            let default = RetryPolicy::default();
            RetryPolicy::new(args.retries, default.initial_backoff, default.max_wait)
        });
    let mut options = ReconcileOptions::default()
        .apply(args.apply)
        .force(args.force)
        .page_size(args.page_size);
    if let Some(max) = args.max_deletes {
        options = options.max_deletes(max);
    }
    // One connection for the session's temporary table, the others for the repair's writes.
    let result = match (connect(&args.database, 6).await?, &args.table) {
        (Store::Postgres(pool), table) => {
            let store = match table {
                Some(table) => PgUserStore::new(pool)
                    .with_table(table)
                    .await
                    .map_err(|e| (USAGE, e.to_string()))?,
                None => {
                    clerk_sync::migrate(&pool)
                        .await
                        .map_err(|e| (UNAVAILABLE, format!("migration failed: {e}")))?;
                    PgUserStore::new(pool)
                }
            };
            run(&api, (&store).into(), options, args.organizations).await
        }
        #[cfg(feature = "sqlite")]
        (Store::Sqlite(_), Some(_)) => {
            return Err((USAGE, "--table is for PostgreSQL only".to_owned()));
        }
        #[cfg(feature = "sqlite")]
        (Store::Sqlite(store), None) => {
            run(&api, (&store).into(), options, args.organizations).await
        }
    };
    let (report, organizations) = result.map_err(|e| (UNAVAILABLE, e.to_string()))?;
    let peak_rss_kib = peak_rss_kib();
    if args.json {
        let mut value = json_report(&report, report.users_per_second(), peak_rss_kib);
        if let (Some(object), Some(orgs)) = (value.as_object_mut(), &organizations) {
            for (key, list) in [
                ("organizations", &orgs.organizations),
                ("memberships", &orgs.memberships),
            ] {
                object.insert(key.into(), serde_json::to_value(list).unwrap_or_default());
            }
        }
        println!("{value}");
    } else {
        print_report(&report, "users");
        if let Some(orgs) = &organizations {
            print_report(&orgs.organizations, "organizations");
            print_report(&orgs.memberships, "memberships");
        }
        if let Some(kib) = peak_rss_kib {
            println!("  peak memory {:.1} MiB", kib as f64 / 1024.0);
        }
    }
    let (success, drift) = match &organizations {
        Some(orgs) => (
            report.is_success() && orgs.is_success(),
            report.has_drift() || orgs.has_drift(),
        ),
        None => (report.is_success(), report.has_drift()),
    };
    let failed = !success || (args.check && drift);
    Ok(if failed { FAILED } else { 0 })
}

/// The users' reconcile, then (with `--organizations`) the organizations'.
async fn run(
    api: &ClerkApi,
    target: ReconcileTarget<'_>,
    options: ReconcileOptions,
    organizations: bool,
) -> Result<(ReconcileReport, Option<OrganizationReconcileReport>), ReconcileError> {
    let users = clerk_sync::reconcile(api, target, options).await?;
    let organizations = if organizations {
        Some(clerk_sync::reconcile_organizations(api, target, options).await?)
    } else {
        None
    };
    Ok((users, organizations))
}

/// One list's report; `rows` names what it counts.
fn print_report(report: &ReconcileReport, rows: &str) {
    let examples = |ids: &[String]| {
        if ids.is_empty() {
            String::new()
        } else {
            format!("  e.g. {}", ids.join(", "))
        }
    };
    println!(
        "reconcile of {} Clerk {rows} against {} rows in {:.1} s ({:.0} {rows}/s)",
        report.clerk_users,
        report.table_rows,
        report.elapsed_ms as f64 / 1000.0,
        report.users_per_second()
    );
    println!(
        "  missing           {:>9}{}",
        report.missing,
        examples(&report.examples.missing)
    );
    println!(
        "  deleted in Clerk  {:>9}{}",
        report.deleted_in_clerk,
        examples(&report.examples.deleted_in_clerk)
    );
    println!(
        "  stale             {:>9}{}",
        report.stale,
        examples(&report.examples.stale)
    );
    println!("  in sync           {:>9}", report.in_sync);
    println!(
        "  deleted here      {:>9}  (still listed by Clerk; left deleted){}",
        report.deleted_here,
        examples(&report.examples.deleted_here)
    );
    if !report.walk_complete {
        println!("  the walk of Clerk's {rows} did not complete: nothing was deleted; run again");
    }
    if report.deletions_refused {
        println!(
            "  refused: {} deletions exceed --max-deletes {}; nothing was written (check \
             CLERK_SECRET_KEY, or pass --force)",
            report.deleted_in_clerk, report.max_deletes
        );
    }
    if report.applied {
        println!(
            "  applied: inserted {}, updated {}, deleted {}, still in Clerk {}, unconfirmed {}",
            report.inserted,
            report.updated,
            report.deleted,
            report.still_in_clerk,
            report.unconfirmed
        );
    } else if !report.deletions_refused {
        println!("  dry run: nothing was written (--apply repairs)");
    }
}
