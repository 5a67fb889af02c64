//! The emulator as Entra ID, the landing page's OpenID Connect provider: discovery, authorize,
//! the authorization-code grant with PKCE, the ID token and its faults.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{WAIT, fast_config, start};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use marketplace_emulator::{
    ControlClient, Emulator, EmulatorConfig, Endpoint, Fault, IdTokenFault, MSA_TENANT_ID, SigninUser,
};
use serde_json::Value;
use url::Url;

const CLIENT_ID: &str = "5e0c7a2b-0000-4000-8000-00000000c0de";
/// A redirect URI with a query of its own, which the code must be added to.
const REDIRECT: &str = "https://app.example/auth/callback?from=landing";
/// A state with characters that need percent-encoding.
const STATE: &str = "token=a+b/c==&x y";

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A PKCE verifier (43+ unreserved characters) and its S256 challenge.
fn pkce() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()));
    (verifier, challenge)
}

/// The parameters of a valid authorize request.
struct Signin {
    params: Vec<(String, String)>,
    verifier: String,
    nonce: String,
}

impl Signin {
    fn new() -> Self {
        let (verifier, challenge) = pkce();
        let nonce = format!("n-{}", uuid::Uuid::new_v4());
        let params = [
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid profile email"),
            ("state", STATE),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("response_mode", "query"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Signin { params, verifier, nonce }
    }

    fn with(mut self, key: &str, value: &str) -> Self {
        self.params.retain(|(k, _)| k != key);
        self.params.push((key.into(), value.into()));
        self
    }

    fn without(mut self, key: &str) -> Self {
        self.params.retain(|(k, _)| k != key);
        self
    }

    fn url(&self, emu: &Emulator, tenant: &str) -> String {
        let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&self.params).finish();
        format!("{}/{tenant}/oauth2/v2.0/authorize?{query}", emu.authority())
    }

    /// GET authorize at `organizations`, as a browser would (redirects not followed).
    async fn send(&self, emu: &Emulator) -> reqwest::Response {
        self.send_at(emu, "organizations").await
    }

    async fn send_at(&self, emu: &Emulator, tenant: &str) -> reqwest::Response {
        http().get(self.url(emu, tenant)).header("accept", "text/html").send().await.unwrap()
    }

    /// Signs in and returns the code from the redirect.
    async fn code(&self, emu: &Emulator) -> String {
        let r = self.send(emu).await;
        assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
        query_of(&location(&r)).remove("code").expect("code")
    }
}

fn location(r: &reqwest::Response) -> Url {
    let value = r.headers().get("location").expect("Location").to_str().unwrap();
    Url::parse(value).expect("absolute Location")
}

fn query_of(url: &Url) -> std::collections::HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// POSTs the authorization-code grant to the `organizations` token endpoint.
async fn redeem(emu: &Emulator, form: &[(&str, &str)]) -> (u16, Value) {
    let url = format!("{}/organizations/oauth2/v2.0/token", emu.authority());
    let r = http().post(url).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn redeem_code(emu: &Emulator, code: &str, verifier: &str) -> (u16, Value) {
    redeem(
        emu,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// Signs in and redeems the code: the ID token and the nonce sent.
async fn id_token(emu: &Emulator) -> (String, String) {
    let signin = Signin::new();
    let code = signin.code(emu).await;
    let (status, body) = redeem_code(emu, &code, &signin.verifier).await;
    assert_eq!(status, 200, "{body}");
    (body["id_token"].as_str().expect("id_token").to_string(), signin.nonce)
}

async fn get_json(url: &str) -> Value {
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

fn part(jwt: &str, index: usize) -> Value {
    let segment = jwt.split('.').nth(index).expect("JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64url")).expect("JSON")
}

/// What a relying party learns from the discovery document of the multi-tenant authority.
struct Discovery {
    issuer_template: String,
    jwks: JwkSet,
}

async fn discovery(emu: &Emulator) -> Discovery {
    let doc = get_json(&format!("{}/.well-known/openid-configuration", emu.signin_authority())).await;
    let jwks = serde_json::from_value(get_json(doc["jwks_uri"].as_str().unwrap()).await).unwrap();
    Discovery { issuer_template: doc["issuer"].as_str().unwrap().to_string(), jwks }
}

/// Verifies an ID token as a careful relying party: RS256 with a key of the JWKS found by `kid`,
/// `iss` = the template with the token's `tid`, `aud` = our client id, `exp`/`nbf` (no leeway),
/// and the nonce.
async fn verify(emu: &Emulator, jwt: &str, nonce: &str) -> Value {
    let d = discovery(emu).await;
    let header = jsonwebtoken::decode_header(jwt).expect("header");
    assert_eq!(header.alg, Algorithm::RS256);
    let key = DecodingKey::from_jwk(d.jwks.find(&header.kid.expect("kid")).expect("kid in JWKS")).unwrap();
    let tid = part(jwt, 1)["tid"].as_str().expect("tid").to_string();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[d.issuer_template.replace("{tenantid}", &tid)]);
    validation.set_audience(&[CLIENT_ID]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
    validation.validate_nbf = true;
    validation.leeway = 0;
    let claims = decode::<Value>(jwt, &key, &validation).expect("ID token verifies").claims;
    assert_eq!(claims["nonce"], nonce);
    claims
}

/// Every defect of an ID token, checked independently of each other.
async fn defects(emu: &Emulator, jwt: &str, nonce: &str) -> BTreeSet<&'static str> {
    let d = discovery(emu).await;
    let mut found = BTreeSet::new();
    let header = part(jwt, 0);
    let claims = part(jwt, 1);
    if header["alg"] != "RS256" {
        found.insert("alg");
    } else {
        let kid = header["kid"].as_str().unwrap_or_default();
        if d.jwks.find(kid).is_none() {
            found.insert("kid");
        }
        // The signature, with the (only) published key whatever the header says.
        let key = DecodingKey::from_jwk(&d.jwks.keys[0]).unwrap();
        let mut signature_only = Validation::new(Algorithm::RS256);
        signature_only.validate_exp = false;
        signature_only.validate_aud = false;
        signature_only.required_spec_claims.clear();
        if let Err(e) = decode::<Value>(jwt, &key, &signature_only) {
            assert!(matches!(e.kind(), ErrorKind::InvalidSignature), "{e:?}");
            found.insert("signature");
        }
    }
    let now = chrono::Utc::now().timestamp();
    let tid = claims["tid"].as_str().unwrap_or_default();
    if claims["iss"] != d.issuer_template.replace("{tenantid}", tid) {
        found.insert("iss");
    }
    if claims["aud"] != CLIENT_ID {
        found.insert("aud");
    }
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        found.insert("exp");
    }
    if claims["nbf"].as_i64().is_none_or(|nbf| nbf > now) {
        found.insert("nbf");
    }
    if claims["nonce"] != nonce {
        found.insert("nonce");
    }
    found
}

#[tokio::test]
async fn the_discovery_documents_should_name_the_issuer_template_for_multi_tenant_authorities() {
    let emu = start(fast_config()).await;
    let authority = emu.authority();
    let user_tid = emu.signin_user().await.tid;
    for segment in ["organizations", "common"] {
        let doc = get_json(&format!("{authority}/{segment}/v2.0/.well-known/openid-configuration")).await;
        assert_eq!(doc["issuer"], format!("{authority}/{{tenantid}}/v2.0"), "{segment}");
        assert_eq!(doc["authorization_endpoint"], format!("{authority}/{segment}/oauth2/v2.0/authorize"));
        assert_eq!(doc["token_endpoint"], format!("{authority}/{segment}/oauth2/v2.0/token"));
        assert_eq!(doc["jwks_uri"], format!("{authority}/{segment}/discovery/v2.0/keys"));
        assert_eq!(doc["id_token_signing_alg_values_supported"], serde_json::json!(["RS256"]));
        assert_eq!(doc["code_challenge_methods_supported"], serde_json::json!(["S256"]));
        assert!(doc["response_types_supported"].as_array().unwrap().contains(&"code".into()));
        assert!(doc["scopes_supported"].as_array().unwrap().contains(&"openid".into()));
        assert_eq!(get_json(doc["jwks_uri"].as_str().unwrap()).await, emu.jwks());
    }
    assert_eq!(
        emu.signin_authority(),
        format!("{authority}/organizations/v2.0"),
        "the landing page's authority"
    );
    let tenant = get_json(&format!("{authority}/{user_tid}/v2.0/.well-known/openid-configuration")).await;
    assert_eq!(tenant["issuer"], format!("{authority}/{user_tid}/v2.0"));
    assert_eq!(tenant["authorization_endpoint"], format!("{authority}/{user_tid}/oauth2/v2.0/authorize"));
    let consumers = get_json(&format!("{authority}/consumers/v2.0/.well-known/openid-configuration")).await;
    assert_eq!(consumers["issuer"], format!("{authority}/{MSA_TENANT_ID}/v2.0"));
    let publisher_tid = &emu.config().publisher_tenant_id;
    let publisher =
        get_json(&format!("{authority}/{publisher_tid}/v2.0/.well-known/openid-configuration")).await;
    assert_eq!(
        publisher["issuer"],
        format!("https://login.microsoftonline.com/{publisher_tid}/v2.0"),
        "the publisher tenant keeps the issuer of the webhook tokens"
    );
    let unknown = http()
        .get(format!(
            "{authority}/0b0b0b0b-0000-4000-8000-000000000000/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    assert_eq!(unknown.json::<Value>().await.unwrap()["error"], "invalid_tenant");
}

#[tokio::test]
async fn a_valid_sign_in_should_redirect_with_code_and_state_and_redeem_for_a_verifiable_id_token() {
    let emu = start(fast_config()).await;
    let user = emu.signin_user().await;
    assert_ne!(user.tid, emu.config().publisher_tenant_id, "the buyer is in a customer tenant");
    let signin =
        Signin::new().with("login_hint", "someone@fabrikam.example").with("prompt", "select_account");

    let r = signin.send(&emu).await;
    assert_eq!(r.status(), 302);
    let to = location(&r);
    assert_eq!((to.scheme(), to.host_str(), to.path()), ("https", Some("app.example"), "/auth/callback"));
    let query = query_of(&to);
    assert_eq!(query["from"], "landing", "the redirect URI's own query is kept");
    assert_eq!(query["state"], STATE, "state comes back exactly");
    assert!(to.query().unwrap().contains("state=token%3Da%2Bb%2Fc%3D%3D%26x+y"), "{to}");
    let code = query["code"].clone();
    assert!(code.len() > 60 && query.contains_key("session_state"));
    assert!(!emu.signins().await[0].redeemed);

    let (status, body) = redeem_code(&emu, &code, &signin.verifier).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert!(body["scope"].as_str().unwrap().split(' ').any(|s| s == "openid"));
    assert!(body["access_token"].as_str().unwrap().split('.').count() == 3);
    let jwt = body["id_token"].as_str().unwrap();

    let claims = verify(&emu, jwt, &signin.nonce).await;
    assert_eq!(claims["iss"], format!("{}/{}/v2.0", emu.authority(), user.tid));
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["tid"], user.tid);
    assert_eq!(claims["oid"], user.oid);
    assert_eq!(claims["name"], user.name);
    assert_eq!(claims["preferred_username"], user.preferred_username);
    assert_eq!(claims["email"], user.email);
    assert_eq!(claims["ver"], "2.0");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    let sub = claims["sub"].as_str().unwrap();
    assert!(sub.len() == 43 && sub != user.oid, "a pairwise subject: {sub}");
    assert_eq!(part(jwt, 0)["kid"], emu.kid());

    let record = emu.wait_signin(WAIT, |s| s.redeemed).await.unwrap();
    assert_eq!(record.tenant, "organizations");
    assert_eq!(record.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(record.redirect_uri.as_deref(), Some(REDIRECT));
    assert_eq!(record.state.as_deref(), Some(STATE));
    assert_eq!(record.nonce.as_deref(), Some(signin.nonce.as_str()));
    assert_eq!(record.code_challenge_method.as_deref(), Some("S256"));
    assert_eq!(record.login_hint.as_deref(), Some("someone@fabrikam.example"));
    assert_eq!(record.prompt.as_deref(), Some("select_account"));
    assert_eq!(record.user.as_ref(), Some(&user));
    assert_eq!(record.id_token.as_deref(), Some(jwt));
    assert!(record.error.is_none() && record.redeem_error.is_none());
    assert_eq!(emu.tokens_issued(), 0, "sign-ins are not client-credentials tokens");
}

#[tokio::test]
async fn without_the_profile_and_email_scopes_the_id_token_should_carry_no_profile_claims() {
    let emu = start(fast_config()).await;
    let signin = Signin::new().with("scope", "openid");
    let code = signin.code(&emu).await;
    let (status, body) = redeem_code(&emu, &code, &signin.verifier).await;
    assert_eq!(status, 200, "{body}");
    let claims = verify(&emu, body["id_token"].as_str().unwrap(), &signin.nonce).await;
    for absent in ["name", "preferred_username", "email", "oid"] {
        assert!(claims.get(absent).is_none(), "{absent} needs the profile/email scope");
    }
    assert_eq!(claims["tid"], emu.signin_user().await.tid);
}

#[tokio::test]
async fn when_the_code_verifier_does_not_match_the_challenge_the_code_should_be_refused_and_used_up() {
    let emu = start(fast_config()).await;
    let signin = Signin::new();
    let code = signin.code(&emu).await;
    let (other_verifier, _) = pkce();
    let (status, body) = redeem_code(&emu, &code, &other_verifier).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS50148:"), "{body}");
    assert_eq!(body["error_codes"], serde_json::json!([50148]));
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field}");
    }
    let (status, body) = redeem_code(&emu, &code, &signin.verifier).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "one attempt per code");
    let record = &emu.signins().await[0];
    assert!(!record.redeemed);
    assert!(record.redeem_error.as_deref().unwrap().starts_with("invalid_grant: AADSTS54005"));
}

#[tokio::test]
async fn when_a_code_is_redeemed_twice_the_second_time_should_be_invalid_grant() {
    let emu = start(fast_config()).await;
    let signin = Signin::new();
    let code = signin.code(&emu).await;
    assert_eq!(redeem_code(&emu, &code, &signin.verifier).await.0, 200);
    let (status, body) = redeem_code(&emu, &code, &signin.verifier).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS54005:"), "{body}");
    assert!(emu.signins().await[0].redeemed, "the first redemption stands");
    let (status, body) = redeem_code(&emu, "1.Anot-a-code", &signin.verifier).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
}

#[tokio::test]
async fn when_the_redirect_uri_differs_from_the_authorize_request_the_code_should_not_redeem() {
    let emu = start(fast_config()).await;
    let signin = Signin::new();
    let code = signin.code(&emu).await;
    let (status, body) = redeem(
        &emu,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("code", &code),
            ("redirect_uri", "https://app.example/auth/callback"),
            ("code_verifier", &signin.verifier),
        ],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS500112:"), "{body}");
}

#[tokio::test]
async fn when_the_code_was_issued_to_another_client_it_should_not_redeem() {
    let emu = start(fast_config()).await;
    let signin = Signin::new();
    let code = signin.code(&emu).await;
    let (status, body) = redeem(
        &emu,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "00000000-0000-4000-8000-0000000000ff"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &signin.verifier),
        ],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

#[tokio::test]
async fn when_the_code_has_expired_it_should_not_redeem() {
    let emu = start(EmulatorConfig { authorization_code_ttl: Duration::ZERO, ..fast_config() }).await;
    let signin = Signin::new();
    let code = signin.code(&emu).await;
    let (status, body) = redeem_code(&emu, &code, &signin.verifier).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS70008:"), "{body}");
}

#[tokio::test]
async fn invalid_authorize_requests_should_be_answered_400_without_a_redirect_and_recorded() {
    let emu = start(EmulatorConfig {
        signin_client_id: Some(CLIENT_ID.into()),
        signin_redirect_uris: vec![REDIRECT.into()],
        ..fast_config()
    })
    .await;
    let cases: Vec<(&str, Signin, &str, &str)> = vec![
        ("no code_challenge", Signin::new().without("code_challenge"), "invalid_request", "900144"),
        ("plain PKCE", Signin::new().with("code_challenge_method", "plain"), "invalid_request", "90023"),
        ("short challenge", Signin::new().with("code_challenge", "abc"), "invalid_request", "501491"),
        (
            "response_type=token",
            Signin::new().with("response_type", "token"),
            "unsupported_response_type",
            "700051",
        ),
        (
            "relative redirect_uri",
            Signin::new().with("redirect_uri", "/auth/callback"),
            "invalid_request",
            "90102",
        ),
        (
            "redirect_uri with a fragment",
            Signin::new().with("redirect_uri", "https://app.example/cb#x"),
            "invalid_request",
            "90102",
        ),
        (
            "unregistered redirect_uri",
            Signin::new().with("redirect_uri", "https://evil.example/cb"),
            "invalid_request",
            "50011",
        ),
        ("no openid scope", Signin::new().with("scope", "profile email"), "invalid_scope", "70011"),
        ("no client_id", Signin::new().without("client_id"), "invalid_request", "900144"),
        (
            "another client_id",
            Signin::new().with("client_id", "00000000-0000-4000-8000-0000000000ff"),
            "unauthorized_client",
            "700016",
        ),
        ("bad prompt", Signin::new().with("prompt", "always"), "invalid_request", "90023"),
        ("bad response_mode", Signin::new().with("response_mode", "web_message"), "invalid_request", "90023"),
    ];
    let count = cases.len();
    for (name, signin, error, code) in cases {
        let r = signin.send(&emu).await;
        assert_eq!(r.status(), 400, "{name}");
        assert!(r.headers().get("location").is_none(), "{name}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{name}");
        let page = r.text().await.unwrap();
        assert!(page.contains(&format!("AADSTS{code}:")) && page.contains(error), "{name}: {page}");
    }
    let json = http()
        .get(Signin::new().without("code_challenge").url(&emu, "organizations"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 400);
    let body: Value = json.json().await.unwrap();
    assert_eq!(
        (body["error"].as_str(), body["error_codes"][0].as_u64()),
        (Some("invalid_request"), Some(900144))
    );
    let unknown_tenant = Signin::new().send_at(&emu, "0b0b0b0b-0000-4000-8000-000000000000").await;
    assert_eq!(unknown_tenant.status(), 400);
    assert!(unknown_tenant.text().await.unwrap().contains("AADSTS90002:"));

    let signins = emu.signins().await;
    assert_eq!(signins.len(), count + 2);
    assert!(signins.iter().all(|s| s.error.is_some() && s.user.is_none() && !s.redeemed));
    assert!(signins[0].error.as_deref().unwrap().starts_with("invalid_request: AADSTS900144:"));
    assert_eq!(emu.signins().await[3].response_type.as_deref(), Some("token"));
}

#[tokio::test]
async fn each_id_token_fault_should_produce_exactly_the_defect_it_names() {
    let emu = start(fast_config()).await;
    let (clean, nonce) = id_token(&emu).await;
    assert_eq!(defects(&emu, &clean, &nonce).await, BTreeSet::new(), "a clean token has none");
    let cases = [
        (IdTokenFault::WrongNonce, "nonce"),
        (IdTokenFault::WrongAudience, "aud"),
        (IdTokenFault::WrongIssuer, "iss"),
        (IdTokenFault::ForeignIssuer, "iss"),
        (IdTokenFault::Expired, "exp"),
        (IdTokenFault::NotYetValid, "nbf"),
        (IdTokenFault::UnpublishedKey, "signature"),
        (IdTokenFault::AlgNone, "alg"),
        (IdTokenFault::UnknownKid, "kid"),
    ];
    for (fault, defect) in cases {
        emu.set_id_token_fault(Some(fault)).await;
        let (jwt, nonce) = id_token(&emu).await;
        assert_eq!(defects(&emu, &jwt, &nonce).await, BTreeSet::from([defect]), "{fault:?}");
        let claims = part(&jwt, 1);
        assert_eq!(claims["tid"], emu.signin_user().await.tid, "{fault:?}: tid stays");
    }

    // The details a relying party's checks see.
    emu.set_id_token_fault(Some(IdTokenFault::UnpublishedKey)).await;
    let (jwt, _) = id_token(&emu).await;
    assert_eq!(part(&jwt, 0)["kid"], emu.kid(), "the published kid, another key's signature");
    emu.set_id_token_fault(Some(IdTokenFault::AlgNone)).await;
    let (jwt, _) = id_token(&emu).await;
    assert!(jwt.ends_with('.') && part(&jwt, 0)["alg"] == "none", "unsigned: {jwt}");
    emu.set_id_token_fault(Some(IdTokenFault::NotYetValid)).await;
    let (jwt, _) = id_token(&emu).await;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[CLIENT_ID]);
    validation.validate_nbf = true;
    let key = DecodingKey::from_jwk(&discovery(&emu).await.jwks.keys[0]).unwrap();
    let err = decode::<Value>(&jwt, &key, &validation).expect_err("not yet valid");
    assert!(matches!(err.kind(), ErrorKind::ImmatureSignature), "{err:?}");

    emu.set_id_token_fault(None).await;
    let (jwt, nonce) = id_token(&emu).await;
    verify(&emu, &jwt, &nonce).await;
    emu.set_id_token_fault(Some(IdTokenFault::Expired)).await;
    emu.clear_faults().await;
    let (jwt, nonce) = id_token(&emu).await;
    verify(&emu, &jwt, &nonce).await;
}

#[tokio::test]
async fn the_configured_client_id_and_secret_should_be_enforced_at_the_token_endpoint() {
    let emu = start(EmulatorConfig {
        signin_client_id: Some(CLIENT_ID.into()),
        signin_client_secret: Some("landing-secret".into()),
        ..fast_config()
    })
    .await;
    let emu = &emu;
    let signin = Signin::new();
    let code = signin.code(emu).await;
    let form = |secret: Option<&'static str>| {
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("client_id", CLIENT_ID.to_string()),
            ("code", code.clone()),
            ("redirect_uri", REDIRECT.to_string()),
            ("code_verifier", signin.verifier.clone()),
        ];
        if let Some(s) = secret {
            form.push(("client_secret", s.to_string()));
        }
        form
    };
    let send = |form: Vec<(&'static str, String)>| async move {
        let url = format!("{}/organizations/oauth2/v2.0/token", emu.authority());
        let r = http().post(url).form(&form).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (status, body) = send(form(Some("wrong"))).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    let (status, body) = send(form(None)).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    let (status, body) = send(form(Some("landing-secret"))).await;
    assert_eq!(status, 200, "a bad secret does not use the code up: {body}");
}

#[tokio::test]
async fn only_the_v2_token_endpoint_should_redeem_codes_and_other_grants_are_unsupported() {
    let emu = start(fast_config()).await;
    let signin = Signin::new();
    let code = signin.code(&emu).await;
    let tid = emu.signin_user().await.tid;
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", CLIENT_ID),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", signin.verifier.as_str()),
    ];
    let v1 = http().post(format!("{}/organizations/oauth2/token", emu.authority())).form(&form).send().await;
    let v1: Value = v1.unwrap().json().await.unwrap();
    assert_eq!(v1["error"], "unsupported_grant_type");
    let (status, body) = redeem(&emu, &[("grant_type", "password"), ("client_id", CLIENT_ID)]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("unsupported_grant_type")));
    // The code redeems at the user's own tenant too.
    let r = http().post(format!("{}/{tid}/oauth2/v2.0/token", emu.authority())).form(&form).send().await;
    assert_eq!(r.unwrap().status(), 200);
}

#[tokio::test]
async fn form_post_and_fragment_response_modes_should_return_the_code_as_entra_does() {
    let emu = start(fast_config()).await;
    let signin = Signin::new().with("response_mode", "form_post");
    let r = signin.send(&emu).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("action=\"https://app.example/auth/callback?from=landing\""), "{page}");
    assert!(page.contains("name=\"code\"") && page.contains("document.forms[0].submit()"));
    assert!(page.contains("value=\"token=a+b/c==&amp;x y\""), "state is HTML-escaped: {page}");

    let signin = Signin::new().with("response_mode", "fragment");
    let r = signin.send(&emu).await;
    assert_eq!(r.status(), 302);
    let to = location(&r);
    assert_eq!(to.query(), Some("from=landing"));
    let fragment: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(to.fragment().unwrap().as_bytes()).into_owned().collect();
    assert_eq!(fragment["state"], STATE);
    let (status, _) = redeem_code(&emu, &fragment["code"], &signin.verifier).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_signed_in_user_and_tenant_rules_should_follow_set_signin_user() {
    let emu = start(fast_config()).await;
    let contoso = SigninUser {
        name: "Megan Bowen".into(),
        email: String::new(),
        preferred_username: "megan@contoso-buyer.onmicrosoft.com".into(),
        oid: "11111111-2222-4333-8444-555555555555".into(),
        tid: "c0c0c0c0-0000-4000-8000-000000000001".into(),
    };
    emu.set_signin_user(contoso.clone()).await;
    let (jwt, nonce) = id_token(&emu).await;
    let claims = verify(&emu, &jwt, &nonce).await;
    assert_eq!(
        (claims["tid"].as_str(), claims["name"].as_str()),
        (Some(contoso.tid.as_str()), Some("Megan Bowen"))
    );
    assert!(claims.get("email").is_none(), "a user without e-mail gets no email claim");
    let doc =
        get_json(&format!("{}/{}/v2.0/.well-known/openid-configuration", emu.authority(), contoso.tid)).await;
    assert_eq!(doc["issuer"], format!("{}/{}/v2.0", emu.authority(), contoso.tid));

    assert_eq!(Signin::new().send_at(&emu, &contoso.tid).await.status(), 302, "its own tenant");
    let publisher_tid = emu.config().publisher_tenant_id.clone();
    let other = Signin::new().send_at(&emu, &publisher_tid).await;
    assert_eq!(other.status(), 400, "another tenant");
    assert!(other.text().await.unwrap().contains("AADSTS50020:"));

    let personal = SigninUser { tid: MSA_TENANT_ID.into(), ..contoso };
    let control = ControlClient::new(&emu.url());
    control.set_signin_user(&personal).await.unwrap();
    assert_eq!(Signin::new().send_at(&emu, "organizations").await.status(), 400, "no MSA at organizations");
    assert_eq!(Signin::new().send_at(&emu, "consumers").await.status(), 302);
    assert_eq!(Signin::new().send_at(&emu, "common").await.status(), 302);
    let signins = control.signins().await.unwrap();
    assert_eq!(signins.len(), 6);
    assert_eq!(signins.last().unwrap().user.as_ref().map(|u| u.tid.as_str()), Some(MSA_TENANT_ID));

    control.set_id_token_fault(Some(IdTokenFault::WrongAudience)).await.unwrap();
    control.set_signin_user(&SigninUser::default()).await.unwrap();
    let (jwt, _) = id_token(&emu).await;
    assert_ne!(part(&jwt, 1)["aud"], CLIENT_ID);
}

#[tokio::test]
async fn an_injected_authorize_fault_should_answer_in_place_of_one_sign_in() {
    let emu = start(fast_config()).await;
    emu.inject(Endpoint::Authorize, Fault::status(503), 1).await;
    assert_eq!(Signin::new().send(&emu).await.status(), 503);
    assert_eq!(Signin::new().send(&emu).await.status(), 302);
    assert_eq!(emu.signins().await.len(), 1, "the faulted request is not a sign-in");
}

#[tokio::test]
async fn logout_should_redirect_to_the_post_logout_redirect_uri() {
    let emu = start(fast_config()).await;
    let url = format!(
        "{}/organizations/oauth2/v2.0/logout?post_logout_redirect_uri={}",
        emu.authority(),
        url::form_urlencoded::byte_serialize(b"https://app.example/signed-out").collect::<String>()
    );
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r).as_str(), "https://app.example/signed-out");
    let r = http().get(format!("{}/organizations/oauth2/v2.0/logout", emu.authority())).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
