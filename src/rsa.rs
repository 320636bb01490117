//! RSA public keys for RS256, from a PEM document or a JWK's components.

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// An RSA public key parsed once, for RS256 (PKCS#1 v1.5 with SHA-256, 2048–8192 bits).
pub(crate) type VerifyingKey = ParsedPublicKey;

/// The key of a PEM document: `BEGIN PUBLIC KEY` (SPKI, what Clerk's dashboard shows) or
/// `BEGIN RSA PUBLIC KEY` (PKCS#1).
pub(crate) fn key_from_pem(pem: &str) -> Option<VerifyingKey> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("-----"))
        .collect();
    let is_public = pem.contains("-----BEGIN PUBLIC KEY-----")
        || pem.contains("-----BEGIN RSA PUBLIC KEY-----");
    if !is_public {
        return None;
    }
    let der = STANDARD.decode(body).ok()?;
    ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der).ok()
}

/// The key of a JWK's `n` and `e` (base64url), as a DER `RSAPublicKey`.
pub(crate) fn key_from_components(n: &str, e: &str) -> Option<VerifyingKey> {
    let n = URL_SAFE_NO_PAD.decode(n.trim_end_matches('=')).ok()?;
    let e = URL_SAFE_NO_PAD.decode(e.trim_end_matches('=')).ok()?;
    let mut body = der_integer(&n);
    body.extend(der_integer(&e));
    let mut der = vec![0x30];
    der.extend(der_length(body.len()));
    der.extend(body);
    ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der).ok()
}

fn der_length(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![u8::try_from(len).unwrap_or(0)];
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|byte| *byte == 0)
        .collect();
    let mut out = vec![0x80 | u8::try_from(bytes.len()).unwrap_or(0)];
    out.extend(bytes);
    out
}

/// A positive DER INTEGER: leading zeros dropped, one zero added when the high bit is set.
fn der_integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = magnitude.iter().copied().skip_while(|b| *b == 0).collect();
    let mut value = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        value.push(0);
    }
    value.extend(trimmed);
    let mut out = vec![0x02];
    out.extend(der_length(value.len()));
    out.extend(value);
    out
}
