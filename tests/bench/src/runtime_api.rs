//! A local Lambda Runtime API (the HTTP API a `bootstrap` binary polls through
//! `AWS_LAMBDA_RUNTIME_API`): hands out queued events and notes when each answer comes back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::sync::Notify;

#[derive(Default)]
struct Shared {
    /// Bumped for each new process, so that a long poll left by a killed one takes no event.
    generation: AtomicU64,
    queue: Mutex<VecDeque<(String, Vec<u8>)>>,
    first_poll: Mutex<Option<Instant>>,
    answers: Mutex<Vec<Answer>>,
    queued: Notify,
    answered: Notify,
}

/// An invocation's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub request_id: String,
    pub at: Instant,
    pub error: bool,
    pub body: Vec<u8>,
}

/// A running Runtime API on a loopback port.
#[derive(Clone)]
pub struct RuntimeApi {
    pub address: String,
    shared: Arc<Shared>,
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("bound").to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.expect("runtime API") });
        Self { address, shared }
    }

    /// Forgets everything of the previous process.
    pub fn reset(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        self.shared.queued.notify_waiters();
        *self.shared.first_poll.lock().expect("lock") = None;
        self.shared.answers.lock().expect("lock").clear();
        self.shared.queue.lock().expect("lock").clear();
    }

    /// Queues an invocation; returns its request id.
    pub fn invoke(&self, event: &[u8]) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.shared.queue.lock().expect("lock").push_back((id.clone(), event.to_vec()));
        self.shared.queued.notify_waiters();
        self.shared.queued.notify_one();
        id
    }

    /// When the binary first asked for work.
    pub async fn first_poll(&self, deadline: Instant) -> Option<Instant> {
        loop {
            // Registered before the check, so a poll in between is not missed.
            let wait = self.shared.answered.notified();
            if let Some(at) = *self.shared.first_poll.lock().expect("lock") {
                return Some(at);
            }
            if tokio::time::timeout_at(deadline.into(), wait).await.is_err() {
                return *self.shared.first_poll.lock().expect("lock");
            }
        }
    }

    /// The answer to `request_id`, waiting until `deadline`.
    pub async fn answer(&self, request_id: &str, deadline: Instant) -> Option<Answer> {
        loop {
            let wait = self.shared.answered.notified();
            if let Some(answer) =
                self.shared.answers.lock().expect("lock").iter().find(|a| a.request_id == request_id)
            {
                return Some(answer.clone());
            }
            if tokio::time::timeout_at(deadline.into(), wait).await.is_err() {
                return None;
            }
        }
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> axum::response::Response {
    let generation = shared.generation.load(Ordering::SeqCst);
    {
        let mut first = shared.first_poll.lock().expect("lock");
        if first.is_none() {
            *first = Some(Instant::now());
            shared.answered.notify_waiters();
        }
    }
    loop {
        let wait = shared.queued.notified();
        if shared.generation.load(Ordering::SeqCst) != generation {
            return StatusCode::GONE.into_response();
        }
        if let Some((id, event)) = shared.queue.lock().expect("lock").pop_front() {
            let mut headers = HeaderMap::new();
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                // Longer than any function's timeout in template.yaml: the benchmark times whole
                // reconciliation passes, which in AWS may take several invocations.
                .map(|d| d.as_millis() + 900_000)
                .unwrap_or_default();
            headers.insert("lambda-runtime-aws-request-id", HeaderValue::from_str(&id).expect("header"));
            headers.insert(
                "lambda-runtime-deadline-ms",
                HeaderValue::from_str(&deadline.to_string()).expect("header"),
            );
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:bench"),
            );
            headers.insert(
                "lambda-runtime-trace-id",
                HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
            );
            return (StatusCode::OK, headers, event).into_response();
        }
        wait.await;
    }
}

fn record(shared: &Shared, id: String, error: bool, body: Bytes) {
    shared.answers.lock().expect("lock").push(Answer {
        request_id: id,
        at: Instant::now(),
        error,
        body: body.to_vec(),
    });
    shared.answered.notify_waiters();
}

async fn response(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    record(&shared, id, false, body);
    StatusCode::ACCEPTED
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    record(&shared, id, true, body);
    StatusCode::ACCEPTED
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    record(&shared, "init".into(), true, body);
    StatusCode::ACCEPTED
}
