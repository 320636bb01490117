//! The quickstart: `GET /healthz` (no auth) and `GET /me` (auth), with the user row read back
//! from the database.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example quickstart
//! ```
//!
//! Environment: `BIND` (default `127.0.0.1:3000`), `DATABASE_URL`, and the `CLERK_*` variables
//! of the README. Without any Clerk key source it starts a local dev issuer and prints a
//! ready-to-paste `curl` line; `GET /dev/token/{user_id}` then mints more tokens.

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::demo(None).await?;
    demo.serve(demo.app(), |_| {}).await
}
