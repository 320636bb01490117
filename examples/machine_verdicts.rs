//! Fixtures for comparing this crate's verdicts on machine tokens with Clerk's JS SDK
//! (`scripts/compare-js-sdk.sh` runs it): a dev issuer, a fake Backend API that knows a set
//! of opaque tokens, and `GET /api/me` behind a layer that accepts every type.
//!
//! It prints one JSON line — the app's URL, the fake Backend API's URL and secret key, a
//! publishable key and the PEM for Clerk's SDK, and the cases (name and token) — then serves
//! for at most two minutes, or until standard input closes.
//!
//! ```text
//! cargo run --example machine_verdicts
//! ```

use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use clerk_sync::testing::{DevIssuer, FakeClerkApi};
use clerk_sync::{ClerkPrincipal, ClerkSync, MemoryUserStore, TokenType};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

async fn who(caller: ClerkPrincipal) -> Json<Value> {
    Json(json!({"token_type": caller.token_type().as_str(), "subject": caller.subject()}))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = DevIssuer::start().await?;
    let fake = FakeClerkApi::start(1).await?;
    let user = FakeClerkApi::user_id(0);
    let machine = "mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk";
    let org = "org_2xhFjEI5X2qWRvtV13BzSj8H6Dk";
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;

    let mut cases: Vec<(&str, String)> = Vec::new();
    let mut opaque = |name: &'static str, token: &str, kind: TokenType, answer: Option<Value>| {
        if let Some(answer) = answer {
            fake.add_machine_token(token, kind, answer);
        }
        cases.push((name, token.to_owned()));
    };
    let with = |mut answer: Value, field: &str, value: Value| {
        answer[field] = value;
        answer
    };
    let key = FakeClerkApi::api_key_answer;
    opaque(
        "api key, user",
        "ak_user0000000000000000000000000000",
        TokenType::ApiKey,
        Some(key(&user)),
    );
    opaque(
        "api key, organization",
        "ak_org00000000000000000000000000000",
        TokenType::ApiKey,
        Some(key(org)),
    );
    opaque(
        "api key, machine",
        "ak_machine000000000000000000000000",
        TokenType::ApiKey,
        Some(key(machine)),
    );
    opaque(
        "api key, revoked",
        "ak_revoked000000000000000000000000",
        TokenType::ApiKey,
        Some(with(key(&user), "revoked", true.into())),
    );
    opaque(
        "api key, expired flag",
        "ak_expired000000000000000000000000",
        TokenType::ApiKey,
        Some(with(key(&user), "expired", true.into())),
    );
    opaque(
        "api key, expiration past",
        "ak_past000000000000000000000000000",
        TokenType::ApiKey,
        Some(with(key(&user), "expiration", (now_ms - 60_000).into())),
    );
    opaque(
        "api key, expiration future",
        "ak_future00000000000000000000000000",
        TokenType::ApiKey,
        Some(with(key(&user), "expiration", (now_ms + 3_600_000).into())),
    );
    opaque(
        "api key, unknown",
        "ak_unknown000000000000000000000000",
        TokenType::ApiKey,
        None,
    );
    opaque(
        "m2m, valid",
        "mt_valid0000000000000000000000000",
        TokenType::M2mToken,
        Some(FakeClerkApi::m2m_answer(machine)),
    );
    opaque(
        "m2m, revoked",
        "mt_revoked00000000000000000000000",
        TokenType::M2mToken,
        Some(with(
            FakeClerkApi::m2m_answer(machine),
            "revoked",
            true.into(),
        )),
    );
    opaque(
        "m2m, unknown",
        "mt_unknown00000000000000000000000",
        TokenType::M2mToken,
        None,
    );
    opaque(
        "oauth, valid",
        "oat_valid000000000000000000000000",
        TokenType::OAuthToken,
        Some(FakeClerkApi::oauth_answer(&user)),
    );
    opaque(
        "oauth, unknown (active: false)",
        "oat_unknown00000000000000000000000",
        TokenType::OAuthToken,
        None,
    );

    let jwts = [
        ("session", issuer.token(&user)),
        ("m2m jwt", issuer.m2m_jwt_for(machine).build()),
        (
            "m2m jwt, no cat",
            issuer.m2m_jwt_for(machine).without_header("cat").build(),
        ),
        (
            "m2m jwt, session cat",
            issuer
                .m2m_jwt_for(machine)
                .header("cat", "cl_B7d4PD111AAA")
                .build(),
        ),
        (
            "m2m jwt, template cat",
            issuer
                .m2m_jwt_for(machine)
                .header("cat", "cl_B7d4PD222AAA")
                .build(),
        ),
        (
            "m2m jwt, expired",
            issuer.m2m_jwt_for(machine).expired_for(60).build(),
        ),
        (
            "m2m jwt, other iss",
            issuer
                .m2m_jwt_for(machine)
                .claim("iss", "https://other.example")
                .build(),
        ),
        (
            "m2m jwt, wrong signature",
            issuer.m2m_jwt_for(machine).wrong_signature().build(),
        ),
        ("oauth jwt, at+jwt", issuer.oauth_jwt_for(&user).build()),
        (
            "oauth jwt, application/at+jwt",
            issuer
                .oauth_jwt_for(&user)
                .header("typ", "application/at+jwt")
                .build(),
        ),
        (
            "oauth jwt, AT+JWT",
            issuer.oauth_jwt_for(&user).header("typ", "AT+JWT").build(),
        ),
        (
            "oauth jwt, no cat",
            issuer.oauth_jwt_for(&user).without_header("cat").build(),
        ),
        (
            "oauth jwt, m2m cat",
            issuer
                .oauth_jwt_for(&user)
                .header("cat", "cl_B7d4PD333AAA")
                .build(),
        ),
        (
            "oauth jwt, expired",
            issuer.oauth_jwt_for(&user).expired_for(60).build(),
        ),
        (
            "oauth jwt, other iss",
            issuer
                .oauth_jwt_for(&user)
                .claim("iss", "https://other.example")
                .build(),
        ),
        ("jwt template", issuer.template_for(&user).build()),
    ];
    for (name, token) in jwts {
        cases.push((name, token));
    }

    let config = issuer.config().build()?;
    let clerk = ClerkSync::builder(config, MemoryUserStore::new())
        .clerk_api(fake.client())
        .build()?;
    let app = Router::new()
        .route("/api/me", get(who))
        .layer(clerk.layer().accepts_any());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let host = issuer.issuer().trim_start_matches("http://").to_owned();
    let publishable_key = format!(
        "pk_test_{}",
        base64::engine::general_purpose::STANDARD.encode(format!("{host}$"))
    );
    let fixtures = json!({
        "app": format!("http://{addr}"),
        "api_url": fake.url(),
        "secret_key": FakeClerkApi::SECRET_KEY,
        "publishable_key": publishable_key,
        "jwt_key": issuer.public_key_pem(),
        "cases": cases.iter().map(|(name, token)| json!({"name": name, "token": token})).collect::<Vec<_>>(),
    });
    println!("{fixtures}");
    let stdin_closed = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    let stop = async {
        tokio::select! {
            () = stdin_closed => {}
            () = tokio::time::sleep(Duration::from_secs(120)) => {}
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}
