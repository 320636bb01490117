//! The users routes of [`super::FakeClerkApi`]: `GET /v1/users` and `GET /v1/users/{id}`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{
    FakeClerkApi, FakeState, ID_PREFIX, clerk_errors, created_at, fault_response, gate, lock,
};
use crate::clerk_api::MAX_PAGE_SIZE;

pub(super) fn invalid_param(name: &str, long_message: &str) -> Response {
    let mut response = clerk_errors(
        StatusCode::UNPROCESSABLE_ENTITY,
        "form_param_value_invalid",
        "is invalid",
        long_message,
    );
    if let Ok(body) = serde_json::to_vec(&json!({
        "errors": [{"message": "is invalid", "long_message": long_message,
                    "code": "form_param_value_invalid", "meta": {"param_name": name}}],
        "clerk_trace_id": "fake_trace",
    })) {
        *response.body_mut() = axum::body::Body::from(body);
    }
    response
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of each query parameter (Clerk keeps the first `order_by` too).
pub(super) fn query_params(uri: &Uri) -> HashMap<String, String> {
    let mut params = HashMap::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        params
            .entry(percent_decode(name))
            .or_insert_with(|| percent_decode(value));
    }
    params
}

fn parse_index(id: &str, users: u64) -> Option<u64> {
    let digits = id.strip_prefix(ID_PREFIX)?;
    if digits.len() != 22 {
        return None;
    }
    digits.parse::<u64>().ok().filter(|index| *index < users)
}

pub(super) async fn list_users(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    state.list_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(response) = gate(&state, &headers).await {
        return response;
    }
    let params = query_params(&uri);
    let limit = match params.get("limit").map(|v| v.parse::<u64>()) {
        None => 10,
        Some(Ok(limit)) if (1..=u64::from(MAX_PAGE_SIZE)).contains(&limit) => limit,
        Some(_) => return invalid_param("limit", "limit must be an integer between 1 and 500"),
    };
    let offset = match params.get("offset").map(|v| v.parse::<u64>()) {
        None => 0,
        Some(Ok(offset)) => offset,
        Some(Err(_)) => return invalid_param("offset", "offset must be an integer >= 0"),
    };
    let order = params.get("order_by").map_or("-created_at", String::as_str);
    let (field, descending) = match order.strip_prefix('-') {
        Some(field) => (field, true),
        None => (order.strip_prefix('+').unwrap_or(order), false),
    };
    // In this fake, `updated_at` orders users like `created_at` does.
    if !matches!(field, "created_at" | "updated_at") {
        return invalid_param(
            "order_by",
            "this fake orders by created_at or updated_at only",
        );
    }
    let start = match params.get("starting_after") {
        None => offset,
        Some(_) if field != "created_at" => {
            return invalid_param(
                "starting_after",
                "starting_after can only be used when ordering by created_at",
            );
        }
        Some(_) if offset != 0 => {
            return invalid_param(
                "starting_after",
                "starting_after cannot be combined with a non-zero offset",
            );
        }
        Some(cursor) => match parse_index(cursor, state.users) {
            Some(index) if descending => state.users - index,
            Some(index) => index + 1,
            None => return invalid_param("starting_after", "no user with this id"),
        },
    };
    let page_fault = lock(&state.page_faults).get(&start).copied();
    if let Some(fault) = page_fault {
        return fault_response(&state, fault);
    }
    let end = start.saturating_add(limit).min(state.users);
    let updated_offset = state.updated_offset_ms.load(Ordering::SeqCst);
    let mut body =
        String::with_capacity(usize::try_from((end.saturating_sub(start)) * 1600).unwrap_or(0) + 2);
    body.push('[');
    for position in start..end {
        let index = if descending {
            state.users - 1 - position
        } else {
            position
        };
        if position > start {
            body.push(',');
        }
        write_user(&mut body, index, updated_offset);
    }
    body.push(']');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(super) async fn get_user(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    state.user_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(response) = gate(&state, &headers).await {
        return response;
    }
    match parse_index(&id, state.users) {
        Some(index) => {
            let mut body = String::with_capacity(1600);
            write_user(
                &mut body,
                index,
                state.updated_offset_ms.load(Ordering::SeqCst),
            );
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        None => clerk_errors(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "not found",
            "Resource not found",
        ),
    }
}

fn write_email(out: &mut String, id: &str, address: &str, at: i64) {
    let _ = write!(
        out,
        r#"{{"id":"{id}","object":"email_address","email_address":"{address}","reserved":false,"verification":{{"object":"verification_otp","status":"verified","strategy":"email_code","attempts":1,"expire_at":{expire}}},"linked_to":[],"matches_sso_connection":false,"created_at":{at},"updated_at":{at}}}"#,
        expire = at + 600_000,
    );
}

/// One user as Clerk's `GET /v1/users` serializes it (every required field of the spec's
/// `User`, nullable ones as `null` where this user has no value).
fn write_user(out: &mut String, index: u64, updated_offset_ms: i64) {
    let id = FakeClerkApi::user_id(index);
    let created = created_at(index);
    let updated = created + 500 + updated_offset_ms;
    let primary = format!("idn_2fake{index:022}");
    let secondary = format!("idn_3fake{index:022}");
    let sparse = index.is_multiple_of(10);
    let username = if sparse {
        "null".to_owned()
    } else {
        format!(r#""user{index}""#)
    };
    let last_name = if sparse { "null" } else { r#""Example""# };
    let _ = write!(
        out,
        r#"{{"id":"{id}","object":"user","external_id":null,"primary_email_address_id":"{primary}","primary_phone_number_id":null,"primary_web3_wallet_id":null,"username":{username},"first_name":"User{index}","last_name":{last_name},"locale":null,"profile_image_url":"https://www.gravatar.com/avatar?d=mp","image_url":"https://img.clerk.com/fake/{index}","has_image":false,"public_metadata":{{}},"private_metadata":{{}},"unsafe_metadata":{{}},"email_addresses":["#
    );
    if index.is_multiple_of(3) {
        write_email(out, &secondary, &format!("old{index}@example.com"), created);
        out.push(',');
    }
    write_email(out, &primary, &FakeClerkApi::email(index), created);
    let _ = write!(
        out,
        r#"],"phone_numbers":[],"web3_wallets":[],"passkeys":[],"password_enabled":true,"two_factor_enabled":false,"totp_enabled":false,"backup_code_enabled":false,"mfa_enabled_at":null,"mfa_disabled_at":null,"password_last_updated_at":null,"external_accounts":[],"saml_accounts":[],"enterprise_accounts":[],"organization_memberships":[],"last_sign_in_at":{created},"banned":false,"locked":false,"deprovisioned":false,"lockout_expires_in_seconds":null,"verification_attempts_remaining":100,"updated_at":{updated},"created_at":{created},"delete_self_enabled":true,"create_organization_enabled":true,"create_organizations_limit":null,"last_active_at":{created},"legal_accepted_at":null,"bypass_client_trust":false}}"#
    );
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn generated_users_are_valid_json_with_the_spec_fields() {
        let mut body = String::new();
        write_user(&mut body, 3, 0);
        let user: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(user["object"], "user");
        assert_eq!(user["id"], FakeClerkApi::user_id(3));
        assert_eq!(user["email_addresses"].as_array().unwrap().len(), 2);
        assert_eq!(
            user["primary_email_address_id"],
            user["email_addresses"][1]["id"]
        );
        let mut sparse = String::new();
        write_user(&mut sparse, 10, 0);
        let sparse: Value = serde_json::from_str(&sparse).unwrap();
        assert!(sparse["username"].is_null() && sparse["last_name"].is_null());
    }

    #[test]
    fn ids_round_trip_and_queries_decode() {
        assert_eq!(parse_index(&FakeClerkApi::user_id(42), 100), Some(42));
        assert_eq!(parse_index(&FakeClerkApi::user_id(42), 10), None);
        assert_eq!(parse_index("user_other", 100), None);
        let uri: Uri = "/v1/users?limit=5&order_by=%2Bcreated_at&order_by=x"
            .parse()
            .unwrap();
        let params = query_params(&uri);
        assert_eq!(params["limit"], "5");
        assert_eq!(params["order_by"], "+created_at");
    }
}
