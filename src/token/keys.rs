//! Signing keys: one PEM key, or a JWKS fetched over HTTP and cached by `kid`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::KeySource;
use crate::error::AuthError;
use crate::rsa::{VerifyingKey, key_from_components};
use crate::secret::Secret;
use crate::stats::Counters;

/// Tuning of the JWKS cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyOptions {
    /// At most one fetch per this interval, whatever the requests ask for.
    pub(crate) min_refresh_interval: Duration,
    /// A key set older than this is refreshed on the next cache miss, so removed keys go away.
    pub(crate) max_age: Duration,
    /// Timeout of one JWKS request.
    pub(crate) http_timeout: Duration,
}

pub(crate) enum KeyStore {
    Pem(Arc<VerifyingKey>),
    Jwks(Box<JwksKeys>),
}

/// Moves each time a refreshed key set lacks a `kid` the previous one had; cached sessions
/// remember the value they were verified under and are verified again once it moved.
pub(crate) type KeyEpoch = Arc<std::sync::atomic::AtomicU64>;

impl KeyStore {
    pub(crate) fn new(
        source: &KeySource,
        options: KeyOptions,
        counters: Arc<Counters>,
    ) -> Result<Self, crate::ConfigError> {
        let (url, bearer) = match source {
            KeySource::Pem(pem) => {
                // Checked when the config was built; checked again because the enum is public.
                let key = crate::rsa::key_from_pem(pem).ok_or_else(|| {
                    crate::ConfigError::new("CLERK_JWT_KEY", "not a PEM-encoded RSA public key")
                })?;
                return Ok(Self::Pem(Arc::new(key)));
            }
            KeySource::JwksUrl(url) => (url.clone(), None),
            KeySource::BackendApi {
                api_url,
                secret_key,
            } => (format!("{api_url}/v1/jwks"), Some(secret_key.clone())),
        };
        let client = reqwest::Client::builder()
            .timeout(options.http_timeout)
            .connect_timeout(options.http_timeout)
            .user_agent(concat!("clerk-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::ConfigError::new("CLERK_JWKS_URL", e.to_string()))?;
        Ok(Self::Jwks(Box::new(JwksKeys {
            url,
            bearer,
            client,
            options,
            counters,
            keys: RwLock::new(Arc::new(KeySet::default())),
            refresh: Mutex::new(RefreshState::default()),
            removals: KeyEpoch::default(),
            last_fetch: std::sync::atomic::AtomicU8::new(0),
        })))
    }

    /// The key-removal epoch; a PEM key is never removed, so its epoch never moves.
    pub(crate) fn epoch(&self) -> KeyEpoch {
        match self {
            Self::Pem(_) => KeyEpoch::default(),
            Self::Jwks(jwks) => jwks.removals.clone(),
        }
    }

    /// What [`crate::ClerkSync::health`] reports about the keys.
    pub(crate) fn health(&self) -> crate::health::KeyHealth {
        match self {
            Self::Pem(_) => crate::health::KeyHealth {
                source: "pem",
                keys: 1,
                age_secs: None,
                last_fetch: None,
            },
            Self::Jwks(jwks) => {
                let set = jwks.current();
                crate::health::KeyHealth {
                    source: "jwks",
                    keys: set.keys.len(),
                    age_secs: set.fetched_at.map(|at| at.elapsed().as_secs()),
                    last_fetch: match jwks.last_fetch.load(std::sync::atomic::Ordering::Relaxed) {
                        1 => Some("ok"),
                        2 => Some("error"),
                        _ => None,
                    },
                }
            }
        }
    }

    /// The key for `kid`. With a PEM key, every `kid` maps to that key.
    pub(crate) async fn key_for(&self, kid: &str) -> Result<Arc<VerifyingKey>, AuthError> {
        match self {
            Self::Pem(key) => Ok(key.clone()),
            Self::Jwks(jwks) => jwks.key_for(kid).await,
        }
    }
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
    fetched_at: Option<Instant>,
}

#[derive(Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    last_failed: bool,
}

pub(crate) struct JwksKeys {
    url: String,
    bearer: Option<Secret>,
    client: reqwest::Client,
    options: KeyOptions,
    counters: Arc<Counters>,
    keys: RwLock<Arc<KeySet>>,
    // Held across a fetch: requests with unknown `kid`s queue here instead of each fetching.
    refresh: Mutex<RefreshState>,
    removals: KeyEpoch,
    /// The last fetch: 0 none yet, 1 succeeded, 2 failed.
    last_fetch: std::sync::atomic::AtomicU8,
}

impl JwksKeys {
    fn current(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a whole `Arc`: writers only swap the pointer.
        match self.keys.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn key_for(&self, kid: &str) -> Result<Arc<VerifyingKey>, AuthError> {
        let set = self.current();
        if let Some(key) = set.keys.get(kid) {
            let stale = set
                .fetched_at
                .is_some_and(|at| at.elapsed() >= self.options.max_age);
            if !stale {
                return Ok(key.clone());
            }
            // Stale: one request refreshes, the others go on with the keys they have.
            let Ok(mut state) = self.refresh.try_lock() else {
                return Ok(key.clone());
            };
            self.fetch_if_allowed(&mut state).await;
            drop(state);
            return self.lookup_after_refresh(kid, false);
        }

        let mut state = self.refresh.lock().await;
        // Another request may have fetched the key while this one waited.
        if let Some(key) = self.current().keys.get(kid) {
            return Ok(key.clone());
        }
        self.fetch_if_allowed(&mut state).await;
        let failed = state.last_failed;
        drop(state);
        self.lookup_after_refresh(kid, failed)
    }

    fn lookup_after_refresh(
        &self,
        kid: &str,
        fetch_failed: bool,
    ) -> Result<Arc<VerifyingKey>, AuthError> {
        let set = self.current();
        match set.keys.get(kid) {
            Some(key) => Ok(key.clone()),
            // Without a working key source we cannot tell a rotated key from a forged one:
            // that is the server's problem, not the client's.
            None if fetch_failed || set.fetched_at.is_none() => Err(AuthError::KeysUnavailable {
                retry_after_secs: self.options.min_refresh_interval.as_secs().max(1),
            }),
            None => Err(AuthError::UnknownKey),
        }
    }

    async fn fetch_if_allowed(&self, state: &mut RefreshState) {
        let allowed = state
            .last_attempt
            .is_none_or(|at| at.elapsed() >= self.options.min_refresh_interval);
        if !allowed {
            return;
        }
        state.last_attempt = Some(Instant::now());
        Counters::bump(&self.counters.jwks_fetches);
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "fetched JWKS");
                state.last_failed = false;
                self.last_fetch
                    .store(1, std::sync::atomic::Ordering::Relaxed);
                let removed = self
                    .current()
                    .keys
                    .keys()
                    .any(|kid| !keys.contains_key(kid));
                let set = Arc::new(KeySet {
                    keys,
                    fetched_at: Some(Instant::now()),
                });
                match self.keys.write() {
                    Ok(mut guard) => *guard = set,
                    Err(poisoned) => *poisoned.into_inner() = set,
                }
                // After the swap: a session verified from now on reads the new epoch first.
                if removed {
                    self.removals
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    tracing::info!(url = %self.url, "a signing key left the JWKS: cached sessions are verified again");
                }
            }
            Err(error) => {
                // The last good keys stay in use.
                Counters::bump(&self.counters.jwks_fetch_failures);
                state.last_failed = true;
                self.last_fetch
                    .store(2, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(url = %self.url, %error, "JWKS fetch failed; keeping the last good keys");
            }
        }
    }

    #[tracing::instrument(name = "clerk_sync.jwks_fetch", skip_all, fields(url = %self.url))]
    async fn fetch(&self) -> Result<HashMap<String, Arc<VerifyingKey>>, String> {
        let mut request = self.client.get(&self.url);
        if let Some(secret) = &self.bearer {
            request = request.bearer_auth(secret.expose());
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        parse_jwks(&body)
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// RSA signing keys with a `kid`, by `kid`. Keys of other types or uses are skipped, so one
/// unfamiliar entry does not make the whole set unusable.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<VerifyingKey>>, String> {
    let raw: RawJwks =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let usable = matches!(jwk.algorithm, AlgorithmParameters::RSA(_))
            && !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
            && jwk
                .common
                .key_algorithm
                .is_none_or(|alg| alg == jsonwebtoken::jwk::KeyAlgorithm::RS256);
        let (true, Some(kid)) = (usable, jwk.common.key_id.clone()) else {
            continue;
        };
        let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
            continue;
        };
        if let Some(key) = key_from_components(&rsa.n, &rsa.e) {
            keys.insert(kid, Arc::new(key));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_parsing_keeps_rsa_signing_keys_only() {
        let body = br#"{"keys":[
            {"use":"sig","kty":"RSA","kid":"ins_a","alg":"RS256","n":"8Cm_BLWq9pdfmORNnvIVHqaYEXApYOgFNSxX4HoNYndgJKHVNCMpbiJY_PGw3CctilQ9XrrXAlyHeQgiDwtKCzOj4tSTQ0YfDelr0QFOgyCthSX0ElDRGopswp29q1NN-6vFclTRaggiNo7TWCioMV_3GlJy8o7M3lHLEyfD_AUMDQf461ZEEbU_4adKQQfNeaxL9pP72uID79qrSErmx19rdIPmz_xkG-yX1Y5sNt2b6qsJDkPWb-5X9uobz_yy9yTI1x8Lsy-lHwEpseKVhjfzoEdRGdz50EonvHlJzNl7zl8C4SNGfF4REbD5anxrF76rwvIIoSGthqAC4cMFlw","e":"AQAB"},
            {"use":"enc","kty":"RSA","kid":"ins_enc","n":"8Cm_BLWq9pdfmORNnvIVHqaYEXApYOgFNSxX4HoNYndgJKHVNCMpbiJY_PGw3CctilQ9XrrXAlyHeQgiDwtKCzOj4tSTQ0YfDelr0QFOgyCthSX0ElDRGopswp29q1NN-6vFclTRaggiNo7TWCioMV_3GlJy8o7M3lHLEyfD_AUMDQf461ZEEbU_4adKQQfNeaxL9pP72uID79qrSErmx19rdIPmz_xkG-yX1Y5sNt2b6qsJDkPWb-5X9uobz_yy9yTI1x8Lsy-lHwEpseKVhjfzoEdRGdz50EonvHlJzNl7zl8C4SNGfF4REbD5anxrF76rwvIIoSGthqAC4cMFlw","e":"AQAB"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"},
            {"kty":"RSA","n":"AQAB","e":"AQAB"},
            {"kty":"weird"}
        ]}"#;
        let keys = parse_jwks(body).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["ins_a"]);
    }

    #[test]
    fn non_jwks_documents_are_errors() {
        assert!(parse_jwks(b"<html>").is_err());
        assert!(parse_jwks(br#"{"no_keys":[]}"#).is_err());
    }
}
