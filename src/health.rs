//! [`Health`]: what [`crate::ClerkSync::health`] reports.

#[cfg(any(feature = "postgres", feature = "sqlite"))]
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::stats::ListenerState;

/// The state of one [`crate::ClerkSync`] and what it depends on. Serialises to the JSON the
/// quickstart's `/healthz` answers.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Health {
    /// `false` when the store cannot be reached: serve 503 then.
    pub healthy: bool,
    /// The user store.
    pub store: StoreHealth,
    /// The signing keys.
    pub keys: KeyHealth,
    /// The invalidation listener; `None` when the handle has no channel (one process).
    pub listener: Option<ListenerState>,
    /// The last [`crate::reconcile()`] or [`crate::reconcile_organizations()`] that ran in
    /// this process, if any.
    pub last_reconcile: Option<ReconcileSummary>,
}

/// Whether the store answered.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct StoreHealth {
    /// It answered `SELECT 1` within the sync timeout.
    pub reachable: bool,
    /// How long it took, milliseconds.
    pub latency_ms: u64,
    /// What failed.
    pub error: Option<String>,
}

/// The signing keys the verifier holds.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct KeyHealth {
    /// `pem` (`CLERK_JWT_KEY`, never fetched) or `jwks`.
    pub source: &'static str,
    /// Keys held.
    pub keys: usize,
    /// Seconds since the key set was fetched; `None` before the first successful fetch (keys
    /// are fetched on the first request that needs them) and for a PEM key.
    pub age_secs: Option<u64>,
    /// `ok` or `error`: the last fetch attempt; `None` before the first.
    pub last_fetch: Option<&'static str>,
}

/// The outcome of the last reconcile of this process.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct ReconcileSummary {
    /// Seconds since it finished.
    pub finished_secs_ago: u64,
    /// The walk of Clerk's list(s) completed and nothing was refused.
    pub success: bool,
    /// Drift found before any repair (missing + deleted in Clerk + stale).
    pub drift: u64,
    /// Whether the repair ran.
    pub applied: bool,
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
static LAST_RECONCILE: Mutex<Option<(Instant, bool, u64, bool)>> = Mutex::new(None);

/// Remembers a finished reconcile for [`Health::last_reconcile`].
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn reconciled(success: bool, drift: u64, applied: bool) {
    let value = (Instant::now(), success, drift, applied);
    match LAST_RECONCILE.lock() {
        Ok(mut last) => *last = Some(value),
        Err(poisoned) => *poisoned.into_inner() = Some(value),
    }
}

pub(crate) fn last_reconcile() -> Option<ReconcileSummary> {
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    {
        let last = match LAST_RECONCILE.lock() {
            Ok(last) => *last,
            Err(poisoned) => *poisoned.into_inner(),
        };
        last.map(|(at, success, drift, applied)| ReconcileSummary {
            finished_secs_ago: at.elapsed().as_secs(),
            success,
            drift,
            applied,
        })
    }
    #[cfg(not(any(feature = "postgres", feature = "sqlite")))]
    None
}

/// Pings `store` within `timeout`.
pub(crate) async fn ping(store: &dyn crate::store::UserStore, timeout: Duration) -> StoreHealth {
    let started = Instant::now();
    let result = match tokio::time::timeout(timeout, store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    };
    StoreHealth {
        reachable: result.is_ok(),
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        error: result.err(),
    }
}
