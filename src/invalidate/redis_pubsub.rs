//! [`RedisChannel`]: invalidation over Redis `PUBLISH`/`SUBSCRIBE`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};

use super::{Backoff, ChannelEvent, ChannelStream, DEFAULT_CHANNEL, InvalidationChannel};
use crate::error::{StoreError, StoreFuture};
use crate::redis_conn::{self, RedisFailure};

/// A subscription with no traffic is checked this often with a `PING`: a connection that died
/// without a word (a network partition, a NAT that forgot it) is found and replaced.
const PING_EVERY: Duration = Duration::from_secs(30);

/// Invalidation over Redis pub/sub: [`publish`](InvalidationChannel::publish) is `PUBLISH`
/// on the channel `clerk_sync_users` (set with [`channel_name`](Self::channel_name)), the
/// payload a bare Clerk id, and every process `SUBSCRIBE`s on a connection of its own.
///
/// The same semantics as [`crate::PgChannel`] (`LISTEN`/`NOTIFY`), for where `LISTEN` is not
/// available: Postgres behind a transaction pooler (Neon's `-pooler` endpoints, PgBouncer)
/// for the users table, Redis for invalidation, chosen with
/// [`ClerkSyncBuilder::invalidation`](crate::ClerkSyncBuilder::invalidation). Webhook writes
/// and [`crate::ClerkSync::invalidate`] publish after the write commits. Pub/sub delivers to
/// the subscribers connected at that moment only, so after the subscription is lost and
/// made again the handle clears its whole cache: messages may have been missed meanwhile.
/// An idle subscription is checked with a `PING` every 30 s.
///
/// ```no_run
/// # async fn doc(config: clerk_sync::ClerkConfig, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use clerk_sync::{ClerkSync, PgUserStore, RedisChannel};
///
/// let clerk = ClerkSync::builder(config, PgUserStore::new(pool)) // pool on the pooled URL
///     .invalidation(RedisChannel::new("redis://127.0.0.1:6379")?)
///     .build()?;
/// tokio::spawn(clerk.background()); // subscribes
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisChannel {
    client: redis::Client,
    publisher: ConnectionManager,
    channel: Arc<str>,
    timeout: Duration,
}

impl std::fmt::Debug for RedisChannel {
    // The client's connection info holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChannel")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RedisChannel {
    /// A channel on the Redis at `url` (`redis://…`, `rediss://` for TLS). Nothing connects
    /// until the first publish or [`listen`](InvalidationChannel::listen). Call it inside a
    /// Tokio runtime; fails only on a URL that is not a Redis URL.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis_conn::client(url)?;
        Ok(Self {
            publisher: redis_conn::manager(client.clone(), redis_conn::DEFAULT_TIMEOUT)?,
            client,
            channel: DEFAULT_CHANNEL.into(),
            timeout: redis_conn::DEFAULT_TIMEOUT,
        })
    }

    /// Publishes and subscribes on `name` instead of `clerk_sync_users`: processes that share
    /// a cache use the same name, apps that share one Redis use different ones.
    pub fn channel_name(mut self, name: impl Into<String>) -> Self {
        self.channel = name.into().into();
        self
    }
}

struct Subscription {
    sink: PubSubSink,
    stream: PubSubStream,
}

struct Listening {
    client: redis::Client,
    channel: Arc<str>,
    timeout: Duration,
    subscription: Option<Subscription>,
    backoff: Backoff,
}

impl Listening {
    async fn next_event(&mut self) -> ChannelEvent {
        let Some(subscription) = &mut self.subscription else {
            let attempt = subscribe(&self.client, &self.channel, self.timeout);
            return self
                .backoff
                .subscribe(&mut self.subscription, attempt)
                .await;
        };
        let lost = loop {
            let message = tokio::time::timeout(PING_EVERY, subscription.stream.next()).await;
            match message {
                Ok(Some(message)) if message.get_channel_name() == &*self.channel => {
                    match std::str::from_utf8(message.get_payload_bytes()) {
                        Ok(id) => return ChannelEvent::Message(id.to_owned()),
                        Err(_) => {
                            tracing::warn!("ignored an invalidation message that is not UTF-8")
                        }
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    break StoreError::from(RedisFailure::Closed);
                }
                Err(_) => {
                    let ping = subscription.sink.ping::<redis::Value>();
                    if let Err(error) = redis_conn::bounded(self.timeout, ping).await {
                        break error;
                    }
                }
            }
        };
        // A new subscription (and a `Listening` event), so the handle clears its cache.
        self.subscription = None;
        self.backoff.lost();
        ChannelEvent::Lost(lost)
    }
}

/// One subscription attempt on `client`, each step bounded by `timeout`.
async fn subscribe(
    client: &redis::Client,
    channel: &str,
    timeout: Duration,
) -> Result<Subscription, StoreError> {
    let (mut sink, stream) = redis_conn::bounded(timeout, client.get_async_pubsub())
        .await?
        .split();
    redis_conn::bounded(timeout, sink.subscribe(channel)).await?;
    Ok(Subscription { sink, stream })
}

impl InvalidationChannel for RedisChannel {
    fn publish<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut connection = self.publisher.clone();
            let mut command = redis::cmd("PUBLISH");
            command.arg(&*self.channel).arg(id);
            let publish = command.query_async::<i64>(&mut connection);
            redis_conn::bounded(self.timeout, publish).await?;
            Ok(())
        })
    }

    fn publish_many<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut connection = self.publisher.clone();
            let mut pipeline = redis::pipe();
            for id in ids {
                pipeline.cmd("PUBLISH").arg(&*self.channel).arg(id).ignore();
            }
            let sent = pipeline.query_async::<()>(&mut connection);
            redis_conn::bounded(self.timeout, sent).await
        })
    }

    fn listen(&self) -> ChannelStream {
        let state = Listening {
            client: self.client.clone(),
            channel: self.channel.clone(),
            timeout: self.timeout,
            subscription: None,
            backoff: Backoff::default(),
        };
        futures_util::stream::unfold(state, |mut state| async move {
            let event = state.next_event().await;
            Some((event, state))
        })
        .boxed()
    }
}
