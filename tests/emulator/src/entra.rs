//! An Entra-like authority under `/entra`: client-credentials token endpoints (v1, v2), JWKS and
//! OpenID configuration documents, and (in [`crate::signin`]) the OpenID Connect sign-in of the
//! landing page: authorize, the authorization-code grant, logout.
//!
//! Tenant segments: the publisher's tenant, every tenant a sign-in user has had, the MSA tenant,
//! and `common`, `organizations`, `consumers`; any other answers AADSTS90002.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Value, json};

use crate::config::{MARKETPLACE_RESOURCE_ID, MSA_TENANT_ID};
use crate::faults::CredentialFault;
use crate::faults::Endpoint;
use crate::model::guid;
use crate::server::{ConnKill, FaultOutcome, apply_fault, empty_response, json_response};
use crate::signin;
use crate::state::Shared;

enum Route {
    Token { v2: bool },
    Jwks,
    OpenId { v2: bool },
    Authorize,
    Logout,
}

/// The tenant segment of an authority path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TenantPath {
    /// `common`: work/school and personal accounts.
    Common,
    /// `organizations`: work/school accounts only.
    Organizations,
    /// `consumers`: personal Microsoft accounts only.
    Consumers,
    /// A tenant id.
    Id(String),
}

impl TenantPath {
    /// Whether a user of tenant `tid` signs in through this authority.
    pub(crate) fn admits(&self, tid: &str) -> bool {
        let msa = tid.eq_ignore_ascii_case(MSA_TENANT_ID);
        match self {
            Self::Common => true,
            Self::Organizations => !msa,
            Self::Consumers => msa,
            Self::Id(id) => id.eq_ignore_ascii_case(tid),
        }
    }

    /// The segment as used in URLs.
    pub(crate) fn segment(&self) -> &str {
        match self {
            Self::Common => "common",
            Self::Organizations => "organizations",
            Self::Consumers => "consumers",
            Self::Id(id) => id,
        }
    }
}

/// Resolves a tenant segment; `None` for a tenant that does not exist here.
pub(crate) fn tenant_path(shared: &Shared, segment: &str) -> Option<TenantPath> {
    let lower = segment.to_ascii_lowercase();
    match lower.as_str() {
        "common" => Some(TenantPath::Common),
        "organizations" => Some(TenantPath::Organizations),
        "consumers" => Some(TenantPath::Consumers),
        _ if lower.eq_ignore_ascii_case(&shared.config.publisher_tenant_id) => {
            Some(TenantPath::Id(shared.config.publisher_tenant_id.clone()))
        }
        _ if lower == MSA_TENANT_ID || shared.lock().signin_tenants.contains(&lower) => {
            Some(TenantPath::Id(lower))
        }
        _ => None,
    }
}

fn parse(method: &Method, segments: &[&str]) -> Option<Route> {
    match (method.clone(), segments) {
        (Method::POST, [_, "oauth2", "token"]) => Some(Route::Token { v2: false }),
        (Method::POST, [_, "oauth2", "v2.0", "token"]) => Some(Route::Token { v2: true }),
        (Method::GET, [_, "discovery", "keys"] | [_, "discovery", "v2.0", "keys"]) => Some(Route::Jwks),
        (Method::GET, [_, ".well-known", "openid-configuration"]) => Some(Route::OpenId { v2: false }),
        (Method::GET, [_, "v2.0", ".well-known", "openid-configuration"]) => Some(Route::OpenId { v2: true }),
        (Method::GET, [_, "oauth2", "v2.0", "authorize"]) => Some(Route::Authorize),
        (Method::GET, [_, "oauth2", "v2.0", "logout"]) => Some(Route::Logout),
        _ => None,
    }
}

/// Entry point of every request under `/entra`.
pub(crate) async fn entry(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let kill = req.extensions().get::<ConnectInfo<ConnKill>>().map(|c| c.0.clone());
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/entra/").unwrap_or_default().to_string();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let Some(route) = parse(&parts.method, &segments) else { return empty_response(StatusCode::NOT_FOUND) };
    let tenant = segments.first().copied().unwrap_or_default();
    let endpoint = match route {
        Route::Token { .. } => Some(Endpoint::Token),
        Route::Jwks => Some(Endpoint::Jwks),
        Route::Authorize => Some(Endpoint::Authorize),
        Route::OpenId { .. } | Route::Logout => None,
    };
    match apply_fault(&shared, endpoint, kill.as_ref()).await {
        FaultOutcome::Dropped => return empty_response(StatusCode::INTERNAL_SERVER_ERROR),
        FaultOutcome::Respond(response) => return response,
        FaultOutcome::Proceed => {}
    }
    match route {
        Route::Token { v2 } => {
            let Ok(bytes) = axum::body::to_bytes(body, 1024 * 1024).await else {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body could not be read.",
                );
            };
            token(&shared, tenant, v2, &bytes)
        }
        Route::Jwks => {
            if tenant_path(&shared, tenant).is_none() {
                return unknown_tenant(tenant);
            }
            json_response(StatusCode::OK, &shared.signer.jwks())
        }
        Route::OpenId { v2 } => match tenant_path(&shared, tenant) {
            Some(path) => json_response(StatusCode::OK, &openid_configuration(&shared, &path, v2)),
            None => unknown_tenant(tenant),
        },
        Route::Authorize => {
            signin::authorize(&shared, tenant, parts.uri.query().unwrap_or_default(), &parts.headers)
        }
        Route::Logout => signin::logout(parts.uri.query().unwrap_or_default()),
    }
}

fn unknown_tenant(tenant: &str) -> Response {
    entra_error(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90002,
        &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID."),
    )
}

/// A fresh trace id, correlation id and timestamp for an error.
pub(crate) fn error_parts() -> (String, String, String) {
    (guid(), guid(), Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string())
}

/// Entra's error body.
pub(crate) fn entra_error(status: StatusCode, error: &str, code: u32, message: &str) -> Response {
    let (trace_id, correlation_id, timestamp) = error_parts();
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

/// This emulator's token endpoint for `tenant` (the audience of a client assertion).
fn token_url(shared: &Shared, tenant: &str, v2: bool) -> String {
    let version = if v2 { "/v2.0" } else { "" };
    format!("{}/{tenant}/oauth2{version}/token", authority(shared))
}

/// Checks a client assertion as Entra does: a JWT (PS256) naming a certificate registered on the
/// app by its SHA-256 thumbprint, signed by that certificate's key, for this token endpoint, by
/// and about the app itself, and valid now.
#[allow(clippy::result_large_err, reason = "the error is the answer")]
fn check_assertion(
    shared: &Shared,
    client_id: &str,
    kind: &str,
    assertion: &str,
    audience: &str,
) -> Result<(), Response> {
    use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let refuse =
        |code: u32, message: &str| entra_error(StatusCode::UNAUTHORIZED, "invalid_client", code, message);
    if kind != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
        return Err(refuse(
            7000216,
            "'client_assertion_type' must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
        ));
    }
    let parts: Vec<&str> = assertion.split('.').collect();
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
    let json = |part: &str| decode(part).and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    let [header, claims, signature] = parts.as_slice() else {
        return Err(refuse(50027, "The client assertion is not a valid JWT."));
    };
    let (Some(head), Some(body), Some(signature)) = (json(header), json(claims), decode(signature)) else {
        return Err(refuse(50027, "The client assertion is not a valid JWT."));
    };
    if head["alg"] != "PS256" {
        return Err(refuse(5002738, "The client assertion must be signed with PS256."));
    }
    let thumbprint = head["x5t#S256"].as_str().unwrap_or_default();
    let Some(key) =
        shared.config.publisher_certificates.iter().find_map(|pem| registered_key(pem, thumbprint))
    else {
        return Err(refuse(
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on application.",
        ));
    };
    let signed = format!("{header}.{claims}");
    if UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, &key).verify(signed.as_bytes(), &signature).is_err()
    {
        return Err(refuse(700027, "Client assertion failed signature validation."));
    }
    if body["aud"] != audience {
        return Err(refuse(
            700021,
            &format!("Client assertion audience claim does not match Realm issuer; expected {audience}."),
        ));
    }
    if body["iss"] != client_id || body["sub"] != client_id {
        return Err(refuse(700023, "Client assertion iss and sub must be the application id."));
    }
    let now = Utc::now().timestamp();
    let (nbf, exp) = (body["nbf"].as_i64().unwrap_or(0), body["exp"].as_i64().unwrap_or(0));
    if exp <= now || nbf > now + 300 {
        return Err(refuse(700024, "Client assertion is not within its valid time range."));
    }
    Ok(())
}

/// The RSA public key (PKCS#1) of a registered certificate whose SHA-256 thumbprint is `thumbprint`.
fn registered_key(pem: &str, thumbprint: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use simple_asn1::ASN1Block;

    let der = pem::parse(pem).ok()?.into_contents();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    if URL_SAFE_NO_PAD.encode(digest.as_ref()) != thumbprint {
        return None;
    }
    // Certificate ::= SEQUENCE { tbsCertificate, ... }; the subject public key info is the
    // SEQUENCE { SEQUENCE { algorithm OID, ... }, BIT STRING } among the TBS certificate's fields.
    let blocks = simple_asn1::from_der(&der).ok()?;
    let ASN1Block::Sequence(_, certificate) = blocks.first()? else { return None };
    let ASN1Block::Sequence(_, tbs) = certificate.first()? else { return None };
    tbs.iter().find_map(|field| match field {
        ASN1Block::Sequence(_, parts) => match parts.as_slice() {
            [ASN1Block::Sequence(_, algorithm), ASN1Block::BitString(_, _, key)]
                if matches!(algorithm.first(), Some(ASN1Block::ObjectIdentifier(..))) =>
            {
                Some(key.clone())
            }
            _ => None,
        },
        _ => None,
    })
}

/// The authority URL of this emulator: `{base}/entra`.
fn authority(shared: &Shared) -> String {
    format!("{}/entra", shared.base_url)
}

/// The OpenID configuration of a tenant segment. `issuer`: at `common`/`organizations` the template
/// `{authority}/{tenantid}/v2.0` (v1: `https://sts.windows.net/{tenantid}/`), at `consumers` the MSA
/// tenant's, at a tenant id `{authority}/{tid}/v2.0` — except the publisher's tenant, which keeps the
/// issuer of the (webhook and access) tokens Microsoft issues there,
/// `https://login.microsoftonline.com/{tid}/v2.0` (v1: `https://sts.windows.net/{tid}/`).
fn openid_configuration(shared: &Shared, tenant: &TenantPath, v2: bool) -> Value {
    let authority = authority(shared);
    let segment = tenant.segment();
    let issuer_tenant = match tenant {
        TenantPath::Common | TenantPath::Organizations => "{tenantid}",
        TenantPath::Consumers => MSA_TENANT_ID,
        TenantPath::Id(id) => id.as_str(),
    };
    let publisher =
        matches!(tenant, TenantPath::Id(id) if id.eq_ignore_ascii_case(&shared.config.publisher_tenant_id));
    let region = matches!(tenant, TenantPath::Id(_)).then_some("NA");
    if !v2 {
        return json!({
            "token_endpoint": format!("{authority}/{segment}/oauth2/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{authority}/{segment}/discovery/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
            "scopes_supported": ["openid"],
            "issuer": format!("https://sts.windows.net/{issuer_tenant}/"),
            "authorization_endpoint": format!("{authority}/{segment}/oauth2/authorize"),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "ver", "appid", "azp"],
            "tenant_region_scope": region,
        });
    }
    let issuer = if publisher {
        format!("https://login.microsoftonline.com/{issuer_tenant}/v2.0")
    } else {
        format!("{authority}/{issuer_tenant}/v2.0")
    };
    json!({
        "token_endpoint": format!("{authority}/{segment}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{authority}/{segment}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "code_challenge_methods_supported": ["S256"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{authority}/{segment}/oauth2/v2.0/authorize"),
        "end_session_endpoint": format!("{authority}/{segment}/oauth2/v2.0/logout"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "nbf", "nonce", "tid", "oid", "ver", "name",
            "preferred_username", "email", "sid", "aio", "uti", "azp", "appid",
        ],
        "tenant_region_scope": region,
        "cloud_instance_name": "microsoftonline.com",
        "msgraph_host": "graph.microsoft.com",
    })
}

/// The token endpoint: dispatches on `grant_type`.
fn token(shared: &Shared, tenant: &str, v2: bool, body: &[u8]) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let Some(path) = tenant_path(shared, tenant) else { return unknown_tenant(tenant) };
    match form.iter().find(|(k, _)| k == "grant_type").map(|(_, v)| v.as_str()) {
        Some("client_credentials") => client_credentials(shared, tenant, v2, &form),
        Some("authorization_code") if v2 => signin::redeem(shared, &path, &form),
        Some(other) => entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
        ),
        None => entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        ),
    }
}

/// Client-credentials grant for the Marketplace resource (publisher tenant only).
fn client_credentials(shared: &Shared, tenant: &str, v2: bool, form: &[(String, String)]) -> Response {
    let cfg = &shared.config;
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if !tenant.eq_ignore_ascii_case(&cfg.publisher_tenant_id) {
        return unknown_tenant(tenant);
    }
    let fault = shared.lock().credential_fault;
    if let Some(fault) = fault {
        let client_id = field("client_id").unwrap_or_default();
        let (status, error, code, message) = match fault {
            CredentialFault::NoServicePrincipal => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000229,
                format!("The client application {client_id} is missing service principal in the tenant {tenant}."),
            ),
            CredentialFault::WrongSecret => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.".to_owned(),
            ),
            CredentialFault::ExpiredSecret => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000222,
                format!("The provided client secret keys for app '{client_id}' are expired."),
            ),
            CredentialFault::UnknownApp => (
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
            ),
        };
        return entra_error(status, error, code, &message);
    }
    let Some(client_id) = field("client_id") else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    if !client_id.eq_ignore_ascii_case(&cfg.publisher_app_id) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    }
    match field("client_secret") {
        None if field("client_assertion").is_some() => {
            let assertion = field("client_assertion").unwrap_or_default();
            let kind = field("client_assertion_type").unwrap_or_default();
            let audience = token_url(shared, tenant, v2);
            if let Err(response) = check_assertion(shared, &client_id, &kind, &assertion, &audience) {
                return response;
            }
        }
        None => {
            return entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            );
        }
        Some(secret) if secret != cfg.publisher_client_secret => {
            return entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            );
        }
        Some(_) => {}
    }
    if v2 {
        let scope = field("scope").unwrap_or_default();
        let wanted = format!("{MARKETPLACE_RESOURCE_ID}/.default");
        if !scope.split_whitespace().any(|s| s.eq_ignore_ascii_case(&wanted)) {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope '{scope}' is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            );
        }
    } else {
        let resource = field("resource").unwrap_or_default();
        if !resource.eq_ignore_ascii_case(MARKETPLACE_RESOURCE_ID) {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_resource",
                500011,
                &format!(
                    "The resource principal named '{resource}' was not found in the tenant named '{tenant}'."
                ),
            );
        }
    }
    let now = Utc::now();
    let ttl = i64::try_from(cfg.access_token_ttl.as_secs()).unwrap_or(3600);
    let tid = &cfg.publisher_tenant_id;
    let (iss, ver, app_claim) = if v2 {
        (format!("https://login.microsoftonline.com/{tid}/v2.0"), "2.0", "azp")
    } else {
        (format!("https://sts.windows.net/{tid}/"), "1.0", "appid")
    };
    let claims = json!({
        "aud": MARKETPLACE_RESOURCE_ID,
        "iss": iss,
        "iat": now.timestamp(),
        "nbf": now.timestamp(),
        "exp": now.timestamp() + ttl,
        app_claim: cfg.publisher_app_id,
        "idtyp": "app",
        "oid": guid(),
        "sub": guid(),
        "tid": tid,
        "uti": guid().replace('-', ""),
        "ver": ver,
    });
    let access_token = shared.signer.sign(&claims);
    shared.lock().access_tokens.insert(access_token.clone(), now + chrono::Duration::seconds(ttl));
    shared.tokens_issued.fetch_add(1, Ordering::SeqCst);
    shared.changed();
    let body = if v2 {
        json!({"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": access_token})
    } else {
        json!({
            "token_type": "Bearer",
            "expires_in": ttl.to_string(),
            "ext_expires_in": ttl.to_string(),
            "expires_on": (now.timestamp() + ttl).to_string(),
            "not_before": now.timestamp().to_string(),
            "resource": MARKETPLACE_RESOURCE_ID,
            "access_token": access_token,
        })
    };
    json_response(StatusCode::OK, &body)
}
