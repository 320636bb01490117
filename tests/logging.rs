//! Log lines carry user ids and rejection codes, never token bytes.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Harness, get_with_token};
use sqlx::PgPool;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[sqlx::test(migrations = false)]
async fn logs_name_users_and_codes_but_never_tokens(pool: PgPool) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let Harness { issuer, router, .. } = Harness::start(&pool, |b| b).await;
    let good = issuer
        .token_for("user_logged")
        .claim("email", "l@example.com")
        .build();
    let expired = issuer.token_for("user_logged").expired_for(30).build();
    let forged = issuer.token_for("user_logged").wrong_signature().build();
    for token in [&good, &good, &expired, &forged] {
        get_with_token(&router, "/me", Some(token)).await;
    }

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("user_logged"), "user ids are logged:\n{logs}");
    assert!(logs.contains("token_expired") && logs.contains("invalid_signature"));
    for token in [&good, &expired, &forged] {
        for part in token.split('.') {
            assert!(
                !logs.contains(part),
                "a token part reached the logs:\n{logs}"
            );
        }
    }
}
