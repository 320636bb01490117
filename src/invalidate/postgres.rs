//! [`PgChannel`]: invalidation over PostgreSQL's `LISTEN`/`NOTIFY`.

use futures_util::StreamExt as _;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::{Backoff, ChannelEvent, ChannelStream, DEFAULT_CHANNEL, InvalidationChannel};
use crate::error::{StoreError, StoreFuture};

/// Invalidation over `NOTIFY`/`LISTEN` on the channel `clerk_sync_users`: the default of
/// [`crate::PgUserStore`], on the store's pool.
///
/// The listener holds one connection of `pool` for as long as the handle's background task
/// runs, and `LISTEN` needs a session: give it a pool on a direct connection string, not a
/// PgBouncer transaction-mode one (Neon's `-pooler` endpoints). With the users table behind
/// the pooler, build `PgChannel::new(direct_pool)` and pass it to
/// [`ClerkSyncBuilder::invalidation`](crate::ClerkSyncBuilder::invalidation).
#[derive(Clone)]
pub struct PgChannel {
    pool: PgPool,
}

impl std::fmt::Debug for PgChannel {
    // The pool's options hold the database password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgChannel")
            .field("channel", &DEFAULT_CHANNEL)
            .finish_non_exhaustive()
    }
}

impl PgChannel {
    /// A channel on `pool` (one of its connections is held while listening).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

struct Listening {
    pool: PgPool,
    listener: Option<PgListener>,
    backoff: Backoff,
}

impl Listening {
    async fn next_event(&mut self) -> ChannelEvent {
        let Some(listener) = &mut self.listener else {
            return self
                .backoff
                .subscribe(&mut self.listener, async { Ok(connect(&self.pool).await?) })
                .await;
        };
        let lost = match listener.try_recv().await {
            Ok(Some(notification)) => {
                return ChannelEvent::Message(notification.payload().to_owned());
            }
            Ok(None) => StoreError::Other("the LISTEN connection was closed".into()),
            Err(error) => error.into(),
        };
        // A new listener (and a `Listening` event) rather than sqlx's silent reconnect, so
        // the handle knows to clear its cache.
        self.listener = None;
        self.backoff.lost();
        ChannelEvent::Lost(lost)
    }
}

/// The most bytes of ids one `publish_many` statement carries.
const NOTIFY_STATEMENT_BYTES: usize = 12 * 1024;

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(DEFAULT_CHANNEL).await?;
    Ok(listener)
}

impl InvalidationChannel for PgChannel {
    fn publish<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query("SELECT pg_notify($1, $2)")
                .persistent(false)
                .bind(DEFAULT_CHANNEL)
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn publish_many<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // Statements of at most 12 KiB of ids: sqlx leaves Nagle's algorithm on, and a
            // larger message waits for PostgreSQL's delayed ACK (40 ms; see the store's
            // import).
            let mut rest = ids;
            while !rest.is_empty() {
                let mut bytes = 0;
                let count = rest
                    .iter()
                    .take_while(|id| {
                        bytes += id.len() + 4;
                        bytes <= NOTIFY_STATEMENT_BYTES
                    })
                    .count()
                    .max(1);
                let (chunk, tail) = rest.split_at(count);
                rest = tail;
                sqlx::query("SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id")
                    .persistent(false)
                    .bind(DEFAULT_CHANNEL)
                    .bind(chunk)
                    .execute(&self.pool)
                    .await?;
            }
            Ok(())
        })
    }

    fn listen(&self) -> ChannelStream {
        let max = self.pool.options().get_max_connections();
        if max < 2 {
            tracing::warn!(
                max_connections = max,
                "the invalidation listener holds one connection of the pool: user upserts \
                 will wait for a free connection; raise max_connections"
            );
        }
        let state = Listening {
            pool: self.pool.clone(),
            listener: None,
            backoff: Backoff::default(),
        };
        futures_util::stream::unfold(state, |mut state| async move {
            let event = state.next_event().await;
            Some((event, state))
        })
        .boxed()
    }
}
