//! HTTP answers for the buyer's browser, with the headers every page needs.

use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY, SET_COOKIE,
};
use http::{Response, StatusCode};

/// Pages hold a purchase token in their URL and a form token in their body: never cache them,
/// never send the URL on as a referrer, never frame them, run no script.
const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn secured(builder: http::response::Builder) -> http::response::Builder {
    builder
        .header(CACHE_CONTROL, "no-store")
        .header(REFERRER_POLICY, "no-referrer")
        .header(CONTENT_SECURITY_POLICY, POLICY)
        .header("x-content-type-options", "nosniff")
        .header("x-frame-options", "DENY")
}

/// An HTML page.
pub fn html(status: StatusCode, page: String, cookies: &[String]) -> Response<String> {
    let mut builder =
        secured(Response::builder().status(status)).header(CONTENT_TYPE, "text/html; charset=utf-8");
    for cookie in cookies {
        builder = builder.header(SET_COOKIE, cookie);
    }
    builder.body(page).expect("a valid response")
}

/// An HTML page asking to come back later.
pub fn retry_later(page: String, seconds: u32) -> Response<String> {
    let mut response = html(StatusCode::SERVICE_UNAVAILABLE, page, &[]);
    response.headers_mut().insert(http::header::RETRY_AFTER, seconds.into());
    response
}

/// A redirect (303 See Other: the browser follows it with a GET).
pub fn redirect(location: &str, cookies: &[String]) -> Response<String> {
    let mut builder = secured(Response::builder().status(StatusCode::SEE_OTHER)).header(LOCATION, location);
    for cookie in cookies {
        builder = builder.header(SET_COOKIE, cookie);
    }
    builder.body(String::new()).expect("a valid response")
}

/// A JSON answer (for tooling).
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<String> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header(CACHE_CONTROL, "no-store")
        .body(value.to_string())
        .expect("a valid response")
}

/// The one JSON error body of every function: `{"error": {"code", "message"}}`, the shape
/// Microsoft's own APIs answer with. `code` is stable for tooling; `message` is for people.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<String> {
    json(status, &serde_json::json!({ "error": { "code": code, "message": message } }))
}
