//! [`ClerkConfig`]: which Clerk instance to trust and where its signing keys come from.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ConfigError;
use crate::secret::{Secret, WebhookSecret};

pub(crate) const DEFAULT_API_URL: &str = "https://api.clerk.com";

/// Where the verifier gets the public keys that sign session tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// One PEM public key (`CLERK_JWT_KEY`): no network at all.
    Pem(String),
    /// A JWKS document at this URL (`CLERK_JWKS_URL`, or the Frontend API's
    /// `https://<host>/.well-known/jwks.json` derived from the publishable key).
    JwksUrl(String),
    /// The Backend API's `GET /v1/jwks`, authenticated with the secret key.
    BackendApi {
        /// Base URL of the Backend API, `https://api.clerk.com` by default.
        api_url: String,
        /// The instance's secret key (`sk_...`).
        secret_key: Secret,
    },
}

/// Which Clerk instance to trust: issuer, key source and authorized parties.
///
/// Build it from the environment with [`ClerkConfig::from_env`] (names follow Clerk's SDKs) or
/// with [`ClerkConfig::builder`]. Secrets are redacted in `Debug` output.
#[derive(Debug, Clone)]
pub struct ClerkConfig {
    pub(crate) issuer: Option<String>,
    pub(crate) key_source: KeySource,
    pub(crate) authorized_parties: Vec<String>,
    pub(crate) secret_key: Option<Secret>,
    pub(crate) api_url: String,
    pub(crate) webhook_secret: Option<WebhookSecret>,
    /// Clerk's cookie-name suffix for this instance, derived from the publishable key.
    pub(crate) cookie_suffix: Option<String>,
}

impl ClerkConfig {
    /// Starts a builder with nothing set.
    pub fn builder() -> ClerkConfigBuilder {
        ClerkConfigBuilder::default()
    }

    /// Reads the configuration from the environment.
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `CLERK_PUBLISHABLE_KEY` | `pk_test_...`/`pk_live_...`; the issuer and Frontend API JWKS URL are decoded from it |
    /// | `CLERK_SECRET_KEY` | `sk_...`; enables the Backend API JWKS as key source |
    /// | `CLERK_JWT_KEY` | PEM public key; networkless verification, preferred over any JWKS |
    /// | `CLERK_JWKS_URL` | explicit JWKS URL (self-hosted proxies, tests) |
    /// | `CLERK_ISSUER` | explicit issuer, overrides the one decoded from the publishable key |
    /// | `CLERK_AUTHORIZED_PARTIES` | comma-separated origins accepted in `azp` |
    /// | `CLERK_API_URL` | Backend API base URL, default `https://api.clerk.com` |
    /// | `CLERK_WEBHOOK_SIGNING_SECRET` | `whsec_...`; enables [`crate::ClerkSync::webhook_router`] |
    ///
    /// Empty variables count as unset. The error names the variable at fault.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`ClerkConfig::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let mut builder = Self::builder();
        if let Some(value) = get("CLERK_PUBLISHABLE_KEY") {
            builder = builder.publishable_key(value);
        }
        if let Some(value) = get("CLERK_SECRET_KEY") {
            builder = builder.secret_key(value);
        }
        if let Some(value) = get("CLERK_JWT_KEY") {
            builder = builder.jwt_key_pem(value);
        }
        if let Some(value) = get("CLERK_JWKS_URL") {
            builder = builder.jwks_url(value);
        }
        if let Some(value) = get("CLERK_ISSUER") {
            builder = builder.issuer(value);
        }
        if let Some(value) = get("CLERK_AUTHORIZED_PARTIES") {
            builder = builder.authorized_parties(value.split(',').map(str::trim));
        }
        if let Some(value) = get("CLERK_API_URL") {
            builder = builder.api_url(value);
        }
        if let Some(value) = get("CLERK_WEBHOOK_SIGNING_SECRET") {
            builder = builder.webhook_signing_secret(value);
        }
        builder.build()
    }

    /// The issuer every token's `iss` must equal, or `None` when the check was turned off.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The key source chosen by precedence.
    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    /// Origins accepted in the `azp` claim.
    pub fn authorized_parties(&self) -> &[String] {
        &self.authorized_parties
    }

    /// The secret key, when configured.
    pub fn secret_key(&self) -> Option<&Secret> {
        self.secret_key.as_ref()
    }

    /// The Backend API base URL.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }
}

/// Builder for [`ClerkConfig`]; each setter mirrors one environment variable.
///
/// Precedence, as in Clerk's SDKs: key source `CLERK_JWT_KEY` > `CLERK_JWKS_URL` > Backend API
/// JWKS (secret key) > Frontend API JWKS (publishable key); issuer `CLERK_ISSUER` > decoded
/// from the publishable key. Without an issuer, [`build`](Self::build) fails unless
/// [`skip_issuer_check`](Self::skip_issuer_check) was called.
#[derive(Default, Clone)]
pub struct ClerkConfigBuilder {
    publishable_key: Option<String>,
    secret_key: Option<Secret>,
    jwt_key_pem: Option<String>,
    jwks_url: Option<String>,
    issuer: Option<String>,
    skip_issuer_check: bool,
    authorized_parties: Vec<String>,
    api_url: Option<String>,
    webhook_secret: Option<Secret>,
}

impl fmt::Debug for ClerkConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClerkConfigBuilder")
            .field("publishable_key", &self.publishable_key)
            .field("secret_key", &self.secret_key)
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("authorized_parties", &self.authorized_parties)
            .field("webhook_secret", &self.webhook_secret)
            .finish_non_exhaustive()
    }
}

impl ClerkConfigBuilder {
    /// `CLERK_PUBLISHABLE_KEY`. Default: unset.
    pub fn publishable_key(mut self, key: impl Into<String>) -> Self {
        self.publishable_key = Some(key.into());
        self
    }

    /// `CLERK_SECRET_KEY`. Default: unset.
    pub fn secret_key(mut self, key: impl Into<String>) -> Self {
        self.secret_key = Some(Secret::new(key));
        self
    }

    /// `CLERK_JWT_KEY`: the instance's PEM public key. Default: unset.
    pub fn jwt_key_pem(mut self, pem: impl Into<String>) -> Self {
        self.jwt_key_pem = Some(pem.into());
        self
    }

    /// `CLERK_JWKS_URL`. Default: unset.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// `CLERK_ISSUER`. Default: decoded from the publishable key.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Accepts tokens from any issuer. Dangerous: with a JWKS shared by several Clerk
    /// instances, or a key reused across them, their tokens would pass. Default: off.
    pub fn skip_issuer_check(mut self) -> Self {
        self.skip_issuer_check = true;
        self
    }

    /// `CLERK_AUTHORIZED_PARTIES`: origins accepted in `azp`. Default: none.
    pub fn authorized_parties<I, S>(mut self, parties: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.authorized_parties = parties
            .into_iter()
            .map(Into::into)
            .filter(|party: &String| !party.is_empty())
            .collect();
        self
    }

    /// `CLERK_API_URL`. Default: `https://api.clerk.com`.
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = Some(url.into());
        self
    }

    /// `CLERK_WEBHOOK_SIGNING_SECRET`: the endpoint's `whsec_...` signing secret.
    /// Default: unset (no webhook endpoint).
    pub fn webhook_signing_secret(mut self, secret: impl Into<String>) -> Self {
        self.webhook_secret = Some(Secret::new(secret));
        self
    }

    /// Checks the settings and applies the precedence rules.
    pub fn build(self) -> Result<ClerkConfig, ConfigError> {
        let webhook_secret = self
            .webhook_secret
            .as_ref()
            .map(|secret| WebhookSecret::parse(secret.expose()))
            .transpose()?;
        let frontend_host = self
            .publishable_key
            .as_deref()
            .map(frontend_api_host)
            .transpose()?;
        let api_url = match self.api_url {
            Some(url) => {
                check_url("CLERK_API_URL", &url)?;
                url.trim_end_matches('/').to_owned()
            }
            None => DEFAULT_API_URL.to_owned(),
        };
        if let Some(secret) = &self.secret_key
            && !secret.expose().starts_with("sk_")
        {
            return Err(ConfigError::new(
                "CLERK_SECRET_KEY",
                "expected a key starting with `sk_test_` or `sk_live_`",
            ));
        }

        let key_source = if let Some(pem) = self.jwt_key_pem {
            // Clerk's dashboard shows the key with literal `\n`s when copied into one line.
            let pem = pem.replace("\\n", "\n");
            crate::rsa::key_from_pem(&pem).ok_or_else(|| {
                ConfigError::new("CLERK_JWT_KEY", "not a PEM-encoded RSA public key")
            })?;
            KeySource::Pem(pem)
        } else if let Some(url) = self.jwks_url {
            check_url("CLERK_JWKS_URL", &url)?;
            KeySource::JwksUrl(url)
        } else if let Some(secret_key) = self.secret_key.clone() {
            KeySource::BackendApi {
                api_url: api_url.clone(),
                secret_key,
            }
        } else if let Some(host) = &frontend_host {
            KeySource::JwksUrl(format!("https://{host}/.well-known/jwks.json"))
        } else {
            return Err(ConfigError::new(
                "CLERK_PUBLISHABLE_KEY",
                "no key source: set CLERK_PUBLISHABLE_KEY, CLERK_SECRET_KEY, CLERK_JWT_KEY or CLERK_JWKS_URL",
            ));
        };

        let issuer = match (self.issuer, frontend_host) {
            (Some(issuer), _) => {
                check_url("CLERK_ISSUER", &issuer)?;
                Some(issuer.trim_end_matches('/').to_owned())
            }
            (None, Some(host)) => Some(format!("https://{host}")),
            (None, None) if self.skip_issuer_check => {
                tracing::warn!("issuer check disabled: tokens from any issuer will be accepted");
                None
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "CLERK_ISSUER",
                    "no issuer: set CLERK_ISSUER or CLERK_PUBLISHABLE_KEY (or call skip_issuer_check)",
                ));
            }
        };

        let cookie_suffix = self.publishable_key.as_deref().map(cookie_suffix);
        Ok(ClerkConfig {
            issuer,
            key_source,
            authorized_parties: self.authorized_parties,
            secret_key: self.secret_key,
            api_url,
            webhook_secret,
            cookie_suffix,
        })
    }
}

/// The cookie-name suffix Clerk uses when several apps share a domain: the first 8
/// characters of the URL-safe base64 of SHA-1 of the publishable key.
pub(crate) fn cookie_suffix(publishable_key: &str) -> String {
    let sha1 = digest::digest(
        &digest::SHA1_FOR_LEGACY_USE_ONLY,
        publishable_key.as_bytes(),
    );
    let mut encoded = URL_SAFE_NO_PAD.encode(sha1.as_ref());
    encoded.truncate(8);
    encoded
}

/// An absolute `http://` or `https://` URL with a host, as `url::Url` parses it. The WHATWG
/// parser reads `https:///x` as the host `x`; a URL written that way is refused all the same.
pub(crate) fn check_url(setting: &'static str, url: &str) -> Result<(), ConfigError> {
    let written_with_host = url
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
    match url::Url::parse(url) {
        Ok(parsed)
            if written_with_host
                && matches!(parsed.scheme(), "http" | "https")
                && parsed.host_str().is_some_and(|host| !host.is_empty()) =>
        {
            Ok(())
        }
        _ => Err(ConfigError::new(
            setting,
            "expected an absolute http:// or https:// URL",
        )),
    }
}

/// Decodes the Frontend API host from a publishable key: `pk_test_`/`pk_live_` followed by
/// the base64 of `<host>$` (Clerk writes it without padding; padding is accepted too).
pub(crate) fn frontend_api_host(key: &str) -> Result<String, ConfigError> {
    const SETTING: &str = "CLERK_PUBLISHABLE_KEY";
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let encoded = key
        .trim()
        .strip_prefix("pk_test_")
        .or_else(|| key.trim().strip_prefix("pk_live_"))
        .ok_or_else(|| {
            ConfigError::new(
                SETTING,
                "expected a key starting with `pk_test_` or `pk_live_`",
            )
        })?;
    let bytes = LENIENT
        .decode(encoded)
        .or_else(|_| general_purpose::URL_SAFE_NO_PAD.decode(encoded))
        .map_err(|_| {
            ConfigError::new(
                SETTING,
                "the part after `pk_test_`/`pk_live_` is not base64",
            )
        })?;
    let decoded = String::from_utf8(bytes)
        .map_err(|_| ConfigError::new(SETTING, "the decoded key is not UTF-8"))?;
    let host = decoded
        .strip_suffix('$')
        .ok_or_else(|| ConfigError::new(SETTING, "the decoded key does not end with `$`"))?;
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !valid {
        return Err(ConfigError::new(
            SETTING,
            "the decoded key is not a host name",
        ));
    }
    Ok(host.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn pk(host: &str) -> String {
        format!(
            "pk_test_{}",
            general_purpose::STANDARD_NO_PAD.encode(format!("{host}$"))
        )
    }

    fn from_vars(vars: &[(&str, &str)]) -> Result<ClerkConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ClerkConfig::from_lookup(|name| vars.get(name).cloned())
    }

    const PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA8Cm/BLWq9pdfmORNnvIV
HqaYEXApYOgFNSxX4HoNYndgJKHVNCMpbiJY/PGw3CctilQ9XrrXAlyHeQgiDwtK
CzOj4tSTQ0YfDelr0QFOgyCthSX0ElDRGopswp29q1NN+6vFclTRaggiNo7TWCio
MV/3GlJy8o7M3lHLEyfD/AUMDQf461ZEEbU/4adKQQfNeaxL9pP72uID79qrSErm
x19rdIPmz/xkG+yX1Y5sNt2b6qsJDkPWb+5X9uobz/yy9yTI1x8Lsy+lHwEpseKV
hjfzoEdRGdz50EonvHlJzNl7zl8C4SNGfF4REbD5anxrF76rwvIIoSGthqAC4cMF
lwIDAQAB
-----END PUBLIC KEY-----";

    #[test]
    fn publishable_key_gives_issuer_and_frontend_jwks() {
        let config = from_vars(&[("CLERK_PUBLISHABLE_KEY", &pk("clerk.example.com"))]).unwrap();
        assert_eq!(config.issuer(), Some("https://clerk.example.com"));
        assert_eq!(
            config.key_source(),
            &KeySource::JwksUrl("https://clerk.example.com/.well-known/jwks.json".into())
        );
    }

    #[test]
    fn publishable_key_decodes_with_or_without_padding() {
        let padded = format!(
            "pk_live_{}",
            general_purpose::STANDARD.encode("clerk.example.io$")
        );
        assert!(padded.ends_with('='), "{padded}");
        assert_eq!(frontend_api_host(&padded).unwrap(), "clerk.example.io");
        assert_eq!(
            frontend_api_host(&pk("fluent-cat-12.clerk.accounts.dev")).unwrap(),
            "fluent-cat-12.clerk.accounts.dev"
        );
    }

    #[test]
    fn bad_publishable_keys_name_the_variable() {
        for key in [
            "sk_test_abc",
            "pk_test_%%%",
            &format!("pk_test_{}", general_purpose::STANDARD.encode("no-dollar")),
            &format!("pk_test_{}", general_purpose::STANDARD.encode("bad host$")),
        ] {
            let error = from_vars(&[("CLERK_PUBLISHABLE_KEY", key)]).unwrap_err();
            assert_eq!(error.setting(), "CLERK_PUBLISHABLE_KEY", "{key}: {error}");
            assert!(error.to_string().starts_with("CLERK_PUBLISHABLE_KEY: "));
        }
    }

    #[test]
    fn key_source_precedence_follows_clerk_sdks() {
        let pk = pk("clerk.example.com");
        let all = [
            ("CLERK_PUBLISHABLE_KEY", pk.as_str()),
            ("CLERK_SECRET_KEY", "sk_test_secret"),
            ("CLERK_JWKS_URL", "http://127.0.0.1:1/jwks"),
            ("CLERK_JWT_KEY", PEM),
        ];
        assert!(matches!(
            from_vars(&all).unwrap().key_source(),
            KeySource::Pem(_)
        ));
        assert_eq!(
            from_vars(&all[..3]).unwrap().key_source(),
            &KeySource::JwksUrl("http://127.0.0.1:1/jwks".into())
        );
        match from_vars(&all[..2]).unwrap().key_source() {
            KeySource::BackendApi {
                api_url,
                secret_key,
            } => {
                assert_eq!(api_url, "https://api.clerk.com");
                assert_eq!(secret_key.expose(), "sk_test_secret");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn explicit_issuer_overrides_the_publishable_key() {
        let config = from_vars(&[
            ("CLERK_PUBLISHABLE_KEY", &pk("clerk.example.com")),
            ("CLERK_ISSUER", "https://auth.example.com/"),
        ])
        .unwrap();
        assert_eq!(config.issuer(), Some("https://auth.example.com"));
    }

    #[test]
    fn missing_issuer_is_an_error_unless_skipped() {
        let error = from_vars(&[("CLERK_JWT_KEY", PEM)]).unwrap_err();
        assert_eq!(error.setting(), "CLERK_ISSUER");
        let config = ClerkConfig::builder()
            .jwt_key_pem(PEM)
            .skip_issuer_check()
            .build()
            .unwrap();
        assert_eq!(config.issuer(), None);
    }

    #[test]
    fn nothing_configured_says_what_to_set() {
        let error = from_vars(&[]).unwrap_err();
        assert!(error.reason().contains("CLERK_SECRET_KEY"), "{error}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let pk = pk("clerk.example.com");
        let cases = [
            ("CLERK_JWT_KEY", "not a pem"),
            ("CLERK_JWKS_URL", "ftp://x"),
            ("CLERK_ISSUER", "clerk.example.com"),
            ("CLERK_SECRET_KEY", "pk_oops"),
            ("CLERK_API_URL", "api.clerk.com"),
            ("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_not base64!"),
            ("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_"),
        ];
        for (name, value) in cases {
            let error = from_vars(&[("CLERK_PUBLISHABLE_KEY", &pk), (name, value)]).unwrap_err();
            assert_eq!(error.setting(), name, "{error}");
        }
    }

    #[test]
    fn pem_with_escaped_newlines_is_accepted() {
        let one_line = PEM.replace('\n', "\\n");
        let config = ClerkConfig::builder()
            .jwt_key_pem(one_line)
            .issuer("https://clerk.example.com")
            .build()
            .unwrap();
        assert_eq!(config.key_source(), &KeySource::Pem(PEM.to_owned()));
    }

    #[test]
    fn authorized_parties_are_split_and_trimmed() {
        let config = from_vars(&[
            ("CLERK_PUBLISHABLE_KEY", &pk("clerk.example.com")),
            (
                "CLERK_AUTHORIZED_PARTIES",
                "https://app.example.com, http://localhost:3000,",
            ),
        ])
        .unwrap();
        assert_eq!(
            config.authorized_parties(),
            ["https://app.example.com", "http://localhost:3000"]
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = from_vars(&[
            ("CLERK_PUBLISHABLE_KEY", &pk("clerk.example.com")),
            ("CLERK_SECRET_KEY", "sk_test_very_secret"),
            (
                "CLERK_WEBHOOK_SIGNING_SECRET",
                "whsec_c2VjcmV0LXdlYmhvb2sta2V5",
            ),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("very_secret"), "{debug}");
        assert!(!debug.contains("c2VjcmV0"), "{debug}");
        assert_eq!(
            config.webhook_secret.map(|s| s.0),
            Some(b"secret-webhook-key".to_vec())
        );
        assert!(debug.contains("[redacted]"));
    }

    #[test]
    fn urls_are_checked_by_a_url_parser() {
        for good in [
            "https://api.clerk.com",
            "http://127.0.0.1:8080",
            "https://x.example/.well-known/jwks.json",
        ] {
            assert_eq!(check_url("CLERK_JWKS_URL", good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "https://",
            "https:///path",
            "ftp://example.com",
            "example.com",
            "http://exa mple.com",
        ] {
            let error = check_url("CLERK_JWKS_URL", bad).unwrap_err();
            assert_eq!(error.setting(), "CLERK_JWKS_URL", "{bad}");
        }
    }

    #[test]
    fn cookie_suffix_matches_clerks_derivation() {
        // base64url(SHA-1(key))[..8], computed independently with
        // `printf %s KEY | openssl sha1 -binary | base64 | tr '+/' '-_' | cut -c1-8`, and the
        // same as Clerk's JS SDK (`getCookieSuffix`) gives.
        assert_eq!(
            cookie_suffix("pk_test_Y2xlcmsuZXhhbXBsZS5jb20k"),
            "l2OS3d9k"
        );
    }
}
