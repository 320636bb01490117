//! Connections to Redis, shared by [`crate::ratelimit::RedisRateLimitStore`] and
//! [`crate::RedisChannel`]: the URL, timeouts, and errors as [`StoreError`]s.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::StoreError;

/// Connecting and each command give up after this long by default: a Redis outage must cost
/// a request a fraction of a second, not the seconds of a TCP timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// A Redis failure, as the cause of a [`StoreError::Other`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisFailure {
    #[error("Redis: {0}")]
    Command(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the Redis subscription connection was closed")]
    Closed,
}

impl From<RedisFailure> for StoreError {
    fn from(failure: RedisFailure) -> Self {
        StoreError::Other(Box::new(failure))
    }
}

/// The client for `url` (`redis://`, `rediss://` for TLS, `unix://`); an error names the
/// setting without echoing the URL (it may hold a password).
pub(crate) fn client(url: &str) -> Result<redis::Client, StoreError> {
    redis::Client::open(url).map_err(|error| {
        StoreError::Other(format!("REDIS_URL is not a Redis URL ({:?})", error.kind()).into())
    })
}

/// A connection manager on `client` that connects on first use and after every loss, each
/// attempt bounded by `timeout`, one retry: a request never waits out a long backoff (the
/// next request tries again).
///
/// The manager spawns its reconnect watcher, so this must run inside a Tokio runtime.
pub(crate) fn manager(
    client: redis::Client,
    timeout: Duration,
) -> Result<ConnectionManager, StoreError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(timeout);
    ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|error| RedisFailure::Command(error).into())
}

/// `future`, failed with [`RedisFailure::TimedOut`] past `timeout` (a reconnect in progress
/// is waited for, at most that long).
pub(crate) async fn bounded<T>(
    timeout: Duration,
    future: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result.map_err(|error| RedisFailure::Command(error).into()),
        Err(_) => Err(RedisFailure::TimedOut(timeout).into()),
    }
}
