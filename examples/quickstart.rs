//! The quickstart: `GET /healthz` (no auth), `GET /me` (session tokens) with the user row
//! read back from the database, and `GET /api/me` (any token type: sessions, API keys, M2M
//! and OAuth tokens; opaque ones verified through `CLERK_SECRET_KEY` and `CLERK_API_URL`).
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Environment, all optional: `BIND` (default `127.0.0.1:3000`, or a free port if that is
//! taken), `DATABASE_URL` (`postgres://…` or a SQLite path; default the SQLite file
//! `./clerk-sync-quickstart.db`), `INVALIDATION` (`store`, the default: the store's own
//! channel, `LISTEN`/`NOTIFY` on PostgreSQL; or `redis`: pub/sub on `REDIS_URL`, default
//! `redis://127.0.0.1:6379`), and the `CLERK_*` variables of the README. Without any Clerk
//! key source it starts a local dev issuer and prints a ready-to-paste `curl` line, and a second
//! one (`GET /dev/users/{user_id}`) that shows the synced row; `GET /dev/token/{user_id}` mints
//! more tokens. It also starts a local stand-in for the Backend API with one dev API key and
//! prints a `curl` for `GET /api/me` with it.

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::demo(None).await?;
    demo.serve(demo.app(), |_| {}).await
}
