//! A stub HTTP server that answers with canned responses and records every request: for replaying
//! Microsoft's documented JSON samples to the client and checking exactly what the client sends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// A canned answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Canned {
    pub fn json(status: u16, body: &str) -> Self {
        Self { status, headers: vec![("content-type".into(), "application/json".into())], body: body.into() }
    }

    pub fn empty(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: String::new() }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A request the stub received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// Canned answers by (method, path), in the order they are given.
type Answers = HashMap<(String, String), VecDeque<Canned>>;

#[derive(Clone, Default)]
struct Routes {
    answers: Arc<Mutex<Answers>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A running stub on a free loopback port; stops when dropped.
pub struct Stub {
    pub url: String,
    routes: Routes,
    server: tokio::task::JoinHandle<()>,
}

impl Stub {
    pub async fn start() -> Self {
        let routes = Routes::default();
        let app = axum::Router::new().fallback(answer).with_state(routes.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("stub server");
        });
        Self { url, routes, server }
    }

    /// Answers `method path` with `canned`, in order; the last answer repeats.
    pub fn on(&self, method: &str, path: &str, canned: Canned) -> &Self {
        let mut answers = self.routes.answers.lock().expect("lock");
        answers.entry((method.to_owned(), path.to_owned())).or_default().push_back(canned);
        self
    }

    /// Every request received so far, token requests included.
    pub fn seen(&self) -> Vec<Seen> {
        self.routes.seen.lock().expect("lock").clone()
    }

    /// The requests received for `method path`.
    pub fn seen_at(&self, method: &str, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.method == method && s.path == path).collect()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    State(routes): State<Routes>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    routes.seen.lock().expect("lock").push(seen);
    let canned = {
        let mut answers = routes.answers.lock().expect("lock");
        let queue = answers.get_mut(&(method.to_string(), uri.path().to_owned()));
        match queue {
            Some(queue) if queue.len() > 1 => queue.pop_front(),
            Some(queue) => queue.front().cloned(),
            None => None,
        }
    };
    let Some(canned) = canned else {
        return (StatusCode::NOT_FOUND, format!("stub: nothing for {method} {}", uri.path())).into_response();
    };
    let mut response =
        (StatusCode::from_u16(canned.status).expect("a valid status"), canned.body).into_response();
    for (name, value) in canned.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    response
}
