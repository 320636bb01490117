//! [`MachineVerifier`]: opaque machine tokens through the Backend API, cached and budgeted.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;

use super::token::MachineToken;
use crate::clerk_api::{ApiError, ClerkApi};
use crate::error::AuthError;
use crate::log_throttle::Throttle;
use crate::sync::budget::Budget;
use crate::time::unix_now_ms;
use crate::token_type::TokenType;

/// Tuning of [`MachineVerifier`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct MachineOptions {
    /// How long a valid token is trusted without asking again: the revocation latency.
    pub(crate) ttl: Duration,
    /// How long a refused token stays refused without asking again.
    pub(crate) negative_ttl: Duration,
    /// Deadline of one Backend API call.
    pub(crate) timeout: Duration,
    /// Per-client budget for tokens not cached yet: refill per second, burst.
    pub(crate) budget: (u32, u32),
    /// Most tokens (and clients) remembered.
    pub(crate) capacity: u64,
}

impl Default for MachineOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            budget: (10, 20),
            capacity: 100_000,
        }
    }
}

/// A verified answer, valid or refused, as it is cached.
#[derive(Debug, Clone)]
enum Answer {
    /// Valid, and trusted until the instant (Unix milliseconds) that ends its entry.
    Valid(Arc<MachineToken>, i64),
    Refused(AuthError),
}

/// A machine token the Backend API verified, and until when (Unix milliseconds) this
/// verification is trusted: the TTL after the call, never past the token's expiration.
#[derive(Debug, Clone)]
pub(crate) struct Trusted {
    pub(crate) token: Arc<MachineToken>,
    pub(crate) until_ms: i64,
}

/// Keeps each answer its TTL, a valid one never past its token's expiration.
struct AnswerExpiry(MachineOptions);

impl moka::Expiry<[u8; 32], Answer> for AnswerExpiry {
    fn expire_after_create(&self, _: &[u8; 32], answer: &Answer, _: Instant) -> Option<Duration> {
        Some(match answer {
            Answer::Valid(_, until_ms) => {
                let left = until_ms.saturating_sub(unix_now_ms()).max(0);
                Duration::from_millis(left.unsigned_abs())
            }
            Answer::Refused(_) => self.0.negative_ttl,
        })
    }
}

/// Verifies opaque machine tokens (`ak_…`, `mt_…`, `oat_…`) with the Backend API.
///
/// Answers are cached by the SHA-256 of the token (the secret itself is never a map key):
/// valid ones for the TTL and never past the token's `expiration`, refusals (revoked,
/// expired, unknown) for the negative TTL. Concurrent first uses of one token share one call.
/// A token not cached costs its client one call from a per-client token bucket first, so a
/// flood of random keys is refused with 429 before it reaches Clerk. Failures of the API
/// (down, slow, 429, a wrong secret key) are 503 and never cached.
pub(crate) struct MachineVerifier {
    api: ClerkApi,
    options: MachineOptions,
    answers: moka::future::Cache<[u8; 32], Answer>,
    budgets: moka::sync::Cache<Option<IpAddr>, Arc<Budget>>,
    /// A wrong secret key is logged once per interval, not per request.
    misconfigured: Throttle,
    /// Set once the missing client address has been warned about.
    shared_bucket_warned: AtomicBool,
}

impl MachineVerifier {
    pub(crate) fn new(api: ClerkApi, options: MachineOptions) -> Self {
        Self {
            api,
            answers: moka::future::Cache::builder()
                .max_capacity(options.capacity)
                .expire_after(AnswerExpiry(options))
                .build(),
            budgets: moka::sync::Cache::builder()
                .max_capacity(options.capacity)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            options,
            misconfigured: Throttle::new(Duration::from_secs(60)),
            shared_bucket_warned: AtomicBool::new(false),
        }
    }

    /// The token's answer; `client` is the caller's network (by [`crate::ClientAddress`]),
    /// whose budget pays for a token not cached (`None`: one shared bucket).
    pub(crate) async fn verify(
        &self,
        token_type: TokenType,
        token: &str,
        client: Option<IpAddr>,
    ) -> Result<Trusted, AuthError> {
        let key: [u8; 32] = digest::digest(&digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        let answer = self
            .answers
            .try_get_with(key, self.ask(token_type, token, client))
            .await;
        match answer {
            Ok(Answer::Valid(token, until_ms)) => Ok(Trusted { token, until_ms }),
            Ok(Answer::Refused(error)) => Err(error),
            Err(error) => Err((*error).clone()),
        }
    }

    /// The one Backend API call behind a cache miss, after the client's budget allows it.
    async fn ask(
        &self,
        token_type: TokenType,
        token: &str,
        client: Option<IpAddr>,
    ) -> Result<Answer, AuthError> {
        if client.is_none() && !self.shared_bucket_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the server provides no client address (ConnectInfo<SocketAddr>): machine \
                 tokens not cached yet share one verification budget for all clients; serve \
                 the app with `into_make_service_with_connect_info::<SocketAddr>()`"
            );
        }
        let budget = self.budgets.get_with(client, || {
            Arc::new(Budget::new(self.options.budget.0, self.options.budget.1))
        });
        if let Err(wait) = budget.take_or_wait() {
            tracing::debug!(client = ?client, "machine-token verification budget spent");
            return Err(AuthError::VerificationRateLimited {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let called = tokio::time::timeout(
            self.options.timeout,
            self.api.verify_machine_token(token_type, token),
        )
        .await;
        let unavailable = AuthError::VerificationUnavailable {
            retry_after_secs: 1,
        };
        match called {
            Ok(Ok(verdict)) => Ok(match verdict.into_result() {
                Ok(machine) => {
                    let ttl_ms = i64::try_from(self.options.ttl.as_millis()).unwrap_or(i64::MAX);
                    let mut until_ms = unix_now_ms().saturating_add(ttl_ms);
                    if let Some(expiration_ms) = machine.expiration_ms {
                        until_ms = until_ms.min(expiration_ms);
                    }
                    Answer::Valid(Arc::new(machine), until_ms)
                }
                Err(refusal) => Answer::Refused(refusal),
            }),
            Ok(Err(ApiError::Rejected { status, message }))
                if matches!(status.as_u16(), 401 | 403) =>
            {
                if let Some(failures) = self.misconfigured.hit() {
                    tracing::error!(
                        %status,
                        %message,
                        failures,
                        "the Backend API refused CLERK_SECRET_KEY: machine tokens cannot be \
                         verified until it is fixed"
                    );
                }
                Err(unavailable)
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, token.r#type = %token_type, "machine-token verification failed");
                Err(unavailable)
            }
            Err(_) => {
                tracing::warn!(token.r#type = %token_type, "machine-token verification timed out");
                Err(unavailable)
            }
        }
    }
}

#[cfg(test)]
#[cfg(feature = "test-util")]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::clerk_api::RetryPolicy;
    use crate::testing::{FakeClerkApi, Fault};

    const USER: &str = "user_2xhFjEI5X2qWRvtV13BzSj8H6Dk";

    async fn setup(options: MachineOptions) -> (FakeClerkApi, Arc<MachineVerifier>) {
        let fake = FakeClerkApi::start(0).await.unwrap();
        let api = fake.client().with_retry(RetryPolicy::none());
        (fake, Arc::new(MachineVerifier::new(api, options)))
    }

    #[tokio::test]
    async fn one_call_per_token_however_many_requests_and_however_concurrent() {
        let (fake, verifier) = setup(MachineOptions::default()).await;
        fake.add_machine_token(
            "ak_one",
            TokenType::ApiKey,
            FakeClerkApi::api_key_answer(USER),
        );
        for _ in 0..1_000 {
            let machine = verifier
                .verify(TokenType::ApiKey, "ak_one", None)
                .await
                .unwrap();
            assert_eq!(machine.token.subject, USER);
        }
        assert_eq!(fake.verify_requests(TokenType::ApiKey), 1);

        fake.add_machine_token(
            "ak_two",
            TokenType::ApiKey,
            FakeClerkApi::api_key_answer(USER),
        );
        fake.set_latency(Duration::from_millis(50));
        let ok = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200u8 {
            let (verifier, ok) = (verifier.clone(), ok.clone());
            // From 200 clients: only the one call's client pays.
            let client = Some(IpAddr::from([10, 0, 0, i]));
            tasks.spawn(async move {
                if verifier
                    .verify(TokenType::ApiKey, "ak_two", client)
                    .await
                    .is_ok()
                {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        assert_eq!(ok.load(Ordering::SeqCst), 200);
        assert_eq!(
            fake.verify_requests(TokenType::ApiKey),
            2,
            "200 first uses, one call"
        );
    }

    #[tokio::test]
    async fn refusals_are_cached_briefly_and_failures_not_at_all() {
        let options = MachineOptions {
            negative_ttl: Duration::from_millis(300),
            ..MachineOptions::default()
        };
        let (fake, verifier) = setup(options).await;
        for _ in 0..100 {
            assert_eq!(
                verifier
                    .verify(TokenType::ApiKey, "ak_unknown", None)
                    .await
                    .unwrap_err(),
                AuthError::InvalidToken
            );
        }
        assert_eq!(
            fake.verify_requests(TokenType::ApiKey),
            1,
            "one call per interval"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        verifier
            .verify(TokenType::ApiKey, "ak_unknown", None)
            .await
            .unwrap_err();
        assert_eq!(fake.verify_requests(TokenType::ApiKey), 2);

        let mut revoked = FakeClerkApi::m2m_answer("mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk");
        revoked["revoked"] = true.into();
        fake.add_machine_token("mt_revoked", TokenType::M2mToken, revoked);
        assert_eq!(
            verifier
                .verify(TokenType::M2mToken, "mt_revoked", None)
                .await
                .unwrap_err(),
            AuthError::TokenRevoked
        );

        // Clerk failing: 503 each time, and the next request asks again.
        fake.add_machine_token(
            "oat_ok",
            TokenType::OAuthToken,
            FakeClerkApi::oauth_answer(USER),
        );
        fake.fail_next(1, Fault::ServerError(503));
        assert_eq!(
            verifier
                .verify(TokenType::OAuthToken, "oat_ok", None)
                .await
                .unwrap_err(),
            AuthError::VerificationUnavailable {
                retry_after_secs: 1
            }
        );
        fake.fail_next(
            1,
            Fault::TooManyRequests {
                retry_after_secs: 5,
            },
        );
        assert!(matches!(
            verifier.verify(TokenType::OAuthToken, "oat_ok", None).await,
            Err(AuthError::VerificationUnavailable { .. })
        ));
        assert!(
            verifier
                .verify(TokenType::OAuthToken, "oat_ok", None)
                .await
                .is_ok()
        );
        assert_eq!(fake.verify_requests(TokenType::OAuthToken), 3);
    }

    #[tokio::test]
    async fn a_wrong_secret_key_is_a_503_never_a_refusal() {
        let fake = FakeClerkApi::start(0).await.unwrap();
        let wrong = ClerkApi::new(&fake.url(), "sk_test_wrong")
            .unwrap()
            .with_retry(RetryPolicy::none());
        let verifier = MachineVerifier::new(wrong, MachineOptions::default());
        fake.add_machine_token(
            "ak_good",
            TokenType::ApiKey,
            FakeClerkApi::api_key_answer(USER),
        );
        for _ in 0..3 {
            assert!(matches!(
                verifier.verify(TokenType::ApiKey, "ak_good", None).await,
                Err(AuthError::VerificationUnavailable { .. })
            ));
        }
        assert_eq!(
            fake.verify_requests(TokenType::ApiKey),
            3,
            "not negatively cached"
        );
    }

    #[tokio::test]
    async fn unknown_tokens_from_one_client_spend_its_budget_then_get_429() {
        let options = MachineOptions {
            budget: (1, 20),
            ..MachineOptions::default()
        };
        let (fake, verifier) = setup(options).await;
        let client = Some(IpAddr::from([203, 0, 113, 7]));
        let mut limited = 0;
        for i in 0..100 {
            match verifier
                .verify(TokenType::ApiKey, &format!("ak_random{i}"), client)
                .await
            {
                Err(AuthError::InvalidToken) => {}
                Err(AuthError::VerificationRateLimited { retry_after_secs }) => {
                    assert!(retry_after_secs >= 1);
                    limited += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            fake.verify_requests(TokenType::ApiKey),
            20,
            "the burst, then nothing"
        );
        assert_eq!(limited, 80);
        // Another client has its own budget; a cached token costs no budget at all.
        let other = Some(IpAddr::from([203, 0, 113, 8]));
        fake.add_machine_token(
            "ak_known",
            TokenType::ApiKey,
            FakeClerkApi::api_key_answer(USER),
        );
        assert!(
            verifier
                .verify(TokenType::ApiKey, "ak_known", other)
                .await
                .is_ok()
        );
        assert_eq!(
            verifier
                .verify(TokenType::ApiKey, "ak_random0", client)
                .await
                .unwrap_err(),
            AuthError::InvalidToken,
            "the refusal is cached: no budget needed"
        );
        assert_eq!(fake.verify_requests(TokenType::ApiKey), 21);
    }

    #[tokio::test]
    async fn a_cached_answer_never_outlives_the_tokens_expiration() {
        let (fake, verifier) = setup(MachineOptions::default()).await;
        let mut short = FakeClerkApi::api_key_answer(USER);
        short["expiration"] = (unix_now_ms() + 1_500).into();
        fake.add_machine_token("ak_short", TokenType::ApiKey, short);
        assert!(
            verifier
                .verify(TokenType::ApiKey, "ak_short", None)
                .await
                .is_ok()
        );
        assert!(
            verifier
                .verify(TokenType::ApiKey, "ak_short", None)
                .await
                .is_ok()
        );
        assert_eq!(fake.verify_requests(TokenType::ApiKey), 1);
        tokio::time::sleep(Duration::from_millis(1_700)).await;
        // Gone from the cache at its expiration: asked again, and now refused as expired.
        assert_eq!(
            verifier
                .verify(TokenType::ApiKey, "ak_short", None)
                .await
                .unwrap_err(),
            AuthError::TokenExpired
        );
        assert_eq!(fake.verify_requests(TokenType::ApiKey), 2);
    }
}
