//! Svix signatures: HMAC-SHA256 over `{id}.{timestamp}.{body}`, checked in constant time.

use aws_lc_rs::{constant_time, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

use super::WebhookError;
use crate::secret::WebhookSecret;

/// Svix's tolerance for the timestamp, either way.
const TOLERANCE_SECS: i64 = 5 * 60;
/// Longest accepted `svix-id`; real ones are ~30 characters.
const MAX_ID_LEN: usize = 256;

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, the value Svix sends.
#[cfg(any(test, feature = "test-util"))]
pub(crate) fn sign(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1,{}", STANDARD.encode(mac(secret, id, timestamp, body)))
}

fn mac(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &secret.0);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    context.sign()
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, WebhookError> {
    headers
        .get(name)
        .ok_or(WebhookError::MissingHeader(name))?
        .to_str()
        .map_err(|_| WebhookError::MalformedHeader(name))
}

/// Checks a delivery's Svix headers against the raw body and returns its `svix-id`.
pub(crate) fn verify(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<String, WebhookError> {
    let id = header(headers, "svix-id")?;
    let timestamp = header(headers, "svix-timestamp")?;
    let signatures = header(headers, "svix-signature")?;
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(WebhookError::MalformedHeader("svix-id"));
    }
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookError::MalformedHeader("svix-timestamp"))?;
    // Checked arithmetic: a timestamp near i64::MIN or MAX is out of range, not an overflow.
    if now
        .checked_sub(timestamp)
        .and_then(i64::checked_abs)
        .is_none_or(|skew| skew > TOLERANCE_SECS)
    {
        return Err(WebhookError::TimestampOutOfRange);
    }
    // Space-separated `version,signature` pairs; only `v1` is defined, others are skipped.
    let candidates: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, signature)| STANDARD.decode(signature).ok())
        .collect();
    if candidates.is_empty() {
        return Err(WebhookError::MalformedHeader("svix-signature"));
    }
    let expected = mac(secret, id, timestamp, body);
    // Constant time; a candidate of another length simply does not match.
    let matched = candidates.iter().any(|candidate| {
        constant_time::verify_slices_are_equal(expected.as_ref(), candidate).is_ok()
    });
    if matched {
        Ok(id.to_owned())
    } else {
        Err(WebhookError::InvalidSignature)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        secret: String,
        id: String,
        timestamp: i64,
        body: String,
        signature: String,
    }

    fn vectors() -> Vec<Vector> {
        let fixture = include_str!("../../tests/fixtures/svix_vectors.json");
        serde_json::from_str::<Vectors>(fixture).unwrap().vectors
    }

    fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("svix-id", id.parse().unwrap());
        map.insert("svix-timestamp", timestamp.parse().unwrap());
        map.insert("svix-signature", signature.parse().unwrap());
        map
    }

    #[test]
    fn svix_library_vectors_are_accepted_and_reproduced() {
        let vectors = vectors();
        assert!(vectors.len() >= 16);
        // The published example from Svix's documentation is among them.
        assert!(
            vectors
                .iter()
                .any(|v| v.id == "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"
                    && v.signature == "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
        for v in &vectors {
            let secret = WebhookSecret::parse(&v.secret).unwrap();
            let map = headers(&v.id, &v.timestamp.to_string(), &v.signature);
            assert_eq!(
                verify(&secret, &map, v.body.as_bytes(), v.timestamp),
                Ok(v.id.clone()),
                "{}",
                v.id
            );
            assert_eq!(
                sign(&secret, &v.id, v.timestamp, v.body.as_bytes()),
                v.signature
            );
        }
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let v = &vectors()[0];
        let secret = WebhookSecret::parse(&v.secret).unwrap();
        let several = format!(
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v2,whatever v1,bm9wZQ== {}",
            v.signature
        );
        let map = headers(&v.id, &v.timestamp.to_string(), &several);
        assert!(verify(&secret, &map, v.body.as_bytes(), v.timestamp).is_ok());
    }

    #[test]
    fn tampering_and_clock_skew_are_rejected() {
        let v = &vectors()[0];
        let secret = WebhookSecret::parse(&v.secret).unwrap();
        let good = headers(&v.id, &v.timestamp.to_string(), &v.signature);
        let body = v.body.as_bytes();
        let check = |map: &HeaderMap, body: &[u8], now: i64| verify(&secret, map, body, now);

        assert_eq!(
            check(&good, b"{}", v.timestamp),
            Err(WebhookError::InvalidSignature)
        );
        let other_id = headers("msg_other", &v.timestamp.to_string(), &v.signature);
        assert_eq!(
            check(&other_id, body, v.timestamp),
            Err(WebhookError::InvalidSignature)
        );
        assert_eq!(
            check(&good, body, v.timestamp + 301),
            Err(WebhookError::TimestampOutOfRange)
        );
        assert_eq!(
            check(&good, body, v.timestamp - 301),
            Err(WebhookError::TimestampOutOfRange)
        );
        assert!(check(&good, body, v.timestamp + 300).is_ok());
        // Extreme timestamps are out of range, without overflowing (a panic in debug builds).
        for extreme in [i64::MIN, i64::MIN + 1, i64::MAX] {
            let map = headers(&v.id, &extreme.to_string(), &v.signature);
            for now in [v.timestamp, 0, i64::MAX, i64::MIN]
                .into_iter()
                .filter(|now| now.abs_diff(extreme) > 300)
            {
                assert_eq!(
                    check(&map, body, now),
                    Err(WebhookError::TimestampOutOfRange),
                    "{extreme} at {now}"
                );
            }
        }
        let wrong = WebhookSecret::parse("whsec_c2VjcmV0LXdlYmhvb2sta2V5").unwrap();
        assert_eq!(
            verify(&wrong, &good, body, v.timestamp),
            Err(WebhookError::InvalidSignature)
        );
        for bad in ["", "v1", "v1,!!!", "v2,abcd"] {
            let map = headers(&v.id, &v.timestamp.to_string(), bad);
            assert_eq!(
                check(&map, body, v.timestamp),
                Err(WebhookError::MalformedHeader("svix-signature")),
                "{bad:?}"
            );
        }
        let map = headers(&v.id, "yesterday", &v.signature);
        assert_eq!(
            check(&map, body, v.timestamp),
            Err(WebhookError::MalformedHeader("svix-timestamp"))
        );
        let mut missing = good.clone();
        missing.remove("svix-signature");
        assert_eq!(
            check(&missing, body, v.timestamp),
            Err(WebhookError::MissingHeader("svix-signature"))
        );
    }
}
