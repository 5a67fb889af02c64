//! The webhook's bearer-token check (docs/marketplace-api.md#webhook-authentication, #known-pitfalls items 3 and 5) against the emulator's
//! publisher tenant: its keys, its webhook claims and tokens forged from them.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fulfillment::identity::{
    TokenVersion, WebhookAuthError, WebhookAuthenticator, WebhookCaller, WebhookTokenSettings,
};
use fulfillment::marketplace::MARKETPLACE_RESOURCE_ID;
use integration_tests::stub::{Canned, Stub};
use marketplace_emulator::{Emulator, EmulatorConfig, Endpoint, Fault};
use serde_json::{Value, json};

const JWKS_PATH: &str = "/tenant/discovery/v2.0/keys";

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default()).await.expect("the emulator starts")
}

fn settings(emulator: &Emulator, jwks_url: &str) -> WebhookTokenSettings {
    WebhookTokenSettings {
        tenant_id: emulator.config().publisher_tenant_id.clone(),
        app_id: emulator.config().publisher_app_id.clone(),
        marketplace_app_id: MARKETPLACE_RESOURCE_ID.into(),
        jwks_url: jwks_url.into(),
        leeway: Duration::from_secs(60),
    }
}

/// An authenticator on the emulator's publisher-tenant keys, with the production refresh interval.
fn authenticator(emulator: &Emulator) -> WebhookAuthenticator {
    WebhookAuthenticator::new(reqwest::Client::new(), settings(emulator, &emulator.jwks_url()))
}

/// A stub serving the emulator's keys at [`JWKS_PATH`] (it counts the fetches).
async fn jwks_stub(emulator: &Emulator) -> Stub {
    let stub = Stub::start().await;
    stub.on("GET", JWKS_PATH, Canned::json(200, &emulator.jwks().to_string()));
    stub
}

fn fetches(stub: &Stub) -> usize {
    stub.seen_at("GET", JWKS_PATH).len()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn accepted(authenticator: &WebhookAuthenticator, token: &str) -> WebhookCaller {
    match authenticator.verify(Some(&bearer(token))).await {
        Ok(caller) => caller,
        Err(e) => panic!("refused: {e} ({e:?})"),
    }
}

/// The refusal of `token`, which must not quote the token (nor its payload or signature).
async fn refused(authenticator: &WebhookAuthenticator, token: &str) -> WebhookAuthError {
    let error = match authenticator.verify(Some(&bearer(token))).await {
        Ok(caller) => panic!("accepted: {caller:?}"),
        Err(e) => e,
    };
    assert_no_leak(&error, token);
    error
}

fn assert_no_leak(error: &WebhookAuthError, token: &str) {
    let text =
        format!("{error} | {error:?} | {:?}", std::error::Error::source(error).map(ToString::to_string));
    assert!(text.len() < 600, "a short message: {text}");
    for part in std::iter::once(token).chain(token.split('.')).filter(|p| p.len() >= 16) {
        assert!(!text.contains(part), "the error quotes the token: {text}");
    }
}

fn claim_refused(error: &WebhookAuthError, expected: &str) {
    match error {
        WebhookAuthError::Claim { claim, .. } => assert_eq!(*claim, expected, "{error}"),
        other => panic!("expected a refused {expected} claim, got {other:?}"),
    }
}

fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()).expect("i64")
}

fn with(claims: &Value, name: &str, value: Value) -> Value {
    let mut claims = claims.clone();
    claims[name] = value;
    claims
}

fn without(claims: &Value, names: &[&str]) -> Value {
    let mut claims = claims.clone();
    let map = claims.as_object_mut().expect("claims are an object");
    for name in names {
        map.remove(*name);
    }
    claims
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unsigned_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()))
}

/// v2 claims (as Entra issues when the app accepts v2 tokens) from the emulator's v1 claims.
fn v2_claims(emulator: &Emulator) -> Value {
    let tenant = &emulator.config().publisher_tenant_id;
    let claims = without(&emulator.webhook_claims(), &["appid", "appidacr"]);
    let claims = with(&claims, "iss", json!(format!("https://login.microsoftonline.com/{tenant}/v2.0")));
    let claims = with(&claims, "ver", json!("2.0"));
    with(&claims, "azp", json!(MARKETPLACE_RESOURCE_ID))
}

/// An RSA key that is not the tenant's.
struct OtherKey {
    pair: RsaKeyPair,
    kid: String,
}

impl OtherKey {
    fn generate(kid: &str) -> Self {
        Self { pair: RsaKeyPair::generate(KeySize::Rsa2048).expect("an RSA key"), kid: kid.into() }
    }

    /// An RS256 JWT over `claims` whose header names `kid`.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let input = unsigned_input(&json!({"typ": "JWT", "alg": "RS256", "kid": kid}), claims);
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), input.as_bytes(), &mut signature)
            .expect("signed");
        format!("{input}.{}", b64(&signature))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    fn jwk(&self) -> Value {
        let public = self.pair.public_key();
        json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        })
    }
}

static OTHER_KEY: LazyLock<OtherKey> = LazyLock::new(|| OtherKey::generate("not-the-tenants-key"));
static ROTATED_KEY: LazyLock<OtherKey> = LazyLock::new(|| OtherKey::generate("rotated-in-key"));

// --- The tokens Microsoft sends ---

#[tokio::test]
async fn the_emulators_v1_webhook_token_is_accepted() {
    let emulator = emulator().await;
    let claims = emulator.webhook_claims();
    let caller = accepted(&authenticator(&emulator), &emulator.sign_jwt(&claims)).await;
    assert_eq!(
        caller,
        WebhookCaller {
            object_id: Some(claims["oid"].as_str().expect("an oid").to_owned()),
            version: TokenVersion::V1
        }
    );
}

#[tokio::test]
async fn a_v2_webhook_token_is_accepted() {
    let config = EmulatorConfig {
        webhook_token_version: marketplace_emulator::TokenVersion::V2,
        ..EmulatorConfig::default()
    };
    let emulator = Emulator::start(config).await.expect("the emulator starts");
    let authenticator = authenticator(&emulator);
    let claims = emulator.webhook_claims();
    assert!(claims.get("azp").is_some() && claims.get("appid").is_none(), "{claims}");
    assert_eq!(accepted(&authenticator, &emulator.sign_jwt(&claims)).await.version, TokenVersion::V2);
    // The same, forged from v1 claims.
    assert_eq!(
        accepted(&authenticator, &emulator.sign_jwt(&v2_claims(&emulator))).await.version,
        TokenVersion::V2
    );
}

#[tokio::test]
async fn the_token_of_a_delivered_webhook_is_accepted_as_sent() {
    let receiver = Stub::start().await;
    receiver.on("POST", "/webhook", Canned::empty(200));
    let config = EmulatorConfig {
        webhook_url: Some(format!("{}/webhook", receiver.url)),
        ..EmulatorConfig::default()
    };
    let emulator = Emulator::start(config).await.expect("the emulator starts");
    let id = "5eed0000-0000-4000-8000-00000000b001";
    emulator.seed(vec![json!({"id": id, "saasSubscriptionStatus": "Subscribed"})]).await;
    emulator.suspend(id).await.expect("suspended");
    emulator.wait_webhook(Duration::from_secs(10), |d| d.status == Some(200)).await.expect("delivered");
    let delivered = receiver.seen_at("POST", "/webhook");
    let header = delivered[0].headers.get("authorization").expect("an Authorization header");
    let caller = authenticator(&emulator).verify(Some(header)).await.expect("accepted");
    assert_eq!(caller.version, TokenVersion::V1);
    assert!(caller.object_id.is_some());
}

// --- Not a bearer JWT ---

#[tokio::test]
async fn no_bearer_token_is_missing() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let token = emulator.sign_jwt(&emulator.webhook_claims());
    for header in
        [None, Some(String::new()), Some("Bearer".into()), Some(format!("Basic {token}")), Some(token)]
    {
        let error = authenticator.verify(header.as_deref()).await.expect_err("refused");
        assert!(matches!(error, WebhookAuthError::Missing), "{header:?}: {error:?}");
        assert!(error.is_callers_fault());
    }
}

#[tokio::test]
async fn what_is_not_a_jwt_is_malformed_and_nothing_panics() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let good = emulator.sign_jwt(&emulator.webhook_claims());
    let (header, rest) = good.split_once('.').expect("a JWT");
    let array_header = format!("{}.{rest}", b64(br#"["RS256","x"]"#));
    let string_header = format!("{}.{rest}", b64(br#""RS256""#));
    let not_json_header = format!("{}.{rest}", b64(b"{alg: RS256}"));
    let not_utf8_header = format!("{}.{rest}", b64(&[0xff, 0xfe, b'{', b'}']));
    let megabyte = format!("{header}.{}.{}", "A".repeat(1 << 20), "B".repeat(342));
    for token in [
        "not-a-jwt".to_owned(),
        "a.b".to_owned(),
        format!("{good}.extra"),
        format!("{header}..sig"),
        format!(".{rest}"),
        format!("{header}.payload with spaces.sig"),
        format!("{header}.e30=.sig"),
        "%%%.%%%.%%%".to_owned(),
        format!("{}.{rest}", &header[..header.len() - 1]),
        array_header,
        string_header,
        not_json_header,
        not_utf8_header,
        megabyte,
    ] {
        let error = refused(&authenticator, &token).await;
        assert!(matches!(error, WebhookAuthError::Malformed(_)), "{:.80}: {error:?}", token);
    }
    // Signed by the tenant's key, yet not claims.
    for claims in [json!(["a", 1]), json!("claims"), json!(null)] {
        let error = refused(&authenticator, &emulator.sign_jwt(&claims)).await;
        assert!(matches!(error, WebhookAuthError::Malformed(_)), "{claims}: {error:?}");
    }
}

#[tokio::test]
async fn no_one_character_change_is_accepted() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let good = emulator.sign_jwt(&emulator.webhook_claims());
    accepted(&authenticator, &good).await;
    let mut bytes = good.clone().into_bytes();
    for i in 0..bytes.len() {
        let original = bytes[i];
        bytes[i] = match original {
            b'.' => b'A',
            b'A' => b'B',
            _ => b'A',
        };
        let token = String::from_utf8(bytes.clone()).expect("ASCII");
        let error = refused(&authenticator, &token).await;
        assert!(error.is_callers_fault(), "{i}: {error:?}");
        bytes[i] = original;
    }
}

// --- The signature comes first ---

#[tokio::test]
async fn only_rs256_is_accepted() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let claims = emulator.webhook_claims();
    let kid = emulator.kid();
    for alg in [
        json!("none"),
        json!("None"),
        json!("HS256"),
        json!("RS384"),
        json!("RS512"),
        json!("PS256"),
        json!("ES256"),
        json!("rs256"),
        json!(""),
        json!(null),
        json!(256),
    ] {
        let input = unsigned_input(&json!({"typ": "JWT", "alg": alg, "kid": kid}), &claims);
        // Also with the tenant's real RS256 signature over that input: the header still decides.
        let unsigned = format!("{input}.");
        let signed_elsewhere =
            format!("{input}.{}", emulator.sign_jwt(&claims).rsplit('.').next().expect("sig"));
        for token in [unsigned, signed_elsewhere] {
            let error = refused(&authenticator, &token).await;
            assert!(matches!(error, WebhookAuthError::Algorithm(_)), "{alg}: {error:?}");
        }
    }
    let no_alg = format!("{}.", unsigned_input(&json!({"typ": "JWT", "kid": kid}), &claims));
    assert!(matches!(refused(&authenticator, &no_alg).await, WebhookAuthError::Algorithm(_)));
}

/// The DER `RSAPublicKey` (PKCS #1) of the JWKS's first key.
fn tenant_public_key_der(emulator: &Emulator) -> Vec<u8> {
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = content.len();
        let mut out = vec![tag];
        if len < 0x80 {
            out.push(u8::try_from(len).expect("short"));
        } else {
            let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            out.push(0x80 | u8::try_from(bytes.len()).expect("short"));
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }
    fn unsigned_integer(bytes: &[u8]) -> Vec<u8> {
        let mut content = bytes.to_vec();
        if content[0] & 0x80 != 0 {
            content.insert(0, 0);
        }
        der(0x02, &content)
    }
    let jwk = &emulator.jwks()["keys"][0];
    let decode =
        |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().expect("n and e")).expect("base64url");
    der(0x30, &[unsigned_integer(&decode("n")), unsigned_integer(&decode("e"))].concat())
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> =
        body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ASCII")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let pkcs1 = tenant_public_key_der(&emulator);
    // The DER really is the tenant's key: it verifies the emulator's signature.
    let good = emulator.sign_jwt(&emulator.webhook_claims());
    let (input, signature) = good.rsplit_once('.').expect("a JWT");
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, &pkcs1)
        .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(signature).expect("base64url"))
        .expect("the DER is the tenant's public key");
    let rsa_encryption = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut bit_string = vec![0];
    bit_string.extend(&pkcs1);
    let spki = {
        let algorithm =
            [vec![0x30, u8::try_from(rsa_encryption.len()).expect("short")], rsa_encryption.to_vec()]
                .concat();
        let mut key = vec![0x03, 0x82];
        key.extend(u16::try_from(bit_string.len()).expect("short").to_be_bytes());
        key.extend(&bit_string);
        let content = [algorithm, key].concat();
        let mut out = vec![0x30, 0x82];
        out.extend(u16::try_from(content.len()).expect("short").to_be_bytes());
        out.extend(content);
        out
    };
    aws_lc_rs::rsa::PublicEncryptingKey::from_der(&spki).expect("a valid SubjectPublicKeyInfo");
    let n = URL_SAFE_NO_PAD.decode(emulator.jwks()["keys"][0]["n"].as_str().expect("n")).expect("n");
    let secrets: Vec<Vec<u8>> = vec![
        pem("RSA PUBLIC KEY", &pkcs1).into_bytes(),
        pem("PUBLIC KEY", &spki).into_bytes(),
        pkcs1.clone(),
        spki,
        n,
        emulator.jwks()["keys"][0].to_string().into_bytes(),
    ];
    let claims = emulator.webhook_claims();
    for secret in secrets {
        let input = unsigned_input(&json!({"typ": "JWT", "alg": "HS256", "kid": emulator.kid()}), &claims);
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
        let token = format!("{input}.{}", b64(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()));
        let error = refused(&authenticator, &token).await;
        assert!(matches!(error, WebhookAuthError::Algorithm(_)), "{error:?}");
    }
}

#[tokio::test]
async fn a_key_the_tenant_does_not_publish_is_unknown() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let claims = emulator.webhook_claims();
    let error = refused(&authenticator, &OTHER_KEY.sign(&claims)).await;
    assert!(
        matches!(&error, WebhookAuthError::UnknownKey(kid) if kid.contains("not-the-tenants-key")),
        "{error:?}"
    );
    // The tenant's key signed it, but the header names another one.
    let (_, rest) =
        emulator.sign_jwt(&claims).split_once('.').map(|(h, r)| (h.to_owned(), r.to_owned())).expect("JWT");
    let renamed = format!(
        "{}.{rest}",
        b64(json!({"typ": "JWT", "alg": "RS256", "kid": "other"}).to_string().as_bytes())
    );
    assert!(matches!(refused(&authenticator, &renamed).await, WebhookAuthError::UnknownKey(_)));
    // No kid at all (Entra always sends one).
    for header in [
        json!({"typ": "JWT", "alg": "RS256"}),
        json!({"alg": "RS256", "kid": ""}),
        json!({"alg": "RS256", "kid": 7}),
    ] {
        let token = format!("{}.{rest}", b64(header.to_string().as_bytes()));
        assert!(matches!(refused(&authenticator, &token).await, WebhookAuthError::UnknownKey(_)), "{header}");
    }
}

#[tokio::test]
async fn a_signature_by_another_key_does_not_verify() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let claims = emulator.webhook_claims();
    // Another key, claiming to be the tenant's.
    let forged = OTHER_KEY.sign_as(&emulator.kid(), &claims);
    assert!(matches!(refused(&authenticator, &forged).await, WebhookAuthError::Signature));
    // The tenant's signature over other claims.
    let good = emulator.sign_jwt(&claims);
    let signature = good.rsplit('.').next().expect("a signature");
    let (header, _) = good.split_once('.').expect("a header");
    let other_claims = with(&claims, "aud", json!("some-other-app"));
    let spliced = format!("{header}.{}.{signature}", b64(other_claims.to_string().as_bytes()));
    assert!(matches!(refused(&authenticator, &spliced).await, WebhookAuthError::Signature));
    // No signature.
    let (input, _) = good.rsplit_once('.').expect("a JWT");
    assert!(matches!(refused(&authenticator, &format!("{input}.")).await, WebhookAuthError::Signature));
    // The signature is checked before the claims: a bad signature on bad claims reports the signature.
    let bad_both = OTHER_KEY.sign_as(&emulator.kid(), &with(&claims, "exp", json!(now() - 7200)));
    assert!(matches!(refused(&authenticator, &bad_both).await, WebhookAuthError::Signature));
}

// --- Then the claims ---

#[tokio::test]
async fn the_audience_must_be_our_app() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let claims = emulator.webhook_claims();
    let app = emulator.config().publisher_app_id.clone();
    for aud in [
        json!(format!("api://{app}")),
        json!(app.to_ascii_uppercase()),
        json!(format!("API://{}", app.to_ascii_uppercase())),
        json!(["another-audience", app]),
        json!([format!("api://{app}")]),
    ] {
        accepted(&authenticator, &emulator.sign_jwt(&with(&claims, "aud", aud))).await;
    }
    for aud in [
        json!("b1b2c3d4-0000-4000-8000-00000000a991"),
        json!(MARKETPLACE_RESOURCE_ID),
        json!(format!("api://{app}/")),
        json!(format!("https://{app}")),
        json!(format!("{app} ")),
        json!([]),
        json!(["another-audience"]),
        json!(7),
        json!({"aud": app}),
    ] {
        let error = refused(&authenticator, &emulator.sign_jwt(&with(&claims, "aud", aud.clone()))).await;
        claim_refused(&error, "aud");
    }
    claim_refused(&refused(&authenticator, &emulator.sign_jwt(&without(&claims, &["aud"]))).await, "aud");
}

#[tokio::test]
async fn our_own_marketplace_access_token_is_not_a_webhook_token() {
    // Same tenant, same keys, same issuer — but for the Marketplace API, and from our own app.
    let emulator = emulator().await;
    let config = emulator.config();
    let answer: Value = reqwest::Client::new()
        .post(emulator.token_url_v2())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", config.publisher_app_id.as_str()),
            ("client_secret", config.publisher_client_secret.as_str()),
            ("scope", &format!("{MARKETPLACE_RESOURCE_ID}/.default")),
        ])
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON");
    let token = answer["access_token"].as_str().expect("an access token");
    claim_refused(&refused(&authenticator(&emulator), token).await, "aud");
}

#[tokio::test]
async fn the_tenant_must_be_ours() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let claims = emulator.webhook_claims();
    let tenant = emulator.config().publisher_tenant_id.clone();
    let uri = "http://schemas.microsoft.com/identity/claims/tenantid";
    accepted(&authenticator, &emulator.sign_jwt(&with(&claims, "tid", json!(tenant.to_ascii_uppercase()))))
        .await;
    let by_uri = with(&without(&claims, &["tid"]), uri, json!(tenant));
    accepted(&authenticator, &emulator.sign_jwt(&by_uri)).await;
    let other = "0ther000-0000-4000-8000-00000000e001";
    for wrong in [
        with(&claims, "tid", json!(other)),
        with(&claims, "tid", json!(["72f988bf-0000-4000-8000-00000000e001"])),
        with(&claims, "tid", json!("")),
        with(&claims, uri, json!(other)),
        with(&by_uri, uri, json!(other)),
        without(&claims, &["tid"]),
    ] {
        claim_refused(&refused(&authenticator, &emulator.sign_jwt(&wrong)).await, "tid");
    }
}

#[tokio::test]
async fn the_issuer_must_be_one_of_the_tenants_two() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let claims = emulator.webhook_claims();
    let tenant = emulator.config().publisher_tenant_id.clone();
    let upper = tenant.to_ascii_uppercase();
    let v1 = accepted(
        &authenticator,
        &emulator.sign_jwt(&with(&claims, "iss", json!(format!("https://sts.windows.net/{upper}/")))),
    )
    .await;
    assert_eq!(v1.version, TokenVersion::V1);
    let other = "0ther000-0000-4000-8000-00000000e001";
    for iss in [
        format!("https://sts.windows.net/{other}/"),
        format!("https://login.microsoftonline.com/{other}/v2.0"),
        format!("https://sts.windows.net/{tenant}"),
        format!("https://login.microsoftonline.com/{tenant}/"),
        format!("https://login.microsoftonline.com/{tenant}/v2.0/"),
        format!("{}/{tenant}/v2.0", emulator.authority()),
        "https://login.microsoftonline.com/common/v2.0".to_owned(),
        "https://sts.windows.net/{tenantid}/".to_owned(),
        String::new(),
    ] {
        claim_refused(
            &refused(&authenticator, &emulator.sign_jwt(&with(&claims, "iss", json!(iss)))).await,
            "iss",
        );
    }
    claim_refused(&refused(&authenticator, &emulator.sign_jwt(&with(&claims, "iss", json!(1)))).await, "iss");
    claim_refused(&refused(&authenticator, &emulator.sign_jwt(&without(&claims, &["iss"]))).await, "iss");
}

/// Decision: the version follows `iss`; `ver` is not checked (a genuine token never disagrees
/// with itself, and refusing a genuine ChangePlan webhook would reject the customer's change).
#[tokio::test]
async fn the_version_follows_the_issuer_not_ver() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let v2_with_ver_1 = with(&v2_claims(&emulator), "ver", json!("1.0"));
    assert_eq!(accepted(&authenticator, &emulator.sign_jwt(&v2_with_ver_1)).await.version, TokenVersion::V2);
    let v1_with_ver_2 = with(&emulator.webhook_claims(), "ver", json!("2.0"));
    assert_eq!(accepted(&authenticator, &emulator.sign_jwt(&v1_with_ver_2)).await.version, TokenVersion::V1);
    let no_ver = without(&emulator.webhook_claims(), &["ver"]);
    assert_eq!(accepted(&authenticator, &emulator.sign_jwt(&no_ver)).await.version, TokenVersion::V1);
}

#[tokio::test]
async fn the_caller_must_be_the_marketplace_app() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let v1 = emulator.webhook_claims();
    let v2 = v2_claims(&emulator);
    let app = emulator.config().publisher_app_id.clone();
    let upper = MARKETPLACE_RESOURCE_ID.to_ascii_uppercase();
    // Whichever is present; both when both are.
    for claims in [
        with(&v1, "appid", json!(upper)),
        with(&v1, "azp", json!(MARKETPLACE_RESOURCE_ID)),
        with(&v2, "appid", json!(MARKETPLACE_RESOURCE_ID)),
        without(&with(&v1, "azp", json!(MARKETPLACE_RESOURCE_ID)), &["appid"]),
    ] {
        accepted(&authenticator, &emulator.sign_jwt(&claims)).await;
    }
    let legacy = "62d94f6c-d599-489b-a797-3e10e42fbe22";
    for (claims, name) in [
        (with(&v1, "appid", json!(app)), "appid"),
        (with(&v1, "appid", json!(legacy)), "appid"),
        (with(&v1, "appid", json!(7)), "appid"),
        (with(&v1, "azp", json!(app)), "azp"),
        (with(&v2, "azp", json!(app)), "azp"),
        (with(&v2, "azp", json!("")), "azp"),
        (with(&v2, "appid", json!(app)), "appid"),
        (without(&v1, &["appid"]), "appid"),
        (without(&v2, &["azp"]), "azp"),
        (with(&without(&v2, &["azp"]), "azp", Value::Null), "azp"),
    ] {
        claim_refused(&refused(&authenticator, &emulator.sign_jwt(&claims)).await, name);
    }
}

#[tokio::test]
async fn exp_and_nbf_are_enforced_with_the_leeway() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let claims = emulator.webhook_claims();
    let sign = |claims: Value| emulator.sign_jwt(&claims);
    // Within the 60 s leeway.
    accepted(&authenticator, &sign(with(&claims, "exp", json!(now() - 30)))).await;
    accepted(&authenticator, &sign(with(&claims, "nbf", json!(now() + 30)))).await;
    accepted(&authenticator, &sign(without(&claims, &["nbf"]))).await;
    // Beyond it.
    for exp in [now() - 90, now() - 3600, 0] {
        let error = refused(&authenticator, &sign(with(&claims, "exp", json!(exp)))).await;
        assert!(matches!(error, WebhookAuthError::Expired), "{exp}: {error:?}");
    }
    for nbf in [now() + 90, now() + 3600] {
        let error = refused(&authenticator, &sign(with(&claims, "nbf", json!(nbf)))).await;
        assert!(matches!(error, WebhookAuthError::NotYetValid), "{nbf}: {error:?}");
    }
    // `exp` is required and must be a number; so must `nbf` when present.
    claim_refused(&refused(&authenticator, &sign(without(&claims, &["exp"]))).await, "exp");
    for exp in [json!("4102444800"), json!(-1), json!(null)] {
        claim_refused(&refused(&authenticator, &sign(with(&claims, "exp", exp))).await, "exp");
    }
    claim_refused(&refused(&authenticator, &sign(with(&claims, "nbf", json!("0")))).await, "nbf");
    // (An array leaves `jsonwebtoken`'s claims parser behind: refused as not the claims expected.)
    let error = refused(&authenticator, &sign(with(&claims, "exp", json!([1])))).await;
    assert!(matches!(error, WebhookAuthError::Malformed(_) | WebhookAuthError::Claim { claim: "exp", .. }));

    // Without leeway, 30 s late is too late.
    let strict = WebhookAuthenticator::new(
        reqwest::Client::new(),
        WebhookTokenSettings { leeway: Duration::ZERO, ..settings(&emulator, &emulator.jwks_url()) },
    );
    let late = sign(with(&claims, "exp", json!(now() - 30)));
    assert!(matches!(refused(&strict, &late).await, WebhookAuthError::Expired));
}

// --- The keys ---

#[tokio::test]
async fn keys_that_cannot_be_fetched_are_not_the_callers_fault() {
    let emulator = emulator().await;
    let authenticator = authenticator(&emulator);
    let token = emulator.sign_jwt(&emulator.webhook_claims());
    for fault in [Fault::status(500), Fault::status(404), Fault::DropConnection] {
        emulator.inject(Endpoint::Jwks, fault.clone(), 1).await;
        let error = refused(&authenticator, &token).await;
        assert!(matches!(error, WebhookAuthError::KeysUnavailable(_)), "{fault:?}: {error:?}");
        assert!(!error.is_callers_fault());
    }
    // A failed fetch does not count against the refresh interval: the next webhook gets the keys.
    accepted(&authenticator, &token).await;
}

#[tokio::test]
async fn keys_at_a_closed_port_or_not_a_jwks_are_unavailable() {
    let emulator = emulator().await;
    let token = emulator.sign_jwt(&emulator.webhook_claims());
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("an address")
    };
    let stub = Stub::start().await;
    stub.on("GET", "/html", Canned { status: 200, headers: vec![], body: "<html>sign in</html>".into() });
    stub.on("GET", "/empty-object", Canned::json(200, "{}"));
    for url in
        [format!("http://{closed}/keys"), format!("{}/html", stub.url), format!("{}/empty-object", stub.url)]
    {
        let authenticator = WebhookAuthenticator::new(reqwest::Client::new(), settings(&emulator, &url));
        let error = refused(&authenticator, &token).await;
        assert!(matches!(error, WebhookAuthError::KeysUnavailable(_)), "{url}: {error:?}");
        assert!(!error.is_callers_fault());
    }
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_forged_kids_do_not_refetch() {
    let emulator = emulator().await;
    let stub = Stub::start().await;
    let before = emulator.jwks();
    let mut after = before.clone();
    after["keys"].as_array_mut().expect("keys").push(ROTATED_KEY.jwk());
    // First the tenant's keys, then (and from then on) with the rotated-in key.
    stub.on("GET", JWKS_PATH, Canned::json(200, &before.to_string()));
    stub.on("GET", JWKS_PATH, Canned::json(200, &after.to_string()));
    let interval = Duration::from_secs(2); // wide: a loaded CI machine must not cross it by accident
    let authenticator = WebhookAuthenticator::with_key_refresh_interval(
        reqwest::Client::new(),
        settings(&emulator, &format!("{}{JWKS_PATH}", stub.url)),
        interval,
    );
    let claims = emulator.webhook_claims();
    accepted(&authenticator, &emulator.sign_jwt(&claims)).await;
    assert_eq!(fetches(&stub), 1);
    accepted(&authenticator, &emulator.sign_jwt(&claims)).await;
    assert_eq!(fetches(&stub), 1, "known keys are cached");

    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let rotated = ROTATED_KEY.sign(&claims);
    accepted(&authenticator, &rotated).await;
    assert_eq!(fetches(&stub), 2, "an unknown kid refreshes the keys once");
    accepted(&authenticator, &rotated).await;
    accepted(&authenticator, &emulator.sign_jwt(&claims)).await;
    assert_eq!(fetches(&stub), 2);

    for kid in ["forged-1", "forged-2", "forged-3"] {
        let error = refused(&authenticator, &OTHER_KEY.sign_as(kid, &claims)).await;
        assert!(matches!(error, WebhookAuthError::UnknownKey(_)), "{error:?}");
    }
    assert_eq!(fetches(&stub), 2, "unknown kids within the interval do not refetch");

    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    assert!(matches!(
        refused(&authenticator, &OTHER_KEY.sign(&claims)).await,
        WebhookAuthError::UnknownKey(_)
    ));
    assert_eq!(fetches(&stub), 3, "after the interval, one more refetch");
}

#[tokio::test]
async fn with_the_default_interval_a_second_unknown_kid_does_not_refetch() {
    let emulator = emulator().await;
    let stub = jwks_stub(&emulator).await;
    let authenticator = WebhookAuthenticator::new(
        reqwest::Client::new(),
        settings(&emulator, &format!("{}{JWKS_PATH}", stub.url)),
    );
    let claims = emulator.webhook_claims();
    // A cold start on an unknown kid fetches once.
    assert!(matches!(
        refused(&authenticator, &OTHER_KEY.sign(&claims)).await,
        WebhookAuthError::UnknownKey(_)
    ));
    assert_eq!(fetches(&stub), 1);
    assert!(matches!(
        refused(&authenticator, &ROTATED_KEY.sign(&claims)).await,
        WebhookAuthError::UnknownKey(_)
    ));
    accepted(&authenticator, &emulator.sign_jwt(&claims)).await;
    assert_eq!(fetches(&stub), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_verifications_fetch_the_keys_once() {
    let emulator = emulator().await;
    let stub = jwks_stub(&emulator).await;
    let authenticator = Arc::new(WebhookAuthenticator::new(
        reqwest::Client::new(),
        settings(&emulator, &format!("{}{JWKS_PATH}", stub.url)),
    ));
    let token = emulator.sign_jwt(&emulator.webhook_claims());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let authenticator = Arc::clone(&authenticator);
            let header = bearer(&token);
            tokio::spawn(async move { authenticator.verify(Some(&header)).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("the task ends").expect("accepted");
    }
    assert_eq!(fetches(&stub), 1);
}

#[tokio::test]
async fn during_a_key_outage_waiting_callers_share_one_failed_fetch() {
    let emulator = emulator().await;
    let token = emulator.sign_jwt(&emulator.webhook_claims());
    // Accepts connections and never answers: each fetch runs into its 3-second timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let url = format!("http://{}/keys", silent.local_addr().expect("address"));
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    let authenticator =
        std::sync::Arc::new(WebhookAuthenticator::new(reqwest::Client::new(), settings(&emulator, &url)));
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (authenticator, token) = (authenticator.clone(), token.clone());
            tokio::spawn(async move { authenticator.verify(Some(&format!("Bearer {token}"))).await })
        })
        .collect();
    for call in calls {
        let error = call.await.expect("task").expect_err("no keys");
        assert!(matches!(error, WebhookAuthError::KeysUnavailable(_)), "{error:?}");
    }
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1, "one fetch for ten waiting callers");
    accept.abort();
}

/// `marketplace-emulator webhook-token` (for `sam local invoke` of the `events/webhook/` files)
/// prints a token the webhook accepts.
#[tokio::test]
async fn the_token_the_emulator_prints_for_event_files_is_accepted() {
    let emulator = emulator().await;
    let token =
        marketplace_emulator::ControlClient::new(&emulator.url()).webhook_token().await.expect("a token");
    let caller = authenticator(&emulator).verify(Some(&format!("Bearer {token}"))).await;
    assert!(caller.is_ok(), "{caller:?}");
}

/// Keys older than their maximum age are fetched again: a key the issuer withdrew stops being
/// accepted (before, a cached key was trusted for the life of the process); while the issuer is
/// down, the old keys go on working.
#[tokio::test]
async fn keys_older_than_their_maximum_age_are_fetched_again() {
    use fulfillment::identity::{JwksCache, JwksError};
    let emulator = Emulator::start(EmulatorConfig::default()).await.expect("the emulator starts");
    let kid = emulator.jwks()["keys"][0]["kid"].as_str().expect("a key id").to_owned();
    let stub = jwks_stub(&emulator).await;
    stub.on("GET", JWKS_PATH, Canned::json(500, "{}"));
    stub.on("GET", JWKS_PATH, Canned::json(200, r#"{"keys": []}"#));
    let cache = JwksCache::new(reqwest::Client::new(), format!("{}{JWKS_PATH}", stub.url), Duration::ZERO)
        .with_max_age(Duration::ZERO);

    assert!(cache.key(&kid).await.is_ok(), "fetched");
    assert!(cache.key(&kid).await.is_ok(), "too old, the issuer answers 500: the old key still works");
    let withdrawn = cache.key(&kid).await;
    assert!(matches!(withdrawn, Err(JwksError::UnknownKey(_))), "withdrawn: {:?}", withdrawn.err());
    assert_eq!(fetches(&stub), 3);
}

/// While the issuer is down, old keys are refreshed at most once per `min_refresh`: each request
/// asking again would spend up to 3 s of the webhook's 8 on a fetch that fails.
#[tokio::test]
async fn while_the_issuer_is_down_old_keys_are_served_without_asking_again_on_every_request() {
    use fulfillment::identity::JwksCache;
    let emulator = Emulator::start(EmulatorConfig::default()).await.expect("the emulator starts");
    let kid = emulator.jwks()["keys"][0]["kid"].as_str().expect("a key id").to_owned();
    let stub = jwks_stub(&emulator).await;
    stub.on("GET", JWKS_PATH, Canned::json(500, "{}"));
    stub.on("GET", JWKS_PATH, Canned::json(500, "{}"));
    let cache =
        JwksCache::new(reqwest::Client::new(), format!("{}{JWKS_PATH}", stub.url), Duration::from_secs(60))
            .with_max_age(Duration::ZERO);

    assert!(cache.key(&kid).await.is_ok(), "fetched");
    for n in 0..5 {
        assert!(cache.key(&kid).await.is_ok(), "request {n}: the old key still works");
    }
    assert_eq!(fetches(&stub), 2, "the first fetch, and one failed refresh for five requests");
}
