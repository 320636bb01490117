//! The organization routes of [`super::FakeClerkApi`]: `GET /v1/organizations` and
//! `GET /v1/organization_memberships`, paged by `limit`/`offset` as Clerk pages them, over
//! organizations and memberships the test adds (and removes, to play a deletion mid-walk);
//! `GET /v1/organizations/{id}` and `GET /v1/organizations/{id}/memberships?user_id=…`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::users::{invalid_param, query_params};
use super::{BASE_MS, FakeClerkApi, FakeState, clerk_errors, fault_response, gate, lock};
use crate::clerk_api::MAX_PAGE_SIZE;

/// What the fake holds: organizations and memberships in creation order.
#[derive(Default)]
pub(super) struct Orgs {
    organizations: Vec<Value>,
    memberships: Vec<Value>,
    created: i64,
    /// An organization deleted once this many list requests were answered.
    scheduled_removal: Option<(u64, String)>,
    /// Organizations the lists leave out.
    hidden: Vec<String>,
}

fn organization_object(id: &str, slug: &str, name: &str, at: i64) -> Value {
    json!({
        "object": "organization", "id": id, "name": name, "slug": slug,
        "image_url": format!("https://img.clerk.com/{id}"), "has_image": false,
        "members_count": 0, "max_allowed_memberships": 5, "admin_delete_enabled": true,
        "public_metadata": {}, "private_metadata": {}, "created_by": null,
        "created_at": at, "updated_at": at
    })
}

impl FakeClerkApi {
    /// Adds an organization (created after every one added before).
    pub fn add_organization(&self, id: &str, slug: &str, name: &str) {
        let mut orgs = lock(&self.state.orgs);
        orgs.created += 1;
        let at = BASE_MS + orgs.created * 1000;
        orgs.organizations
            .push(organization_object(id, slug, name, at));
    }

    /// Adds `user_id` to the organization `organization_id` (added before) with `role`.
    pub fn add_membership(&self, organization_id: &str, user_id: &str, role: &str) {
        let mut orgs = lock(&self.state.orgs);
        orgs.created += 1;
        let at = BASE_MS + orgs.created * 1000;
        let organization = orgs
            .organizations
            .iter()
            .find(|org| org["id"] == organization_id)
            .cloned()
            .unwrap_or_else(|| organization_object(organization_id, "", "", at));
        orgs.memberships.push(json!({
            "object": "organization_membership", "id": format!("orgmem_{organization_id}_{user_id}"),
            "role": role, "role_name": role, "permissions": [], "public_metadata": {},
            "private_metadata": {}, "organization": organization,
            "public_user_data": {"user_id": user_id, "first_name": null, "last_name": null,
                                 "profile_image_url": "", "image_url": "", "has_image": false,
                                 "identifier": format!("{user_id}@example.com")},
            "created_at": at, "updated_at": at
        }));
    }

    /// Deletes an organization and its memberships, as Clerk would.
    pub fn remove_organization(&self, id: &str) {
        let mut orgs = lock(&self.state.orgs);
        orgs.organizations.retain(|org| org["id"] != id);
        orgs.memberships
            .retain(|member| member["organization"]["id"] != id);
    }

    /// Deletes the organization `id` (as [`remove_organization`](Self::remove_organization))
    /// right after the `after`-th organization list request is answered: a deletion in the
    /// middle of a walk.
    pub fn remove_organization_after(&self, after: u64, id: &str) {
        lock(&self.state.orgs).scheduled_removal = Some((after, id.to_owned()));
    }

    /// Removes `user_id`'s membership of `organization_id`, as Clerk would.
    pub fn remove_membership(&self, organization_id: &str, user_id: &str) {
        lock(&self.state.orgs).memberships.retain(|member| {
            member["organization"]["id"] != organization_id
                || member["public_user_data"]["user_id"] != user_id
        });
    }

    /// Makes every organization list request answer without the organization `id` while
    /// `GET /v1/organizations/{id}` still finds it: a list that missed a row.
    pub fn hide_organization_from_lists(&self, id: &str) {
        lock(&self.state.orgs).hidden.push(id.to_owned());
    }

    /// `GET /v1/organizations` and `GET /v1/organization_memberships` requests received.
    pub fn organization_list_requests(&self) -> u64 {
        self.state.org_list_requests.load(Ordering::SeqCst)
    }
}

/// One page of `items` by `limit`, `offset` and `order_by` (`created_at` with `+`/`-`;
/// default `-created_at`, as Clerk's), as `{"data": [...], "total_count": n}`.
fn page(items: &[Value], uri: &Uri) -> Response {
    let params = query_params(uri);
    let limit = match params.get("limit").map(|v| v.parse::<usize>()) {
        None => 10,
        Some(Ok(limit)) if (1..=MAX_PAGE_SIZE as usize).contains(&limit) => limit,
        Some(_) => return invalid_param("limit", "limit must be an integer between 1 and 500"),
    };
    let offset = match params.get("offset").map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(offset)) => offset,
        Some(Err(_)) => return invalid_param("offset", "offset must be an integer >= 0"),
    };
    let descending = match params.get("order_by").map(String::as_str) {
        None | Some("-created_at") => true,
        Some("+created_at" | "created_at") => false,
        Some(_) => return invalid_param("order_by", "this fake orders by created_at only"),
    };
    let ordered: Vec<&Value> = if descending {
        items.iter().rev().collect()
    } else {
        items.iter().collect()
    };
    let data: Vec<&Value> = ordered.into_iter().skip(offset).take(limit).collect();
    axum::Json(json!({ "data": data, "total_count": items.len() })).into_response()
}

pub(super) async fn list_organizations(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    list(&state, &headers, &uri, true).await
}

pub(super) async fn list_memberships(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    list(&state, &headers, &uri, false).await
}

/// One list request: counted, gated, paged; a scheduled removal of an organization happens
/// after its answer.
async fn list(state: &FakeState, headers: &HeaderMap, uri: &Uri, organizations: bool) -> Response {
    let served = state.org_list_requests.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(response) = gate(state, headers).await {
        return response;
    }
    let offset = query_params(uri)
        .get("offset")
        .and_then(|offset| offset.parse::<u64>().ok())
        .unwrap_or(0);
    let page_fault = lock(&state.page_faults).get(&offset).copied();
    if let Some(fault) = page_fault {
        return fault_response(state, fault);
    }
    let mut orgs = lock(&state.orgs);
    if !organizations {
        return page(&orgs.memberships, uri);
    }
    let listed: Vec<Value> = orgs
        .organizations
        .iter()
        .filter(|org| !orgs.hidden.iter().any(|id| org["id"] == id.as_str()))
        .cloned()
        .collect();
    let response = page(&listed, uri);
    if let Some((after, id)) = orgs.scheduled_removal.clone()
        && served >= after
    {
        orgs.scheduled_removal = None;
        orgs.organizations.retain(|org| org["id"] != id.as_str());
        orgs.memberships
            .retain(|member| member["organization"]["id"] != id.as_str());
    }
    response
}

fn not_found() -> Response {
    clerk_errors(
        StatusCode::NOT_FOUND,
        "resource_not_found",
        "not found",
        "Resource not found",
    )
}

/// `GET /v1/organizations/{id}` (by id; Clerk also accepts a slug).
pub(super) async fn get_organization(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = gate(&state, &headers).await {
        return response;
    }
    let orgs = lock(&state.orgs);
    match orgs
        .organizations
        .iter()
        .find(|org| org["id"] == id.as_str() || org["slug"] == id.as_str())
    {
        Some(org) => axum::Json(org.clone()).into_response(),
        None => not_found(),
    }
}

/// `GET /v1/organizations/{id}/memberships`, filtered by `user_id` when given (one id, as
/// the reconcile asks; Clerk takes up to 100); 404 for an unknown organization.
pub(super) async fn organization_memberships(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(response) = gate(&state, &headers).await {
        return response;
    }
    let params = query_params(&uri);
    let orgs = lock(&state.orgs);
    if !orgs
        .organizations
        .iter()
        .any(|org| org["id"] == id.as_str())
    {
        return not_found();
    }
    let members: Vec<Value> = orgs
        .memberships
        .iter()
        .filter(|member| member["organization"]["id"] == id.as_str())
        .filter(|member| {
            params
                .get("user_id")
                .is_none_or(|user| member["public_user_data"]["user_id"] == user.as_str())
        })
        .cloned()
        .collect();
    page(&members, &uri)
}
