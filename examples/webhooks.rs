//! The quickstart's `/me` plus `POST /webhooks/clerk`, which applies Clerk's `user.created`,
//! `user.updated` and `user.deleted` webhooks.
//!
//! ```text
//! cargo run --example webhooks
//! ```
//!
//! Reads the same variables as the quickstart (`INVALIDATION=redis` publishes every webhook's
//! eviction on Redis for the other processes) plus `CLERK_WEBHOOK_SIGNING_SECRET`. Without a
//! Clerk key source it runs against a local dev issuer with a dev signing secret, and prints a
//! signed `curl` that delivers a `user.updated` event the way Clerk (through Svix) would.

mod common;

use clerk_sync::testing::sign_webhook;
use serde_json::json;

/// Only used with the local dev issuer; real secrets come from Clerk's dashboard.
const DEV_WEBHOOK_SECRET: &str = "whsec_ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQtMzItYnl0ZXM=";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::demo(Some(DEV_WEBHOOK_SECRET)).await?;
    let app = demo
        .app()
        .merge(demo.clerk.webhook_router("/webhooks/clerk")?);
    let dev = demo.dev.is_some();
    demo.serve(app, |addr| {
        if dev {
            print_signed_curl(addr);
        }
    })
    .await
}

/// A `user.updated` event shaped like Clerk's, signed with the dev secret, as a `curl` line.
fn print_signed_curl(addr: std::net::SocketAddr) {
    let now = common::unix_now();
    // Clerk's `updated_at` is in milliseconds; it must outrank the dev token's `iat` (seconds).
    let updated_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let body = json!({
        "data": {
            "object": "user", "id": "user_quickstart", "first_name": "Quick", "last_name": "Start",
            "username": null, "image_url": "https://img.clerk.com/example",
            "primary_email_address_id": "idn_1",
            "email_addresses": [{"id": "idn_1", "object": "email_address", "email_address": "renamed@example.com"}],
            "created_at": updated_at, "updated_at": updated_at
        },
        "object": "event", "type": "user.updated", "timestamp": now, "instance_id": "ins_dev"
    })
    .to_string();
    let id = format!("msg_dev_{now}");
    let Ok(signature) = sign_webhook(DEV_WEBHOOK_SECRET, &id, now, body.as_bytes()) else {
        return;
    };
    println!("deliver a signed user.updated (valid for 5 minutes):");
    println!(
        "  curl -X POST http://{addr}/webhooks/clerk -H 'content-type: application/json' \
         -H 'svix-id: {id}' -H 'svix-timestamp: {now}' -H 'svix-signature: {signature}' -d '{body}'"
    );
}
