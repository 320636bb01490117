//! Cache invalidation across processes: the [`InvalidationChannel`] trait and its PostgreSQL
//! (`LISTEN`/`NOTIFY`) and Redis (`PUBLISH`/`SUBSCRIBE`) implementations.
//!
//! A message is a bare Clerk id: `user_…` evicts that user from every process's synced-user
//! cache (and so every cached session of theirs), `org_…` an organization (membership changes
//! publish the user id). Writes that change a user (webhooks, [`crate::ClerkSync::invalidate`])
//! publish after they commit. A listener that lost its connection may have missed messages, so
//! once it is listening again the whole synced-user cache is cleared; it is not cleared on the
//! disconnect itself, so during an outage the users already synced keep being served (at most
//! as stale as the user-cache TTL).

#[cfg(feature = "postgres")]
mod postgres;

#[cfg(feature = "redis")]
mod redis_pubsub;

#[cfg(feature = "postgres")]
pub use postgres::PgChannel;
#[cfg(feature = "redis")]
pub use redis_pubsub::RedisChannel;

use crate::error::{StoreError, StoreFuture};

/// What a channel's [`listen`](InvalidationChannel::listen) stream yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// Subscribed (again): messages published from now on arrive. After the first one, each
    /// `Listening` makes the handle clear its whole cache, since messages may have been missed.
    Listening,
    /// One message: a bare Clerk id (`user_…`, `org_…`).
    Message(String),
    /// The subscription failed or was lost; the stream tries again by itself, with a backoff.
    Lost(StoreError),
}

/// The stream of [`ChannelEvent`]s returned by [`InvalidationChannel::listen`]. It never ends
/// on its own; dropping it unsubscribes.
pub type ChannelStream = futures_util::stream::BoxStream<'static, ChannelEvent>;

/// Tells every process sharing a store to evict a cached user or organization.
///
/// Chosen on the builder with [`ClerkSyncBuilder::invalidation`](crate::ClerkSyncBuilder::invalidation);
/// by default the store's own ([`UserStore::invalidation_channel`](crate::store::UserStore::invalidation_channel)).
/// The handle publishes after every write that changes a user and listens in its
/// [`background`](crate::ClerkSync::background) task.
pub trait InvalidationChannel: Send + Sync + 'static {
    /// Sends `id` (a bare Clerk id) to every process listening, this one included.
    fn publish<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()>;

    /// Sends every id of `ids` (a repair's batch). The default publishes them one by one;
    /// the PostgreSQL and Redis channels send a batch in one round trip.
    fn publish_many<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            for id in ids {
                self.publish(id).await?;
            }
            Ok(())
        })
    }

    /// Subscribes: a stream that starts with [`ChannelEvent::Listening`] once subscribed,
    /// then yields messages, and reconnects by itself after a [`ChannelEvent::Lost`].
    fn listen(&self) -> ChannelStream;
}

/// The channel name both built-in channels use by default; the payload is a bare Clerk id.
#[cfg(any(feature = "postgres", feature = "redis"))]
const DEFAULT_CHANNEL: &str = "clerk_sync_users";

/// A listening stream's wait before its next subscription attempt: none before the first,
/// 100 ms after a loss, doubling to 10 s while attempts fail.
#[cfg(any(feature = "postgres", feature = "redis"))]
#[derive(Debug, Default)]
struct Backoff(Option<std::time::Duration>);

#[cfg(any(feature = "postgres", feature = "redis"))]
impl Backoff {
    const MIN: std::time::Duration = std::time::Duration::from_millis(100);
    const MAX: std::time::Duration = std::time::Duration::from_secs(10);

    /// Waits as long as the last outcome says, then runs one subscription attempt: on success
    /// `slot` holds the subscription and the event is [`ChannelEvent::Listening`].
    async fn subscribe<S>(
        &mut self,
        slot: &mut Option<S>,
        attempt: impl Future<Output = Result<S, StoreError>>,
    ) -> ChannelEvent {
        if let Some(wait) = self.0 {
            tokio::time::sleep(wait).await;
        }
        match attempt.await {
            Ok(subscription) => {
                *slot = Some(subscription);
                self.0 = None;
                ChannelEvent::Listening
            }
            Err(error) => {
                self.0 = Some(self.0.map_or(Self::MIN, |wait| (wait * 2).min(Self::MAX)));
                ChannelEvent::Lost(error)
            }
        }
    }

    /// A subscription was lost: the next attempt waits the shortest time.
    fn lost(&mut self) {
        self.0 = Some(Self::MIN);
    }
}
