//! The metrics clerk-sync records through the [`metrics`](https://docs.rs/metrics) facade:
//! their names (these constants) and labels. The crate installs no exporter; the app picks
//! one (the examples render the Prometheus text format with `metrics-exporter-prometheus`).
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `clerk_sync_requests_total` | counter | `outcome`: `hit`, `synced`, `unsynced`, `anonymous`, `rejected` | requests through the layers: `hit` the verified-token cache answered; `synced` the token was verified now and its user synced or found in the user cache (machines: admitted); `unsynced` passed under the fail-open policy; `anonymous` no token under the optional layer; `rejected` answered with an error |
//! | `clerk_sync_rejections_total` | counter | `code` (an [`ERROR_CODES`](crate::ERROR_CODES) code) | rejected requests by code |
//! | `clerk_sync_upserts_total` | counter | `result`: `ok`, `error` | user upserts of the request path |
//! | `clerk_sync_sync_duration_seconds` | histogram | | the miss path: verification, user (and organization) sync, whatever the outcome |
//! | `clerk_sync_jwks_fetches_total` | counter | `result`: `ok`, `error` | JWKS fetch attempts |
//! | `clerk_sync_backend_api_requests_total` | counter | `endpoint` (a path template: `/v1/users/{id}`, never an id), `status` (the HTTP status, or `error` when no answer came) | Backend API requests, every attempt |
//! | `clerk_sync_webhooks_total` | counter | `type` (Clerk's event type; `unknown` when the body was not read), `outcome` (the response's `status`, or the error code) | webhook deliveries |
//! | `clerk_sync_rate_limit_decisions_total` | counter | `decision`: `allowed`, `denied`, `store_error` | decisions of every [`RateLimitLayer`](crate::RateLimitLayer) in the process (handed over by `record_metrics`) |
//! | `clerk_sync_invalidations_total` | counter | `source`: `channel` (a message received), `reconnect` (the whole cache cleared after the listener reconnected), `webhook`, `invalidate` (published by this process) | cache evictions |
//! | `clerk_sync_cached_users` | gauge | | users in the synced-user cache (the cache's own count, which trails the latest evictions until its maintenance runs) |
//! | `clerk_sync_cached_sessions` | gauge | | entries of the verified-token cache |
//!
//! The counters of the request path (requests, rejections, upserts, JWKS fetches) and the two
//! gauges are kept in the handle's atomic counters, which [`crate::ClerkSync::stats`] reads,
//! and handed to the recorder by [`crate::ClerkSync::record_metrics`], which the handle's
//! [`background`](crate::ClerkSync::background) task calls every 10 seconds: the cached hit
//! path pays nothing for metrics. Call `record_metrics` right before rendering a scrape to
//! serve current counts. The rate-limit decisions are counted the same way, in striped
//! process-wide atomics that `record_metrics` hands over too (a recorder call per decision
//! cost the limiter's hit path ~200 instructions). The others are recorded where they happen
//! (each on a path that already does I/O).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::stats::Stats;

/// `clerk_sync_requests_total{outcome}`.
pub const REQUESTS: &str = "clerk_sync_requests_total";
/// `clerk_sync_rejections_total{code}`.
pub const REJECTIONS: &str = "clerk_sync_rejections_total";
/// `clerk_sync_upserts_total{result}`.
pub const UPSERTS: &str = "clerk_sync_upserts_total";
/// `clerk_sync_sync_duration_seconds` (histogram).
pub const SYNC_DURATION: &str = "clerk_sync_sync_duration_seconds";
/// `clerk_sync_jwks_fetches_total{result}`.
pub const JWKS_FETCHES: &str = "clerk_sync_jwks_fetches_total";
/// `clerk_sync_backend_api_requests_total{endpoint,status}`.
pub const BACKEND_API_REQUESTS: &str = "clerk_sync_backend_api_requests_total";
/// `clerk_sync_webhooks_total{type,outcome}`.
pub const WEBHOOKS: &str = "clerk_sync_webhooks_total";
/// `clerk_sync_rate_limit_decisions_total{decision}`.
pub const RATE_LIMIT_DECISIONS: &str = "clerk_sync_rate_limit_decisions_total";
/// `clerk_sync_invalidations_total{source}`.
pub const INVALIDATIONS: &str = "clerk_sync_invalidations_total";
/// `clerk_sync_cached_users` (gauge).
pub const CACHED_USERS: &str = "clerk_sync_cached_users";
/// `clerk_sync_cached_sessions` (gauge).
pub const CACHED_SESSIONS: &str = "clerk_sync_cached_sessions";

/// What a handle has already handed to the recorder: the next export adds the difference, so
/// several handles in one process add up.
#[derive(Debug, Default)]
pub(crate) struct Exported(Mutex<Option<Stats>>);

impl Exported {
    /// Adds what changed since the last export, and sets the gauges.
    pub(crate) fn export(&self, now: Stats, cached_users: u64, cached_sessions: u64) {
        let mut last = match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let before = last.take().unwrap_or_else(Stats::zero);
        let add = |name: &'static str, label: &'static str, value: &'static str, by: u64| {
            if by > 0 {
                ::metrics::counter!(name, label => value).increment(by);
            }
        };
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        for (outcome, now, before) in [
            ("hit", now.requests_hit, before.requests_hit),
            ("synced", now.requests_synced, before.requests_synced),
            ("unsynced", now.requests_unsynced, before.requests_unsynced),
            (
                "anonymous",
                now.requests_anonymous,
                before.requests_anonymous,
            ),
            ("rejected", now.rejected_total(), before.rejected_total()),
        ] {
            add(REQUESTS, "outcome", outcome, delta(now, before));
        }
        for (code, count) in now.rejections() {
            add(
                REJECTIONS,
                "code",
                code,
                delta(count, before.rejected(code)),
            );
        }
        add(
            UPSERTS,
            "result",
            "ok",
            delta(now.upserts_ok, before.upserts_ok),
        );
        add(
            UPSERTS,
            "result",
            "error",
            delta(now.upserts_failed, before.upserts_failed),
        );
        let ok = |s: &Stats| s.jwks_fetches.saturating_sub(s.jwks_fetch_failures);
        add(JWKS_FETCHES, "result", "ok", delta(ok(&now), ok(&before)));
        add(
            JWKS_FETCHES,
            "result",
            "error",
            delta(now.jwks_fetch_failures, before.jwks_fetch_failures),
        );
        ::metrics::gauge!(CACHED_USERS).set(cached_users as f64);
        ::metrics::gauge!(CACHED_SESSIONS).set(cached_sessions as f64);
        *last = Some(now);
    }
}

/// Records one eviction from `source` (`channel`, `reconnect`, `webhook`, `invalidate`).
pub(crate) fn invalidation(source: &'static str) {
    ::metrics::counter!(INVALIDATIONS, "source" => source).increment(1);
}

/// The `decision` labels, in the order of each stripe's counters.
const DECISION_LABELS: [&str; 3] = ["allowed", "denied", "store_error"];
const STRIPES: usize = 16;

/// One stripe of the decision counters, on cache lines of its own.
#[repr(align(128))]
struct Stripe([AtomicU64; 3]);

/// The decisions of every `RateLimitLayer` in this process: each thread counts on its own
/// stripe, so cores do not pass one cache line around; [`export_rate_limit_decisions`] adds
/// them up.
static DECISIONS: [Stripe; STRIPES] =
    [const { Stripe([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]) }; STRIPES];
/// The sums handed to the recorder so far.
static DECISIONS_EXPORTED: Mutex<[u64; 3]> = Mutex::new([0; 3]);

thread_local! {
    /// This thread's stripe, given out in turn.
    static STRIPE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES
    };
}

/// Counts one decision of the label at `at` of [`DECISION_LABELS`].
fn count_decision(at: usize) {
    let stripe = STRIPE.with(|stripe| *stripe);
    DECISIONS[stripe].0[at].fetch_add(1, Ordering::Relaxed);
}

/// Counts one rate-limit decision, `allowed` or `denied` (handed to the recorder by
/// `record_metrics`).
pub(crate) fn rate_limit_decided(allowed: bool) {
    count_decision(if allowed { 0 } else { 1 });
}

/// Counts one rate-limit decision the store could not make (`store_error`).
pub(crate) fn rate_limit_store_error() {
    count_decision(2);
}

/// Hands the decisions counted since the last call to the recorder.
pub(crate) fn export_rate_limit_decisions() {
    let mut exported = match DECISIONS_EXPORTED.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    for (at, label) in DECISION_LABELS.iter().enumerate() {
        let total: u64 = DECISIONS
            .iter()
            .map(|stripe| stripe.0[at].load(Ordering::Relaxed))
            .sum();
        let delta = total.saturating_sub(exported[at]);
        if delta > 0 {
            ::metrics::counter!(RATE_LIMIT_DECISIONS, "decision" => *label).increment(delta);
            exported[at] = total;
        }
    }
}
