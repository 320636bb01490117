//! Cache invalidation across processes: the [`Invalidator`] handed to a store's listener.
//!
//! Writes that change a user (webhooks, [`crate::ClerkSync::invalidate`]) publish the user id;
//! every process listens and evicts it from its synced-user cache. A listener that lost its
//! connection may have missed notifications, so once it is listening again it clears the whole
//! cache. It does not clear it on disconnect: during a database outage the users already
//! synced keep being served (at most as stale as the user-cache TTL).

use std::sync::Arc;

use tokio::sync::watch;

use crate::stats::Counters;
use crate::sync::cache::SyncedUsers;

/// Evicts users from one [`crate::ClerkSync`]'s synced-user cache on behalf of a store's
/// listener task; cheap to clone. It does not keep the `ClerkSync` alive: when the last clone of
/// that is dropped, [`closed`](Self::closed) resolves and the task should end.
#[derive(Clone)]
pub struct Invalidator {
    users: SyncedUsers,
    counters: Arc<Counters>,
    closed: watch::Receiver<()>,
}

impl std::fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invalidator")
            .field("cached_users", &self.users.entry_count())
            .finish_non_exhaustive()
    }
}

impl Invalidator {
    pub(crate) fn new(
        users: SyncedUsers,
        counters: Arc<Counters>,
        closed: watch::Receiver<()>,
    ) -> Self {
        Self {
            users,
            counters,
            closed,
        }
    }

    /// Evicts one user: the next request of that user runs the upsert again.
    pub async fn evict(&self, user_id: &str) {
        Counters::bump(&self.counters.invalidations_received);
        self.users.evict(user_id).await;
    }

    /// Evicts every user; call it after (re)connecting, since notifications may have been lost.
    pub fn clear(&self) {
        self.users.clear();
    }

    /// Records that the listener (re)connected and is receiving notifications.
    pub fn connected(&self) {
        Counters::bump(&self.counters.listener_connects);
    }

    /// Resolves when the `ClerkSync` this invalidator serves has been dropped.
    pub async fn closed(&mut self) {
        // `changed` fails once the sender (held by the `ClerkSync`) is gone; nothing is sent.
        while self.closed.changed().await.is_ok() {}
    }
}
