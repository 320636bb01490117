//! Shared helpers of the integration tests: an app whose handler reads the user row back from
//! PostgreSQL, a counting wrapper around the real store, and a TCP proxy that can be cut.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use clerk_sync::store::{
    ChannelEvent, ChannelStream, ImportCounts, InvalidationChannel, StoreFuture, UpsertOutcome,
    UserChange, UserProfile, UserStore, WebhookOutcome,
};
use clerk_sync::testing::DevIssuer;
use clerk_sync::{ClerkSync, ClerkSyncBuilder, ClerkUser, MemoryUserStore, PgUserStore};
use futures_util::StreamExt as _;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// Where a test's users live: the real PostgreSQL (a `#[sqlx::test]` pool) or, for tests of
/// the layer that do not test SQL, the memory store (no database needed).
pub trait TestDb: Clone + Send + Sync + 'static {
    /// The store on this database.
    type Store: UserStore + Clone;
    fn store(&self) -> Self::Store;
    fn migrate(&self) -> impl std::future::Future<Output = ()> + Send;
    /// Users written so far, ids sorted.
    fn ids(&self) -> impl std::future::Future<Output = Vec<String>> + Send;
    /// `(tier, email)` of one user.
    fn row(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Option<(String, Option<String>)>> + Send;
}

impl TestDb for PgPool {
    type Store = PgUserStore;

    fn store(&self) -> PgUserStore {
        PgUserStore::new(self.clone())
    }

    async fn migrate(&self) {
        clerk_sync::migrate(self).await.unwrap();
    }

    async fn ids(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT id FROM users ORDER BY id")
            .fetch_all(self)
            .await
            .unwrap()
    }

    async fn row(&self, id: &str) -> Option<(String, Option<String>)> {
        sqlx::query_as("SELECT tier, email FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(self)
            .await
            .unwrap()
    }
}

impl TestDb for MemoryUserStore {
    type Store = MemoryUserStore;

    fn store(&self) -> MemoryUserStore {
        self.clone()
    }

    async fn migrate(&self) {}

    async fn ids(&self) -> Vec<String> {
        self.users().into_iter().map(|user| user.id).collect()
    }

    async fn row(&self, id: &str) -> Option<(String, Option<String>)> {
        self.user(id).map(|user| (user.tier, user.email))
    }
}

/// Wraps a store and counts the layer's upserts that reach it; everything else is delegated
/// unchanged.
#[derive(Clone)]
pub struct CountingStore<S = PgUserStore> {
    inner: S,
    calls: Arc<AtomicU64>,
}

impl CountingStore<PgUserStore> {
    pub fn new(pool: PgPool) -> Self {
        Self::on(PgUserStore::new(pool))
    }
}

impl<S> CountingStore<S> {
    pub fn on(inner: S) -> Self {
        Self {
            inner,
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl<S: UserStore> UserStore for CountingStore<S> {
    fn upsert<'a>(&'a self, profile: &'a UserProfile) -> StoreFuture<'a, UpsertOutcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.upsert(profile)
    }

    fn apply_webhook<'a>(
        &'a self,
        delivery_id: &'a str,
        change: &'a UserChange,
    ) -> StoreFuture<'a, WebhookOutcome> {
        self.inner.apply_webhook(delivery_id, change)
    }

    fn import<'a>(&'a self, profiles: &'a [UserProfile]) -> StoreFuture<'a, ImportCounts> {
        self.inner.import(profiles)
    }

    fn invalidation_channel(&self) -> Option<Arc<dyn InvalidationChannel>> {
        self.inner.invalidation_channel()
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.inner.ping()
    }

    fn organizations(&self) -> Option<&dyn clerk_sync::store::OrganizationStore> {
        self.inner.organizations()
    }
}

/// An invalidation channel the test plays: [`send`](Self::send) feeds the listener's stream,
/// and every publish is recorded (and delivered to the listener, as a real channel would).
#[derive(Clone, Default)]
pub struct ScriptedChannel {
    sender: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<ChannelEvent>>>>,
    receiver: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ChannelEvent>>>>,
    pub published: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ScriptedChannel {
    fn ensure(&self) {
        let mut sender = self.sender.lock().unwrap();
        if sender.is_none() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            *sender = Some(tx);
            *self.receiver.lock().unwrap() = Some(rx);
        }
    }

    pub fn send(&self, event: ChannelEvent) {
        self.ensure();
        let _ = self.sender.lock().unwrap().as_ref().unwrap().send(event);
    }

    pub fn published(&self) -> Vec<String> {
        self.published.lock().unwrap().clone()
    }
}

impl InvalidationChannel for ScriptedChannel {
    fn publish<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        self.published.lock().unwrap().push(id.to_owned());
        self.send(ChannelEvent::Message(id.to_owned()));
        Box::pin(async { Ok(()) })
    }

    fn listen(&self) -> ChannelStream {
        self.ensure();
        let receiver = self.receiver.lock().unwrap().take();
        match receiver {
            Some(receiver) => futures_util::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|event| (event, receiver))
            })
            .boxed(),
            None => futures_util::stream::pending().boxed(),
        }
    }
}

/// Polls `clerk.stats()` until `ready` holds (10 s at most); returns how long it took.
pub async fn wait_for(
    clerk: &ClerkSync,
    what: &str,
    ready: impl Fn(&clerk_sync::Stats) -> bool,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    while !ready(&clerk.stats()) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "timed out waiting for {what}: {:?}",
            clerk.stats()
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    started.elapsed()
}

/// The webhook signing secret of every test app (Svix's documented example secret).
pub const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// Where [`app`] mounts the webhook endpoint.
pub const WEBHOOK_PATH: &str = "/webhooks/clerk";

/// A `ClerkSync` for the dev issuer with [`WEBHOOK_SECRET`], writing through `store`, with
/// `tweak` applied.
pub fn clerk(
    issuer: &DevIssuer,
    store: impl UserStore,
    tweak: impl FnOnce(ClerkSyncBuilder) -> ClerkSyncBuilder,
) -> ClerkSync {
    let config = issuer
        .config()
        .webhook_signing_secret(WEBHOOK_SECRET)
        .build()
        .unwrap();
    tweak(ClerkSync::builder(config, store)).build().unwrap()
}

/// `/me` behind the layer: the handler reads the user's row from the database, so a 200
/// proves the row existed before the handler ran. `/anon` is behind the optional layer, and
/// the webhook endpoint is at [`WEBHOOK_PATH`] when `clerk` has a signing secret.
pub fn app<D: TestDb>(clerk: &ClerkSync, db: D) -> Router {
    let required = Router::new()
        .route("/me", get(me::<D>))
        .layer(clerk.layer());
    let optional = Router::new()
        .route("/anon", get(anon))
        .layer(clerk.optional_layer());
    let router = required.merge(optional).with_state(db);
    match clerk.webhook_router(WEBHOOK_PATH) {
        Ok(webhooks) => router.merge(webhooks),
        // Built without a webhook secret by the test itself.
        Err(_) => router,
    }
}

async fn me<D: TestDb>(State(db): State<D>, user: ClerkUser) -> Json<Value> {
    let row = db.row(user.user_id()).await;
    Json(json!({
        "user_id": user.user_id(),
        "session_id": user.session_id(),
        "tier": user.tier(),
        "synced": user.synced(),
        "row_tier": row.as_ref().map(|r| r.0.clone()),
        "row_email": row.and_then(|r| r.1),
    }))
}

async fn anon(user: Option<ClerkUser>) -> Json<Value> {
    Json(json!({ "user_id": user.as_ref().map(|u| u.user_id().to_owned()) }))
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// `GET path` with `Authorization: Bearer <token>` when a token is given.
pub async fn get_with_token(router: &Router, path: &str, token: Option<&str>) -> Reply {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    send(router, request.body(Body::empty()).unwrap()).await
}

pub async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn user_rows(db: &impl TestDb) -> i64 {
    i64::try_from(db.ids().await.len()).unwrap()
}

/// Asserts the JSON error shape and returns the code.
pub fn error_code(reply: &Reply) -> String {
    let code = reply.body["error"].as_str().unwrap_or_default().to_owned();
    let message = reply.body["message"].as_str().unwrap_or_default();
    assert!(!code.is_empty(), "no error code in {}", reply.body);
    assert!(!message.is_empty(), "no message in {}", reply.body);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/json",
        "error bodies are JSON"
    );
    code
}

/// A loopback TCP proxy in front of PostgreSQL or Redis that a test can cut and restore.
/// While cut, open connections are closed and new ones are accepted and dropped at once. It
/// counts the bytes clients sent upstream, and keeps the local address of each upstream
/// connection (the address the server sees, for `CLIENT KILL ADDR`).
pub struct TcpProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    sent: Arc<AtomicU64>,
    upstream_addrs: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let sent = Arc::new(AtomicU64::new(0));
        let upstream_addrs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = {
            let (up, stalled, generation) = (up.clone(), stalled.clone(), generation.clone());
            let (sent, upstream_addrs) = (sent.clone(), upstream_addrs.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        let _ = client.shutdown().await;
                        continue;
                    }
                    let mut cut = generation.subscribe();
                    let (sent, upstream_addrs) = (sent.clone(), upstream_addrs.clone());
                    let stalled = stalled.clone();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        if let Ok(local) = server.local_addr() {
                            upstream_addrs.lock().unwrap().push(local);
                        }
                        let (mut from_client, mut to_client) = client.split();
                        let (mut from_server, mut to_server) = server.split();
                        let upward = async {
                            let mut buffer = [0u8; 8192];
                            loop {
                                let n = from_client.read(&mut buffer).await?;
                                if n == 0 {
                                    return Ok::<_, std::io::Error>(());
                                }
                                // A partition: the bytes wait (as TCP retransmits them)
                                // until it heals.
                                while stalled.load(Ordering::SeqCst) {
                                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                                }
                                sent.fetch_add(n as u64, Ordering::SeqCst);
                                to_server.write_all(&buffer[..n]).await?;
                            }
                        };
                        tokio::select! {
                            _ = upward => {}
                            _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Self {
            addr,
            up,
            stalled,
            generation,
            sent,
            upstream_addrs,
            task,
        }
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Keeps every connection open but holds what clients send until [`restore`]: requests
    /// go unanswered (a network partition), so only timeouts end them.
    ///
    /// [`restore`]: Self::restore
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
        self.stalled.store(false, Ordering::SeqCst);
    }

    /// Bytes clients have sent upstream so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// The local address of every upstream connection opened so far, oldest first.
    pub fn upstream_addrs(&self) -> Vec<SocketAddr> {
        self.upstream_addrs.lock().unwrap().clone()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Migrates the test database and returns a [`TcpProxy`] in front of it, a pool that reaches the database through
/// it, and a direct pool for the handler and the assertions.
pub async fn proxied_pool(
    options: &PgConnectOptions,
    acquire_timeout: std::time::Duration,
) -> (TcpProxy, PgPool, PgPool) {
    let direct = sqlx::postgres::PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    clerk_sync::migrate(&direct).await.unwrap();
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .find(|addr| addr.is_ipv4())
        .unwrap();
    let proxy = TcpProxy::start(upstream).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(acquire_timeout)
        .connect_with(options.clone().host("127.0.0.1").port(proxy.addr.port()))
        .await
        .unwrap();
    (proxy, pool, direct)
}

/// A migrated database, a dev issuer, a counting store over the real Postgres store, a
/// `ClerkSync` with `tweak` applied, and the `/me` app.
pub struct Harness<S = PgUserStore> {
    pub issuer: DevIssuer,
    pub store: CountingStore<S>,
    pub clerk: ClerkSync,
    pub router: Router,
}

impl<S: UserStore + Clone> Harness<S> {
    pub async fn start<D: TestDb<Store = S>>(
        db: &D,
        tweak: impl FnOnce(ClerkSyncBuilder) -> ClerkSyncBuilder,
    ) -> Self {
        db.migrate().await;
        let issuer = DevIssuer::start().await.unwrap();
        let store = CountingStore::on(db.store());
        let clerk = clerk(&issuer, store.clone(), tweak);
        let router = app(&clerk, db.clone());
        Self {
            issuer,
            store,
            clerk,
            router,
        }
    }
}

/// Collects what a `tracing_subscriber::fmt` subscriber writes, for tests that read the logs.
#[derive(Clone, Default)]
pub struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// A subscriber writing here, at every level, without colours.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(self.clone())
            .finish()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
