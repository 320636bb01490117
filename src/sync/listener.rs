//! The handle's background task: the invalidation listener, which feeds a channel's messages
//! to the synced-user cache, and the pruning of old webhook delivery ids.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;

use super::Syncer;
use super::users::SyncedUsers;
use crate::invalidate::{ChannelEvent, InvalidationChannel};
use crate::log_throttle::Throttle;
use crate::stats::{Counters, ListenerState};

/// How often old webhook delivery ids are forgotten, and how old they must be.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const DELIVERY_IDS_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the counters are handed to the metrics recorder.
const METRICS_EVERY: Duration = Duration::from_secs(10);

/// The future of [`crate::ClerkSync::background`]: listening (when there is a channel) and
/// pruning, until `alive`'s sender (held by the core) is dropped.
pub(crate) fn background(
    syncer: &Syncer,
    counters: Arc<Counters>,
    mut alive: tokio::sync::watch::Receiver<()>,
    record_metrics: impl Fn() + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    syncer.mark_listening();
    let channel = syncer.channel().cloned();
    let caches = Caches {
        users: syncer.users().clone(),
        orgs: syncer.organization_cache().clone(),
    };
    let store = syncer.store().clone();
    async move {
        let listening = async move {
            match channel {
                Some(channel) => listen(channel, caches, counters).await,
                None => std::future::pending().await,
            }
        };
        let pruning = async move {
            let mut every = tokio::time::interval(PRUNE_EVERY);
            loop {
                every.tick().await;
                match store.prune_webhook_deliveries(DELIVERY_IDS_KEPT).await {
                    Ok(pruned) => tracing::debug!(pruned, "old webhook delivery ids pruned"),
                    Err(error) => tracing::warn!(%error, "pruning webhook delivery ids failed"),
                }
            }
        };
        let metrics = async move {
            let mut every = tokio::time::interval(METRICS_EVERY);
            loop {
                every.tick().await;
                record_metrics();
            }
        };
        // `changed` fails once the sender is gone; nothing is ever sent.
        let closed = async move { while alive.changed().await.is_ok() {} };
        tokio::select! {
            () = closed => {}
            () = listening => {}
            () = pruning => {}
            () = metrics => {}
        }
    }
}

/// Listens on `channel` for as long as the future is polled: evicts every user named by a
/// message, and clears the whole cache each time the channel is listening again after a loss
/// (messages may have been missed meanwhile; not on the first subscription, which races with
/// the first requests and can only have missed the moment after start-up).
async fn listen(channel: Arc<dyn InvalidationChannel>, caches: Caches, counters: Arc<Counters>) {
    counters.set_listener(ListenerState::Connecting);
    let mut events = channel.listen();
    let mut subscribed_before = false;
    // An outage logs its first failure, then one line a minute with the count.
    let lost = Throttle::new(Duration::from_secs(60));
    while let Some(event) = events.next().await {
        match event {
            ChannelEvent::Listening => {
                if subscribed_before {
                    caches.users.clear();
                    caches.orgs.clear();
                    crate::metrics::invalidation("reconnect");
                    tracing::info!(
                        "invalidation listener is back; the synced-user and organization caches were cleared"
                    );
                } else {
                    tracing::debug!("invalidation listener subscribed");
                }
                subscribed_before = true;
                Counters::bump(&counters.listener_connects);
                counters.set_listener(ListenerState::Listening);
            }
            ChannelEvent::Message(id) => evict(&caches, &counters, &id).await,
            ChannelEvent::Lost(error) => {
                counters.set_listener(ListenerState::Lost);
                if let Some(count) = lost.hit() {
                    tracing::warn!(%error, failures = count, "invalidation listener lost its channel; retrying");
                }
            }
        }
    }
}

/// The caches the listener evicts from (clones sharing the syncer's).
struct Caches {
    users: SyncedUsers,
    orgs: SyncedUsers,
}

/// One message: a bare Clerk id, a user's or an organization's.
async fn evict(caches: &Caches, counters: &Counters, id: &str) {
    if id.starts_with("user_") {
        Counters::bump(&counters.invalidations_received);
        crate::metrics::invalidation("channel");
        caches.users.evict(id).await;
    } else if id.starts_with("org_") {
        Counters::bump(&counters.invalidations_received);
        crate::metrics::invalidation("channel");
        caches.orgs.evict(id).await;
    } else {
        tracing::debug!(
            message = id,
            "invalidation message that is not a Clerk id; ignored"
        );
    }
}
