//! What the fuzz tests (`proptest`) and the functions' handler tests share: one configuration (a
//! fixed seed, no files written), a local RSA key with a loopback key server for webhook tokens, a
//! DynamoDB client that answers as an empty table without any network, a Marketplace API that
//! never answers, and a subscription seeded at Microsoft and in our table.
//!
//! `shared/tests/fuzz_parsers.rs` uses it as `mod support;`; the functions' `tests/*.rs` include it
//! with `#[path = "../../../shared/tests/support/mod.rs"]`. Each uses only a part.
#![allow(dead_code)]

use std::fmt::Debug;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fulfillment::changes::{Event, record_event};
use fulfillment::domain::{
    BatchUsageEventResult, Operation, OperationId, Plan, PlanId, ResolvedSubscription, Subscription,
    SubscriptionId, Timestamp, UsageEvent, UsageQuery, UsageRecord,
};
use fulfillment::identity::{WebhookAuthenticator, WebhookTokenSettings};
use fulfillment::marketplace::{
    AckStatus, Call, MARKETPLACE_RESOURCE_ID, MarketplaceApi, MarketplaceError, OperationLocation, PageToken,
    SubscriptionsPage, UsageOutcome,
};
use fulfillment::store::dynamodb::DynamoDbStore;
use fulfillment::store::{ChangeSource, SubscriptionStore};
use fulfillment::testing::FakeMarketplace;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseResult, TestRunner};
use ring::rsa::PublicKeyComponents;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};

// Running ------------------------------------------------------------------------------------------

/// The seed of every run, so that runs are repeatable; `PROPTEST_RNG_SEED` explores another.
pub const SEED: u64 = 0x00F0_2211_F00D;

/// `cases` cases from the fixed seed, and no failure file in the source tree: a failure is
/// replayed by running the same test again (the seed is in its message).
pub fn config(cases: u32) -> Config {
    let mut config = Config { cases, failure_persistence: None, ..Config::default() };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config
}

/// Runs `test` on `cases` values of `strategy`. A panic or a failed `prop_assert!` fails the test
/// with the smallest failing input proptest found, and the seed.
pub fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S::Value: Debug,
{
    let config = config(cases);
    let seed = config.rng_seed;
    let mut runner = TestRunner::new(config);
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}\n(seed {seed:?}; run the test again to replay it)");
    }
}

/// One runtime per test, driven case by case.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

// Webhook tokens -----------------------------------------------------------------------------------

/// A 2048-bit RSA key (PKCS #8, DER, base64) made for these tests only: it signs nothing real.
const TEST_KEY_PKCS8: &str = concat!(
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC0deeoR2/rd3Qp5GZTKI00R7/iz+jd8tj8pUFsdqUYbOkn",
    "qrYw5+S3EY68FTSckllySiUli2qVUzFFHESlyXJ6rZn+aWGyNF060mwkfC04/aYsaZTVvOITugyFUjzkZB4Gu3Y0+t+Op5kL",
    "ggZcNm+4VRe5l2LLSBcvvK8J9zXSH4Q0WpIwRnwc7vxJUA5+5H0i00ywBAN//tabx8KBXywFarl+EbfyyCmQD98cFau9/NSz",
    "+/86rKPiAOFqb4iNl4ZVjlWILCAXYTfkIyFuXmgNeRl3w3hvHi3TKuLfAscGPycvPB2fWIzNrz9aGzHlqxzwO2cBtEb65ZmA",
    "NcaBSgg/AgMBAAECggEAGBWGQciq8K+EEtU3LNEEK16KBvC9gOWYvPsnJJ0fAogCg/c+En/YX/BZbtObrmu/wUeQ9pZJNr2g",
    "HTudE80zWJkTrMcOsVRYvvF3WlUySeFcTKAYq3/mYkCZzC9CDi8obLiXGZIDxQusGsOTKrpfJahBntTL7BpmccoKSFe0WKL/",
    "yFC3YPTfCaHhVaR3bSss3yeCI/mQXYZWBFAbobO3WQNtF22d+qNSMLksz8lnJD0pnky5o4RRdz+65WmTJv4S+s0j9H0QiRif",
    "r8dbdadyUbaz8CPpmg+ASwir6NJOEnT/jmU3PtTCZajwzrrN1HaHyEexigI+VwM+qEodVfFFeQKBgQDXI22+BBs2twqYDnjl",
    "XiGeMmuO0Ro7iU0/R27ap3b6ezldz+2iDoF3Hjl9ZiQndD4vIRDvrhl0UuBJEEPwIp9/P+/1kwMjk9wjPdknUxE89U9331Ku",
    "pbf/AITFhHSsFEuIanoMZy4wkGasLfnbr2uM+LsGD8LsYZP5DQxmyFkciQKBgQDWvFpRYS6m3PmRiZCbJ8wiHbeI2ckBMj/7",
    "nWYQSqtxzrfB8ypaDSftBmU6LysxcD0uIPqpr7pkVDBSqK9RZR+DHWaQ9u4nwPcTFic6VjjuAW9JYj0x3hbW3nH9DkYx3p4U",
    "4tpmcuwsBXU5uMdGVyLMbVpsGvCvZdya28ZxCIUchwKBgQDWKChYHJJSdwcOsmlaOcfRSHOVKUWpulWxBhStiEKBuSQz5IWy",
    "6imqP+YOlBytQaOdGpdXX8Fq8Azf7lcStgR7kVP26y8WvVtHoYuG/8OLIM7IjwApZkGwj/2a+O2DVniSBRwVOKjcIwJxpxqv",
    "uwGexQK3V/07fS7lnj2YGxvJsQKBgHQU9i4v/uwtYKyQVR/K78sxjVnpgYOoCnaWq+n6s5ueSDAMp8RugDrdzjMZ9JuRNUGO",
    "inLYkEZUTJsinUO/Cr3yUtPi6POMmQQ0YZhjq/rdw69D8BjZGjeloLFP2hpzYbmguLfRQGK7wJcnkHIyAJnKM6tlFN98jTkZ",
    "vbi1BmBZAoGAXXrjAxJHMIvVNncE7QBmSisp9wmYRduF36KtD4qXOnGaM4/KhNmUyOCj8v8qTcE4LgMkfiky3htF3eFK6FHb",
    "+2X0qa4U575Mf5sZu3EGoyW29ds+dxRFzEg4KH9oydMP4JMfgzgAwP5Me+oqXM6I2KCn+7j9nc9FJyS3cP+J8oE=",
);

/// The key id the test key is published under.
pub const KID: &str = "fuzz-key-1";
pub const TENANT: &str = "72f988bf-0000-4000-8000-00000000f022";
pub const APP: &str = "a1b2c3d4-0000-4000-8000-00000000f022";

/// The test key: signs webhook tokens as the publisher's tenant would.
pub struct TestKey {
    pair: RsaKeyPair,
}

impl TestKey {
    pub fn load() -> Self {
        let der = STANDARD.decode(TEST_KEY_PKCS8).expect("base64");
        Self { pair: RsaKeyPair::from_pkcs8(&der).expect("a PKCS #8 RSA key") }
    }

    /// The tenant's key set, as Entra publishes it.
    pub fn jwks(&self) -> Value {
        let public = PublicKeyComponents::<Vec<u8>>::from(self.pair.public());
        json!({ "keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": KID,
            "n": URL_SAFE_NO_PAD.encode(&public.n), "e": URL_SAFE_NO_PAD.encode(&public.e),
        }] })
    }

    /// The base64url RS256 signature of `input`.
    pub fn signature(&self, input: &str) -> String {
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut signature)
            .expect("signed");
        URL_SAFE_NO_PAD.encode(signature)
    }

    /// A JWT of `header` and `claims`, signed.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.signature(&input);
        format!("{input}.{signature}")
    }

    /// A valid webhook token: `v2` for Entra's v2 issuer (`azp`), else v1 (`appid`).
    pub fn webhook_token(&self, v2: bool, object_id: &str) -> String {
        self.sign(&json!({ "typ": "JWT", "alg": "RS256", "kid": KID }), &webhook_claims(v2, object_id))
    }
}

pub fn now_seconds() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()).expect("i64")
}

/// The claims of a genuine webhook token, valid for the next hour.
pub fn webhook_claims(v2: bool, object_id: &str) -> Value {
    let now = now_seconds();
    let mut claims = json!({
        "aud": APP, "tid": TENANT, "oid": object_id, "iat": now - 10, "nbf": now - 10, "exp": now + 3600,
    });
    let map = claims.as_object_mut().expect("an object");
    if v2 {
        map.insert("iss".into(), json!(format!("https://login.microsoftonline.com/{TENANT}/v2.0")));
        map.insert("azp".into(), json!(MARKETPLACE_RESOURCE_ID));
        map.insert("ver".into(), json!("2.0"));
    } else {
        map.insert("iss".into(), json!(format!("https://sts.windows.net/{TENANT}/")));
        map.insert("appid".into(), json!(MARKETPLACE_RESOURCE_ID));
        map.insert("ver".into(), json!("1.0"));
    }
    claims
}

/// Serves one key set over loopback HTTP, from a thread that lives as long as the test process;
/// counts the fetches.
pub struct KeyServer {
    pub url: String,
    fetches: Arc<AtomicUsize>,
}

impl KeyServer {
    pub fn start(jwks: &Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}/keys", listener.local_addr().expect("an address"));
        let body = jwks.to_string();
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Self { url, fetches }
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A webhook authenticator on the test key's server, refetching keys at most once an hour (so
/// forged key ids cannot make a fuzz run hammer the server).
pub fn authenticator(server: &KeyServer) -> WebhookAuthenticator {
    WebhookAuthenticator::with_key_refresh_interval(
        fulfillment::http::client().expect("an HTTP client"),
        WebhookTokenSettings {
            tenant_id: TENANT.into(),
            app_id: APP.into(),
            marketplace_app_id: MARKETPLACE_RESOURCE_ID.into(),
            jwks_url: server.url.clone(),
            leeway: Duration::from_secs(60),
        },
        Duration::from_secs(3600),
    )
}

// DynamoDB ------------------------------------------------------------------------------------------

/// A DynamoDB client whose every request is answered in memory as by an empty table; it keeps
/// each request (its operation and JSON body) and can answer scans with a `LastEvaluatedKey`.
#[derive(Debug, Clone, Default)]
pub struct EmptyTable {
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    last_key: Arc<Mutex<Option<Value>>>,
}

impl EmptyTable {
    pub fn client(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDFUZZ", "fuzz-secret", None, None, "fuzz"))
            .endpoint_url("http://127.0.0.1:9")
            .http_client(self.clone())
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    pub fn store(&self) -> DynamoDbStore {
        DynamoDbStore::new(self.client(), "fuzz", "fuzz-usage")
    }

    /// Scans answer with this `LastEvaluatedKey` (DynamoDB JSON) from now on.
    pub fn set_last_evaluated_key(&self, key: Option<Value>) {
        *self.last_key.lock().expect("lock") = key;
    }

    /// The requests so far, as (operation, body), and forgets them.
    pub fn take(&self) -> Vec<(String, Value)> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

impl HttpClient for EmptyTable {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for EmptyTable {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
        let body = request.body().bytes().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
        self.seen.lock().expect("lock").push((operation.clone(), body));
        let answer = match operation.as_str() {
            "Scan" => {
                let mut answer = json!({ "Items": [], "Count": 0, "ScannedCount": 0 });
                if let Some(key) = self.last_key.lock().expect("lock").clone() {
                    answer["LastEvaluatedKey"] = key;
                }
                answer
            }
            "Query" => json!({ "Items": [], "Count": 0, "ScannedCount": 0 }),
            "BatchGetItem" => json!({ "Responses": {}, "UnprocessedKeys": {} }),
            _ => json!({}),
        };
        let mut response = HttpResponse::new(
            StatusCode::try_from(200).expect("a status"),
            SdkBody::from(answer.to_string()),
        );
        response.headers_mut().insert("content-type", "application/x-amz-json-1.0");
        HttpConnectorFuture::ready(Ok(response))
    }
}

// Marketplace ---------------------------------------------------------------------------------------

/// Microsoft, never answering in time; it counts the calls and keeps the purchase tokens it was
/// asked to resolve. Clones share them.
#[derive(Debug, Default, Clone)]
pub struct Unreachable {
    resolved: Arc<Mutex<Vec<String>>>,
    calls: Arc<AtomicUsize>,
}

impl Unreachable {
    /// The calls so far, and forgets them.
    pub fn take_calls(&self) -> usize {
        self.calls.swap(0, Ordering::SeqCst)
    }

    /// The purchase tokens asked to resolve so far, and forgets them.
    pub fn take_resolved(&self) -> Vec<String> {
        std::mem::take(&mut *self.resolved.lock().expect("lock"))
    }

    fn late(&self, action: &'static str) -> MarketplaceError {
        self.calls.fetch_add(1, Ordering::SeqCst);
        MarketplaceError::DeadlineExceeded { action }
    }
}

impl MarketplaceApi for Unreachable {
    async fn resolve(&self, token: &str, _: &Call) -> Result<ResolvedSubscription, MarketplaceError> {
        self.resolved.lock().expect("lock").push(token.to_owned());
        Err(self.late("resolve"))
    }
    async fn activate(
        &self,
        _: &SubscriptionId,
        _: &PlanId,
        _: Option<u32>,
        _: &Call,
    ) -> Result<(), MarketplaceError> {
        Err(self.late("activate"))
    }
    async fn list_subscriptions(
        &self,
        _: Option<&PageToken>,
        _: &Call,
    ) -> Result<SubscriptionsPage, MarketplaceError> {
        Err(self.late("list subscriptions"))
    }
    async fn get_subscription(&self, _: &SubscriptionId, _: &Call) -> Result<Subscription, MarketplaceError> {
        Err(self.late("get subscription"))
    }
    async fn list_available_plans(
        &self,
        _: &SubscriptionId,
        _: Option<&PlanId>,
        _: &Call,
    ) -> Result<Vec<Plan>, MarketplaceError> {
        Err(self.late("list plans"))
    }
    async fn change_plan(
        &self,
        _: &SubscriptionId,
        _: &PlanId,
        _: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        Err(self.late("change plan"))
    }
    async fn change_quantity(
        &self,
        _: &SubscriptionId,
        _: u32,
        _: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        Err(self.late("change quantity"))
    }
    async fn delete_subscription(
        &self,
        _: &SubscriptionId,
        _: &Call,
    ) -> Result<OperationLocation, MarketplaceError> {
        Err(self.late("delete subscription"))
    }
    async fn list_outstanding_operations(
        &self,
        _: &SubscriptionId,
        _: &Call,
    ) -> Result<Vec<Operation>, MarketplaceError> {
        Err(self.late("list operations"))
    }
    async fn get_operation(
        &self,
        _: &SubscriptionId,
        _: &OperationId,
        _: &Call,
    ) -> Result<Operation, MarketplaceError> {
        Err(self.late("get operation"))
    }
    async fn update_operation_status(
        &self,
        _: &SubscriptionId,
        _: &OperationId,
        _: AckStatus,
        _: &Call,
    ) -> Result<(), MarketplaceError> {
        Err(self.late("update operation"))
    }
    async fn post_usage_event(&self, _: &UsageEvent, _: &Call) -> Result<UsageOutcome, MarketplaceError> {
        Err(self.late("post usage"))
    }
    async fn post_usage_events(
        &self,
        _: &[UsageEvent],
        _: &Call,
    ) -> Result<BatchUsageEventResult, MarketplaceError> {
        Err(self.late("post usage batch"))
    }
    async fn get_usage_events(&self, _: &UsageQuery, _: &Call) -> Result<Vec<UsageRecord>, MarketplaceError> {
        Err(self.late("get usage"))
    }
}

// Seeding ------------------------------------------------------------------------------------------

/// `subscription` held by Microsoft (the Marketplace model) and recorded in our table as the landing
/// page saw it at `now`.
pub async fn seed(
    market: &FakeMarketplace,
    store: &impl SubscriptionStore,
    subscription: Subscription,
    now: Timestamp,
) {
    market.insert_subscription(subscription.clone());
    let seen =
        Event::observed(subscription, now, OperationId::parse("seed").expect("id"), ChangeSource::Landing);
    record_event(store, &seen, now).await.expect("seeded");
}
