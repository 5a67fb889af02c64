//! `EXTRA_ROOT_CERTIFICATES`, the benchmark's way to run the functions against local services
//! behind TLS: the authority it names is trusted besides the compiled-in roots, and nothing else
//! is. The set-up is once per process (as in Lambda), so each test needs a process of its own,
//! which nextest (`scripts/test`) gives it.

use fulfillment::config::{ConfigError, Environment};
use fulfillment::domain::SubscriptionId;
use fulfillment::marketplace::{Call, MarketplaceApi};
use fulfillment::store::SubscriptionStore;
use fulfillment::wiring::Services;
use integration_tests::dynamodb_endpoint;
use local_stack::tls::{TestAuthority, TlsFront, backend_of};
use marketplace_emulator::{Emulator, EmulatorConfig, Purchase};

/// A folder of this test's own under the system's temporary one.
fn scratch() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("extra-roots-{}", uuid::Uuid::new_v4()))
}

struct Behind {
    emulator: Emulator,
    tables: integration_tests::table::TableNames,
    _fronts: (TlsFront, TlsFront),
    environment: Vec<(String, String)>,
}

/// The emulator and DynamoDB Local behind TLS fronts of a fresh test authority, and the
/// settings of a function pointed at them (the authority's file named when `trusted`).
async fn behind_tls(trusted: bool) -> Behind {
    let emulator = Emulator::start(EmulatorConfig::default()).await.expect("the emulator starts");
    let authority = TestAuthority::new().expect("a test authority");
    let ca = authority.write_ca(&scratch()).expect("written");
    let api = authority.front(backend_of(&emulator.url()).expect("address")).await.expect("front");
    let dynamodb = authority.front(backend_of(&dynamodb_endpoint()).expect("address")).await.expect("front");
    let settings = emulator.config();
    let tables = integration_tests::table::TableNames::fresh();
    let mut environment: Vec<(String, String)> = [
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "local".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "local".to_owned()),
        ("TABLE_NAME", tables.subscriptions.clone()),
        ("USAGE_TABLE_NAME", tables.usage.clone()),
        ("DYNAMODB_ENDPOINT", dynamodb.url()),
        ("ENTRA_TENANT_ID", settings.publisher_tenant_id.clone()),
        ("ENTRA_CLIENT_ID", settings.publisher_app_id.clone()),
        ("ENTRA_CLIENT_SECRET", settings.publisher_client_secret.clone()),
        ("ENTRA_AUTHORITY", format!("{}/entra", api.url())),
        ("MARKETPLACE_API_BASE", format!("{}/api", api.url())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if trusted {
        environment.push(("EXTRA_ROOT_CERTIFICATES".into(), ca.display().to_string()));
    }
    Behind { emulator, tables, _fronts: (api, dynamodb), environment }
}

#[tokio::test]
async fn a_function_told_to_trust_the_test_authority_reaches_microsoft_and_dynamodb_over_tls() {
    let behind = behind_tls(true).await;
    // First, before anything in this process builds an HTTPS client.
    let services = Services::load(Environment::from_pairs(behind.environment.clone())).await.expect("loaded");
    let client = integration_tests::client(&dynamodb_endpoint());
    integration_tests::table::create_tables(&client, &behind.tables).await;

    let bought = behind.emulator.purchase(Purchase::plan("team-monthly")).await;
    let id = SubscriptionId::parse(&bought.subscription_id).expect("id");
    let marketplace = services.marketplace_client().expect("client");
    let subscription = marketplace.get_subscription(&id, &Call::new()).await.expect("read over TLS");
    assert_eq!(subscription.id, id);
    assert_eq!(services.store.get(&id).await.expect("DynamoDB over TLS"), None);
    // The only way to the emulator was the front: Entra's token came over TLS too.
    let requests = behind.emulator.requests().await;
    assert!(requests.iter().any(|r| r.path.contains(id.as_str())), "{requests:?}");
}

#[tokio::test]
async fn without_it_the_test_authority_is_not_trusted() {
    let behind = behind_tls(false).await;
    let services = Services::load(Environment::from_pairs(behind.environment.clone())).await.expect("loaded");
    let bought = behind.emulator.purchase(Purchase::plan("team-monthly")).await;
    let id = SubscriptionId::parse(&bought.subscription_id).expect("id");
    let marketplace = services.marketplace_client().expect("client");
    let refused = marketplace.get_subscription(&id, &Call::new()).await;
    assert!(
        matches!(&refused, Err(e) if format!("{e:?}").contains("UnknownIssuer")),
        "the test authority's certificate must be refused: {refused:?}"
    );
    assert!(services.store.get(&id).await.is_err(), "DynamoDB behind the front is refused too");
    assert!(behind.emulator.requests().await.is_empty(), "nothing reached the emulator");
}

#[test]
fn an_unusable_authority_file_is_a_configuration_error() {
    let dir = scratch();
    std::fs::create_dir_all(&dir).expect("a folder");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").expect("written");
    let junk = dir.join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .expect("written");
    let missing = dir.join("missing.pem");
    for path in [&empty, &junk, &missing] {
        let environment = Environment::from_pairs([("EXTRA_ROOT_CERTIFICATES", path.display().to_string())]);
        let error = environment.extra_root_certificates().expect_err("refused");
        assert!(
            matches!(&error, ConfigError::Invalid { name: "EXTRA_ROOT_CERTIFICATES", reason } if reason.contains(&path.display().to_string())),
            "{path:?}: {error:?}"
        );
    }
    assert_eq!(Environment::from_pairs([("OTHER", "x")]).extra_root_certificates(), Ok(Vec::new()));
}

#[tokio::test]
async fn an_authority_given_after_an_https_client_was_built_stops_the_start() {
    let behind = behind_tls(true).await;
    let _early = fulfillment::http::client().expect("a client");
    let refused = Services::load(Environment::from_pairs(behind.environment.clone())).await;
    let error = format!("{:?}", refused.err().expect("the start fails"));
    assert!(error.contains("EXTRA_ROOT_CERTIFICATES"), "{error}");
}
