//! [`ClerkSync`], the handle the app keeps; its builder is in `builder`. Wiring only: the request
//! pipeline is [`crate::core`]'s.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use axum::Router;

mod builder;

pub use builder::ClerkSyncBuilder;

use crate::config::ClerkConfig;
use crate::core::{Core, Mode};
use crate::error::{ConfigError, StoreError};
use crate::layer::ClerkSyncLayer;
use crate::secret::WebhookSecret;
use crate::stats::Stats;
use crate::store::UserStore;
use crate::sync::listener;
use crate::token::Verifier;

/// Verifies Clerk session tokens and keeps users synced; cheap to clone (an `Arc` inside).
///
/// Build one per process with [`ClerkSync::builder`], spawn its [`background`](Self::background)
/// task, then put [`ClerkSync::layer`] in front of authenticated routes.
#[derive(Clone)]
pub struct ClerkSync {
    core: Arc<Core>,
    webhook_secret: Option<WebhookSecret>,
}

impl fmt::Debug for ClerkSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClerkSync")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl ClerkSync {
    /// Starts a builder for this Clerk instance, writing users to `store` (for example
    /// [`crate::PgUserStore`], [`crate::SqliteUserStore`] or [`crate::MemoryUserStore`]).
    pub fn builder(config: ClerkConfig, store: impl UserStore) -> ClerkSyncBuilder {
        ClerkSyncBuilder::new(config, Arc::new(store))
    }

    /// A layer that requires a valid session: requests without one get 401.
    pub fn layer(&self) -> ClerkSyncLayer {
        ClerkSyncLayer::new(self.core.clone(), Mode::Required)
    }

    /// A layer that lets requests without any token through with no [`crate::ClerkUser`]. A
    /// token that is present must still be valid: a bad or expired one gets 401, so clients
    /// learn that their session broke instead of silently becoming anonymous.
    pub fn optional_layer(&self) -> ClerkSyncLayer {
        ClerkSyncLayer::new(self.core.clone(), Mode::Optional)
    }

    /// A guard for routes behind the sync layer: the request passes when its user has what
    /// `check` asks ([`crate::ClerkUser::has`]); otherwise 403 `forbidden` naming what is
    /// missing, 403 `organization_required` when a role or permission is asked without an
    /// active organization, or Clerk's reverification 403 (see
    /// [`crate::GuardRejection`]).
    ///
    /// ```
    /// # async fn doc(clerk: clerk_sync::ClerkSync) {
    /// use axum::{Router, routing::get};
    /// use clerk_sync::authz::Check;
    ///
    /// let app: Router = Router::new()
    ///     .route("/invoices", get(|| async { "invoices" }))
    ///     .layer(clerk.require(Check::permission("org:invoices:read")))
    ///     .layer(clerk.layer());
    /// # }
    /// ```
    pub fn require(&self, check: crate::authz::Check) -> crate::RequireLayer {
        crate::RequireLayer::new(check)
    }

    /// The token verifier, for code outside the layer (WebSocket upgrades, jobs, the CLI).
    pub fn verifier(&self) -> &Verifier {
        &self.core.verifier
    }

    /// The work that runs beside the requests, as a future for the app to spawn once:
    /// `tokio::spawn(clerk.background())`. It listens on the invalidation channel (evicting
    /// what other processes publish, and clearing the synced-user cache after a reconnect)
    /// forgets webhook delivery ids older than 30 days, hourly, and hands the counters to the
    /// metrics recorder every 10 seconds ([`record_metrics`](Self::record_metrics)). It ends
    /// by itself when the last layer, webhook router and clone of this handle are gone.
    ///
    /// Nothing is spawned behind the app's back: without this task, other processes'
    /// evictions never reach this one (cached users then live out their TTL), and a
    /// configuration with a channel logs a warning once, at the first sync.
    pub fn background(&self) -> impl Future<Output = ()> + Send + 'static {
        // Weak: the task must not keep the core (and so itself) alive.
        let core = Arc::downgrade(&self.core);
        listener::background(
            &self.core.syncer,
            self.core.counters.clone(),
            self.core.alive.subscribe(),
            move || {
                if let Some(core) = core.upgrade() {
                    core.record_metrics();
                }
            },
        )
    }

    /// Hands this handle's counters to the [`metrics`](https://docs.rs/metrics) recorder the
    /// app installed (names and labels in [`crate::metrics`]); a no-op without one. The
    /// [`background`](Self::background) task calls it every 10 seconds; call it right before
    /// rendering a scrape (`/metrics`) to serve current counts.
    pub fn record_metrics(&self) {
        self.core.record_metrics();
    }

    /// Forgets the synced user in this process and publishes the id on the invalidation
    /// channel, so the next request of that user in every process upserts again and reads its
    /// tier afresh. Call it after changing a user's tier.
    ///
    /// The local eviction always happens; the error says the other processes could not be
    /// told (their caches expire after the user-cache TTL at the latest).
    pub async fn invalidate(&self, user_id: &str) -> Result<(), StoreError> {
        self.core.syncer.invalidate(user_id, "invalidate").await
    }

    /// A router with one route, `POST path`, that receives Clerk's webhooks (Svix-signed
    /// `user.created`, `user.updated`, `user.deleted`) and applies them through the store.
    /// Merge it into your app outside the session layer; it fits a router of any state.
    /// Needs `CLERK_WEBHOOK_SIGNING_SECRET`.
    pub fn webhook_router<S>(&self, path: &str) -> Result<Router<S>, ConfigError>
    where
        S: Clone + Send + Sync + 'static,
    {
        let secret = self.webhook_secret.clone().ok_or_else(|| {
            ConfigError::new(
                "CLERK_WEBHOOK_SIGNING_SECRET",
                "not set: copy the endpoint's signing secret (`whsec_...`) from Clerk's dashboard",
            )
        })?;
        Ok(crate::webhook::router(self.core.clone(), secret, path))
    }

    /// The handle's health: the store pinged now (within the sync timeout), the signing keys'
    /// age and last fetch, the invalidation listener's state, and the last reconcile of this
    /// process. [`Health::healthy`](crate::health::Health) is `false` when the store cannot
    /// be reached; the quickstart's `/healthz` answers 503 then.
    pub async fn health(&self) -> crate::health::Health {
        let syncer = &self.core.syncer;
        let store = crate::health::ping(syncer.store().as_ref(), syncer.timeout()).await;
        crate::health::Health {
            healthy: store.reachable,
            store,
            keys: self.core.verifier.key_health(),
            listener: syncer.channel().map(|_| self.core.counters.listener()),
            last_reconcile: crate::health::last_reconcile(),
        }
    }

    /// Counters since this `ClerkSync` was built.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }
}
