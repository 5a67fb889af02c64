//! Entra ID as the landing page's OpenID Connect provider: the v2.0 authorization endpoint
//! (authorization code flow with PKCE), the authorization-code grant of the token endpoint, the
//! ID token, and the logout endpoint.
//!
//! A test IdP: a valid authorize request signs the configured user in at once (no login page) and
//! redirects back with a code. Stricter than Entra on purpose where the landing page must be
//! strict: PKCE (S256) and the `openid` scope are required, and every invalid request is answered
//! 400 (Entra redirects protocol errors back to a valid `redirect_uri` instead).

use std::time::Instant;

use aws_lc_rs::digest::{SHA256, digest};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use crate::config::{MSA_TENANT_ID, SigninUser};
use crate::entra::{TenantPath, entra_error, error_parts};
use crate::faults::IdTokenFault;
use crate::keys::{Signer, unsigned};
use crate::model::guid;
use crate::state::Shared;

/// Lifetime of the ID and access tokens of a sign-in (Entra answers `expires_in: 3599`).
const TOKEN_TTL_SECS: i64 = 3600;
/// Microsoft Graph's app id: `aud` of the access token a sign-in gets (as with Entra, by default).
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// `prompt` values Entra accepts.
const PROMPTS: [&str; 5] = ["login", "none", "consent", "select_account", "create"];

/// One request to the authorize endpoint, as received, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigninRecord {
    /// The tenant segment of the path: "organizations", "common", a tenant id…
    pub tenant: String,
    /// Every query parameter, percent-decoded, in order.
    pub params: Vec<(String, String)>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `redirect_uri`.
    pub redirect_uri: Option<String>,
    /// `response_type`.
    pub response_type: Option<String>,
    /// `response_mode`.
    pub response_mode: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// `code_challenge`.
    pub code_challenge: Option<String>,
    /// `code_challenge_method`.
    pub code_challenge_method: Option<String>,
    /// `prompt`.
    pub prompt: Option<String>,
    /// `login_hint`.
    pub login_hint: Option<String>,
    /// Why the request was refused, e.g. "invalid_request: AADSTS900144: …"; `None` = a code was issued.
    pub error: Option<String>,
    /// The user signed in (`None` when refused).
    pub user: Option<SigninUser>,
    /// The code was redeemed at the token endpoint (successfully; codes are single-use).
    pub redeemed: bool,
    /// Why the last attempt to redeem this code failed (`invalid_grant: AADSTS…`), if one did.
    pub redeem_error: Option<String>,
    /// The ID token issued for the code.
    pub id_token: Option<String>,
    /// When the authorize request arrived.
    pub at: DateTime<Utc>,
}

/// An issued authorization code and everything it is bound to.
pub(crate) struct AuthCode {
    /// Index of its sign-in in `State::signins`.
    signin: usize,
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    scope: String,
    user: SigninUser,
    expires: Instant,
    used: bool,
}

/// Why an authorize request is refused.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    code: u32,
    message: String,
}

fn refuse(error: &'static str, code: u32, message: impl Into<String>) -> Refusal {
    Refusal { status: StatusCode::BAD_REQUEST, error, code, message: message.into() }
}

impl Refusal {
    fn summary(&self) -> String {
        format!("{}: AADSTS{}: {}", self.error, self.code, self.message)
    }

    /// Entra's JSON error body for API clients, its error page for browsers.
    fn response(&self, wants_json: bool) -> Response {
        if wants_json {
            return entra_error(self.status, self.error, self.code, &self.message);
        }
        let (trace_id, correlation_id, timestamp) = error_parts();
        let page = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Sign in to your account</title></head>\
             <body><h1>Sign in</h1><p>Sorry, but we're having trouble signing you in.</p>\
             <p id=\"error\">AADSTS{code}: {message}</p><dl>\
             <dt>Error</dt><dd id=\"error-code\">{error}</dd>\
             <dt>Request Id</dt><dd>{trace_id}</dd><dt>Correlation Id</dt><dd>{correlation_id}</dd>\
             <dt>Timestamp</dt><dd>{timestamp}</dd></dl></body></html>\n",
            code = self.code,
            message = escape(&self.message),
            error = self.error,
        );
        html_response(self.status, page)
    }
}

/// How the code goes back to the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ResponseMode {
    Query,
    Fragment,
    FormPost,
}

/// An authorize request that passed every check.
struct Valid {
    client_id: String,
    redirect_uri: String,
    redirect: Url,
    mode: ResponseMode,
    scope: String,
    code_challenge: String,
}

/// `GET {authority}/{tenant}/oauth2/v2.0/authorize`.
pub(crate) fn authorize(shared: &Shared, segment: &str, query: &str, headers: &HeaderMap) -> Response {
    let wants_json = wants_json(headers);
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut record = SigninRecord {
        tenant: segment.to_string(),
        client_id: param("client_id"),
        redirect_uri: param("redirect_uri"),
        response_type: param("response_type"),
        response_mode: param("response_mode"),
        scope: param("scope"),
        state: param("state"),
        nonce: param("nonce"),
        code_challenge: param("code_challenge"),
        code_challenge_method: param("code_challenge_method"),
        prompt: param("prompt"),
        login_hint: param("login_hint"),
        params: params.clone(),
        error: None,
        user: None,
        redeemed: false,
        redeem_error: None,
        id_token: None,
        at: Utc::now(),
    };
    let tenant = crate::entra::tenant_path(shared, segment);
    let mut state = shared.lock();
    let user = state.signin_user.clone();
    let checked = match tenant {
        None => Err(refuse(
            "invalid_tenant",
            90002,
            format!("Tenant '{segment}' not found. Check to make sure you have the correct tenant ID."),
        )),
        Some(tenant) => validate(shared, &record).and_then(|valid| {
            if tenant.admits(&user.tid) {
                Ok(valid)
            } else {
                let (idp, kind) = if user.tid.eq_ignore_ascii_case(MSA_TENANT_ID) {
                    ("live.com", "personal Microsoft accounts are not accepted at this endpoint")
                } else {
                    ("the user's tenant", "the user belongs to another tenant")
                };
                Err(refuse(
                    "invalid_request",
                    50020,
                    format!(
                        "User account '{}' from identity provider '{idp}' does not exist in tenant '{segment}' and cannot access the application '{}' in that tenant ({kind}).",
                        user.preferred_username, valid.client_id
                    ),
                ))
            }
        }),
    };
    let valid = match checked {
        Ok(valid) => valid,
        Err(refusal) => {
            record.error = Some(refusal.summary());
            state.signins.push(record);
            drop(state);
            shared.changed();
            return refusal.response(wants_json);
        }
    };

    let code = format!("1.A{}", random_b64(96));
    let session_state = guid();
    let now = Instant::now();
    state.auth_codes.retain(|_, c| c.expires + std::time::Duration::from_secs(3600) > now);
    record.user = Some(user.clone());
    let signin = state.signins.len();
    state.auth_codes.insert(
        code.clone(),
        AuthCode {
            signin,
            client_id: valid.client_id.clone(),
            redirect_uri: valid.redirect_uri.clone(),
            code_challenge: valid.code_challenge.clone(),
            nonce: record.nonce.clone(),
            scope: valid.scope.clone(),
            user: user.clone(),
            expires: now + shared.config.authorization_code_ttl,
            used: false,
        },
    );
    let client_info = (param("client_info").as_deref() == Some("1"))
        .then(|| URL_SAFE_NO_PAD.encode(json!({"uid": user.oid, "utid": user.tid}).to_string()));
    let state_param = record.state.clone();
    state.signins.push(record);
    drop(state);
    shared.changed();

    let mut answer: Vec<(&str, String)> = vec![("code", code)];
    if let Some(client_info) = client_info {
        answer.push(("client_info", client_info));
    }
    if let Some(s) = state_param {
        answer.push(("state", s));
    }
    answer.push(("session_state", session_state));
    match valid.mode {
        ResponseMode::Query => {
            let mut url = valid.redirect;
            url.query_pairs_mut().extend_pairs(answer.iter().map(|(k, v)| (*k, v.as_str())));
            redirect(url.as_str())
        }
        ResponseMode::Fragment => {
            let fragment = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(answer.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            redirect(&format!("{}#{fragment}", valid.redirect))
        }
        ResponseMode::FormPost => {
            let inputs: String = answer
                .iter()
                .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\" />", escape(v)))
                .collect();
            let page = format!(
                "<html><head><title>Working...</title></head><body>\
                 <form method=\"POST\" name=\"hiddenform\" action=\"{action}\">{inputs}\
                 <noscript><p>Script is disabled. Click Submit to continue.</p><input type=\"submit\" value=\"Submit\" /></noscript>\
                 </form><script language=\"javascript\">document.forms[0].submit();</script></body></html>\n",
                action = escape(valid.redirect.as_str()),
            );
            html_response(StatusCode::OK, page)
        }
    }
}

/// The checks of an authorize request, in Entra's order (client, redirect URI, then protocol).
fn validate(shared: &Shared, r: &SigninRecord) -> Result<Valid, Refusal> {
    let cfg = &shared.config;
    let client_id = r.client_id.clone().filter(|c| !c.trim().is_empty()).ok_or_else(|| {
        refuse(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    })?;
    if let Some(expected) = &cfg.signin_client_id
        && !client_id.eq_ignore_ascii_case(expected)
    {
        return Err(refuse(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
                r.tenant
            ),
        ));
    }
    let redirect_uri = r.redirect_uri.clone().unwrap_or_default();
    let redirect = Url::parse(&redirect_uri)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host() && u.fragment().is_none())
        .ok_or_else(|| {
            refuse(
                "invalid_request",
                90102,
                format!(
                    "'redirect_uri' value must be a valid absolute URI without a fragment: '{redirect_uri}'."
                ),
            )
        })?;
    if !cfg.signin_redirect_uris.is_empty() && !cfg.signin_redirect_uris.contains(&redirect_uri) {
        return Err(refuse(
            "invalid_request",
            50011,
            format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'."
            ),
        ));
    }
    match r.response_type.as_deref() {
        Some("code") => {}
        None | Some("") => {
            return Err(refuse(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'response_type'.",
            ));
        }
        Some(other) => {
            return Err(refuse(
                "unsupported_response_type",
                700051,
                format!("response_type '{other}' is not enabled for the application (only 'code' is)."),
            ));
        }
    }
    let mode = match r.response_mode.as_deref() {
        None | Some("query") => ResponseMode::Query,
        Some("fragment") => ResponseMode::Fragment,
        Some("form_post") => ResponseMode::FormPost,
        Some(other) => {
            return Err(refuse(
                "invalid_request",
                90023,
                format!("Unsupported 'response_mode' value '{other}'."),
            ));
        }
    };
    let scope = r.scope.clone().unwrap_or_default();
    if !scope.split_whitespace().any(|s| s == "openid") {
        return Err(refuse(
            "invalid_scope",
            70011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope '{scope}' does not contain 'openid' (required for sign-in)."
            ),
        ));
    }
    let code_challenge = r.code_challenge.clone().filter(|c| !c.is_empty()).ok_or_else(|| {
        refuse(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'code_challenge' (PKCE is required).",
        )
    })?;
    match r.code_challenge_method.as_deref() {
        Some("S256") => {}
        other => {
            return Err(refuse(
                "invalid_request",
                90023,
                format!(
                    "Unsupported 'code_challenge_method' value '{}': only 'S256' is accepted.",
                    other.unwrap_or("")
                ),
            ));
        }
    }
    let base64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if code_challenge.len() != 43 || !code_challenge.chars().all(base64url) {
        return Err(refuse(
            "invalid_request",
            501491,
            "Invalid size of Code_Challenge parameter (an S256 challenge is 43 base64url characters).",
        ));
    }
    if let Some(prompt) = r.prompt.as_deref()
        && !PROMPTS.contains(&prompt)
    {
        return Err(refuse("invalid_request", 90023, format!("Unsupported 'prompt' value '{prompt}'.")));
    }
    Ok(Valid { client_id, redirect_uri, redirect, mode, scope, code_challenge })
}

/// `grant_type=authorization_code` at `POST {authority}/{tenant}/oauth2/v2.0/token`.
pub(crate) fn redeem(shared: &Shared, tenant: &TenantPath, form: &[(String, String)]) -> Response {
    let cfg = &shared.config;
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let missing = |name: &str| {
        entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            &format!("The request body must contain the following parameter: '{name}'."),
        )
    };
    let Some(client_id) = field("client_id").filter(|c| !c.is_empty()) else { return missing("client_id") };
    if let Some(expected) = &cfg.signin_client_id
        && !client_id.eq_ignore_ascii_case(expected)
    {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                tenant.segment()
            ),
        );
    }
    if let Some(expected) = &cfg.signin_client_secret {
        match field("client_secret") {
            None => {
                return entra_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                );
            }
            Some(secret) if &secret != expected => {
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
    }
    let Some(code) = field("code").filter(|c| !c.is_empty()) else { return missing("code") };
    let Some(redirect_uri) = field("redirect_uri") else { return missing("redirect_uri") };
    let Some(verifier) = field("code_verifier") else { return missing("code_verifier") };

    let now = Instant::now();
    let mut state = shared.lock();
    let user_tid = state.auth_codes.get(&code).map(|c| c.user.tid.clone());
    let Some(entry) = state.auth_codes.get_mut(&code) else {
        drop(state);
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid. The provided value for the 'code' parameter is not valid.",
        );
    };
    // One attempt per code, as Entra: a failed redemption uses it up too.
    let first_use = !std::mem::replace(&mut entry.used, true);
    let failure: Option<(u32, String)> = if !first_use {
        Some((
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.".into(),
        ))
    } else if now >= entry.expires {
        Some((
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.".into(),
        ))
    } else if !client_id.eq_ignore_ascii_case(&entry.client_id) {
        Some((
            70000,
            format!("The provided authorization code was issued to another client than '{client_id}'."),
        ))
    } else if user_tid.is_some_and(|tid| !tenant.admits(&tid)) {
        Some((
            700005,
            "Provided Authorization Code is intended to use against other tenant, thus rejected.".into(),
        ))
    } else if redirect_uri != entry.redirect_uri {
        Some((
            500112,
            format!(
                "The reply address '{redirect_uri}' does not match the reply address '{}' provided when requesting Authorization code.",
                entry.redirect_uri
            ),
        ))
    } else if URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes())) != entry.code_challenge {
        Some((50148, "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.".into()))
    } else {
        None
    };
    let signin = entry.signin;
    let (user, nonce, scope) = (entry.user.clone(), entry.nonce.clone(), entry.scope.clone());
    if let Some((aadsts, message)) = failure {
        let response = entra_error(StatusCode::BAD_REQUEST, "invalid_grant", aadsts, &message);
        if let Some(record) = state.signins.get_mut(signin) {
            record.redeem_error = Some(format!("invalid_grant: AADSTS{aadsts}: {message}"));
        }
        drop(state);
        shared.changed();
        return response;
    }
    let fault = state.id_token_fault;
    drop(state);

    let issued = Utc::now().timestamp();
    let authority = format!("{}/entra", shared.base_url);
    let claims = id_token_claims(&authority, &user, &client_id, nonce.as_deref(), &scope, issued, fault);
    let id_token = match fault {
        Some(IdTokenFault::AlgNone) => unsigned(&claims),
        Some(IdTokenFault::UnknownKid) => shared.signer.sign_with_kid(&claims, &random_b64(15)),
        Some(IdTokenFault::UnpublishedKey) => {
            match shared.rogue_signer.get_or_init(|| Signer::generate().ok()) {
                Some(rogue) => rogue.sign_with_kid(&claims, shared.signer.kid()),
                None => {
                    return entra_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        50000,
                        "There was an error issuing a token (no second key).",
                    );
                }
            }
        }
        _ => shared.signer.sign_with_kid(&claims, shared.signer.kid()),
    };
    let granted = granted_scope(&scope);
    let access_token = shared.signer.sign(&json!({
        "aud": GRAPH_APP_ID,
        "iss": format!("https://sts.windows.net/{}/", user.tid),
        "iat": issued,
        "nbf": issued,
        "exp": issued + TOKEN_TTL_SECS,
        "appid": client_id,
        "idtyp": "user",
        "name": user.name,
        "oid": user.oid,
        "scp": granted,
        "sub": pairwise(&user, GRAPH_APP_ID),
        "tid": user.tid,
        "unique_name": user.preferred_username,
        "upn": user.preferred_username,
        "uti": random_b64(16),
        "ver": "1.0",
    }));
    {
        let mut state = shared.lock();
        if let Some(record) = state.signins.get_mut(signin) {
            record.redeemed = true;
            record.redeem_error = None;
            record.id_token = Some(id_token.clone());
        }
    }
    shared.changed();
    let body = json!({
        "token_type": "Bearer",
        "scope": granted,
        "expires_in": TOKEN_TTL_SECS - 1,
        "ext_expires_in": TOKEN_TTL_SECS - 1,
        "access_token": access_token,
        "id_token": id_token,
    });
    let mut response = crate::server::json_response(StatusCode::OK, &body);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The ID token's claims as Entra v2.0 issues them (`name`, `preferred_username` and `oid` with
/// the `profile` scope, `email` with the `email` scope), with `fault`'s defect in them.
fn id_token_claims(
    authority: &str,
    user: &SigninUser,
    client_id: &str,
    nonce: Option<&str>,
    scope: &str,
    now: i64,
    fault: Option<IdTokenFault>,
) -> Value {
    let has = |s: &str| scope.split_whitespace().any(|x| x == s);
    let (iat, exp) = match fault {
        Some(IdTokenFault::Expired) => (now - 2 * TOKEN_TTL_SECS, now - TOKEN_TTL_SECS),
        Some(IdTokenFault::NotYetValid) => (now + TOKEN_TTL_SECS, now + 2 * TOKEN_TTL_SECS),
        _ => (now, now + TOKEN_TTL_SECS),
    };
    let mut claims = json!({
        "aud": client_id,
        "iss": format!("{authority}/{}/v2.0", user.tid),
        "iat": iat,
        "nbf": iat,
        "exp": exp,
        "aio": random_b64(60),
        "sid": guid(),
        "sub": pairwise(user, client_id),
        "tid": user.tid,
        "uti": random_b64(16),
        "ver": "2.0",
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    if has("profile") {
        claims["name"] = json!(user.name);
        claims["preferred_username"] = json!(user.preferred_username);
        claims["oid"] = json!(user.oid);
    }
    if has("email") && !user.email.is_empty() {
        claims["email"] = json!(user.email);
    }
    match fault {
        Some(IdTokenFault::WrongNonce) => claims["nonce"] = json!(random_b64(24)),
        Some(IdTokenFault::WrongAudience) => claims["aud"] = json!(guid()),
        Some(IdTokenFault::WrongIssuer) => claims["iss"] = json!(format!("{authority}/{}/v2.0", guid())),
        Some(IdTokenFault::ForeignIssuer) => {
            claims["iss"] = json!(format!("https://issuer.invalid/{}/v2.0", user.tid));
        }
        _ => {}
    }
    claims
}

/// The token response's `scope`: the requested scopes, with Graph's `User.Read` when no resource
/// scope was requested (Entra's default resource).
fn granted_scope(requested: &str) -> String {
    let oidc = ["openid", "profile", "email", "offline_access"];
    let mut scopes: Vec<&str> = requested.split_whitespace().collect();
    if scopes.iter().all(|s| oidc.contains(s)) {
        scopes.push("User.Read");
    }
    scopes.join(" ")
}

/// A pairwise subject: the same for a user and an app, different across apps (43 characters).
fn pairwise(user: &SigninUser, app: &str) -> String {
    let seed = format!(
        "{}|{}|{}",
        user.tid.to_ascii_lowercase(),
        user.oid.to_ascii_lowercase(),
        app.to_ascii_lowercase()
    );
    URL_SAFE_NO_PAD.encode(digest(&SHA256, seed.as_bytes()))
}

/// `GET {authority}/{tenant}/oauth2/v2.0/logout[?post_logout_redirect_uri=…]`.
pub(crate) fn logout(query: &str) -> Response {
    let target = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "post_logout_redirect_uri")
        .and_then(|(_, v)| Url::parse(&v).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
    match target {
        Some(url) => redirect(url.as_str()),
        None => html_response(
            StatusCode::OK,
            "<!DOCTYPE html>\n<html><head><title>Sign out</title></head><body><p>You signed out of your account.</p></body></html>\n"
                .into(),
        ),
    }
}

/// Whether the client prefers JSON to HTML (API clients; browsers ask for `text/html`).
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    accept.contains("application/json") && !accept.contains("text/html")
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    match HeaderValue::from_str(location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
        }
        // A parsed URL is always a valid header value; never redirect to a mangled one.
        Err(_) => *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    response
}

fn html_response(status: StatusCode, page: String) -> Response {
    let mut response = (status, page).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    response
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(buf.as_mut_slice());
    URL_SAFE_NO_PAD.encode(buf)
}
