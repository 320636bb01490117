//! The quickstart: `GET /healthz` (no auth) and `GET /me` (auth), with the user row read back
//! from the database.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Environment, all optional: `BIND` (default `127.0.0.1:3000`, or a free port if that is
//! taken), `DATABASE_URL` (`postgres://…` or a SQLite path; default the SQLite file
//! `./clerk-sync-quickstart.db`), and the `CLERK_*` variables of the README. Without any Clerk
//! key source it starts a local dev issuer and prints a ready-to-paste `curl` line, and a second
//! one (`GET /dev/users/{user_id}`) that shows the synced row; `GET /dev/token/{user_id}` mints
//! more tokens.

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::demo(None).await?;
    demo.serve(demo.app(), |_| {}).await
}
