//! An Entra-like authority under `/entra`: client-credentials token endpoints (v1, v2), JWKS and
//! OpenID configuration documents.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Value, json};

use crate::config::MARKETPLACE_RESOURCE_ID;
use crate::faults::Endpoint;
use crate::model::guid;
use crate::server::{ConnKill, FaultOutcome, apply_fault, empty_response, json_response};
use crate::state::Shared;

enum Route {
    Token { v2: bool },
    Jwks,
    OpenId { v2: bool },
}

fn parse(method: &Method, segments: &[&str]) -> Option<Route> {
    match (method.clone(), segments) {
        (Method::POST, [_, "oauth2", "token"]) => Some(Route::Token { v2: false }),
        (Method::POST, [_, "oauth2", "v2.0", "token"]) => Some(Route::Token { v2: true }),
        (Method::GET, [_, "discovery", "keys"] | [_, "discovery", "v2.0", "keys"]) => Some(Route::Jwks),
        (Method::GET, [_, ".well-known", "openid-configuration"]) => Some(Route::OpenId { v2: false }),
        (Method::GET, [_, "v2.0", ".well-known", "openid-configuration"]) => Some(Route::OpenId { v2: true }),
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
        Route::OpenId { .. } => None,
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
            if !known_tenant(&shared, tenant) {
                return unknown_tenant(tenant);
            }
            json_response(StatusCode::OK, &shared.signer.jwks())
        }
        Route::OpenId { v2 } => {
            if !known_tenant(&shared, tenant) {
                return unknown_tenant(tenant);
            }
            json_response(StatusCode::OK, &openid_configuration(&shared, v2))
        }
    }
}

fn known_tenant(shared: &Shared, tenant: &str) -> bool {
    tenant.eq_ignore_ascii_case(&shared.config.publisher_tenant_id)
        || tenant.eq_ignore_ascii_case("common")
        || tenant.eq_ignore_ascii_case("organizations")
}

fn unknown_tenant(tenant: &str) -> Response {
    entra_error(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90002,
        &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID."),
    )
}

/// Entra's error body.
fn entra_error(status: StatusCode, error: &str, code: u32, message: &str) -> Response {
    let trace_id = guid();
    let correlation_id = guid();
    let timestamp = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
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

/// The authority URL of this emulator: `{base}/entra`.
fn authority(shared: &Shared) -> String {
    format!("{}/entra", shared.base_url)
}

fn openid_configuration(shared: &Shared, v2: bool) -> Value {
    let tid = &shared.config.publisher_tenant_id;
    let authority = authority(shared);
    let (issuer, token_endpoint, jwks_uri, authorize) = if v2 {
        (
            format!("https://login.microsoftonline.com/{tid}/v2.0"),
            format!("{authority}/{tid}/oauth2/v2.0/token"),
            format!("{authority}/{tid}/discovery/v2.0/keys"),
            format!("{authority}/{tid}/oauth2/v2.0/authorize"),
        )
    } else {
        (
            format!("https://sts.windows.net/{tid}/"),
            format!("{authority}/{tid}/oauth2/token"),
            format!("{authority}/{tid}/discovery/keys"),
            format!("{authority}/{tid}/oauth2/authorize"),
        )
    };
    json!({
        "token_endpoint": token_endpoint,
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": jwks_uri,
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "authorization_endpoint": authorize,
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "ver", "appid", "azp"],
        "tenant_region_scope": "NA",
    })
}

/// Client-credentials grant for the Marketplace resource.
fn token(shared: &Shared, tenant: &str, v2: bool, body: &[u8]) -> Response {
    let cfg = &shared.config;
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if !tenant.eq_ignore_ascii_case(&cfg.publisher_tenant_id) {
        return unknown_tenant(tenant);
    }
    match field("grant_type").as_deref() {
        Some("client_credentials") => {}
        Some(other) => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
        None => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
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
