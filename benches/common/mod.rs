//! Shared by the benches: the bench database and the request every case sends.
#![allow(dead_code, clippy::unwrap_used)]

use std::str::FromStr;

use axum::body::Body;
use http::{Request, header};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// `GET /me` with `Authorization: Bearer <token>`.
pub fn request(token: &str) -> Request<Body> {
    Request::get("/me")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

/// An RSA public key in PEM, parsed once for aws-lc-rs (the benches' RSA floor).
pub fn rsa_key(pem: &str) -> aws_lc_rs::signature::ParsedPublicKey {
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            pem.lines()
                .filter(|line| !line.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        der,
    )
    .unwrap()
}

/// A pool (built from `options`) on the database `clerk_sync_bench`, created next to `url`'s
/// if missing and migrated.
pub async fn bench_pool(url: &str, options: PgPoolOptions) -> PgPool {
    let admin = PgConnectOptions::from_str(url).unwrap();
    let mut conn = admin.connect().await.unwrap();
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'clerk_sync_bench')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    if !exists {
        sqlx::query("CREATE DATABASE clerk_sync_bench")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let pool = options
        .connect_with(admin.database("clerk_sync_bench"))
        .await
        .unwrap();
    clerk_sync::migrate(&pool).await.unwrap();
    pool
}
