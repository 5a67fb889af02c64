//! The HTTP server: a TCP listener whose connections can be killed by a handler (for the
//! `DropConnection` fault), the router, and the shared fault/response helpers.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::serve::{IncomingStream, Listener};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::faults::{Endpoint, Fault};
use crate::state::Shared;
use crate::{api, control, entra};

/// Per-connection switch: once killed, the connection's reads and writes fail, so hyper drops
/// it and the socket closes without a byte of response.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnKill(Arc<AtomicBool>);

impl ConnKill {
    pub(crate) fn kill(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn killed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A TCP listener handing out killable streams.
pub(crate) struct KillableListener(pub TcpListener);

/// A TCP stream with a [`ConnKill`] switch.
pub(crate) struct KillableStream {
    inner: TcpStream,
    kill: ConnKill,
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((inner, addr)) => {
                    let _ = inner.set_nodelay(true);
                    return (KillableStream { inner, kill: ConnKill::default() }, addr);
                }
                // Out of file descriptors and the like: back off briefly, as axum's own listener does.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnKill {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.io().kill.clone()
    }
}

fn killed_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "connection dropped by fault injection")
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.kill.killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.kill.killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The whole router: Marketplace API under `/api`, Entra under `/entra`, control under `/_control`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api", any(api::entry))
        .route("/api/{*rest}", any(api::entry))
        .route("/entra/{*rest}", any(entra::entry))
        .nest("/_control", control::router())
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(shared)
}

/// What an injected fault decided for one call.
pub(crate) enum FaultOutcome {
    /// No fault (or latency already waited): handle normally.
    Proceed,
    /// Answer with this response instead.
    Respond(Response),
    /// The connection has been killed; the response will never be written.
    Dropped,
}

/// Takes and applies the next fault queued for `endpoint`.
pub(crate) async fn apply_fault(
    shared: &Shared,
    endpoint: Option<Endpoint>,
    kill: Option<&ConnKill>,
) -> FaultOutcome {
    let Some(endpoint) = endpoint else { return FaultOutcome::Proceed };
    let fault = shared.lock().take_fault(endpoint);
    match fault {
        None => FaultOutcome::Proceed,
        Some(Fault::Latency(d)) => {
            shared.sleep(d).await;
            FaultOutcome::Proceed
        }
        Some(Fault::DropConnection) => match kill {
            Some(kill) => {
                kill.kill();
                FaultOutcome::Dropped
            }
            None => FaultOutcome::Respond(status_fault_response(500, None, None)),
        },
        Some(Fault::Status { status, retry_after, body }) => {
            FaultOutcome::Respond(status_fault_response(status, retry_after.as_deref(), body))
        }
    }
}

fn status_fault_response(status: u16, retry_after: Option<&str>, body: Option<Value>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = body.or_else(|| status.is_server_error().then(unexpected_error_body));
    let mut response = match body {
        Some(body) => json_response(status, &body),
        None => empty_response(status),
    };
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Microsoft's 500 body.
pub(crate) fn unexpected_error_body() -> Value {
    json!({"error": {"code": "UnexpectedError", "message": "An unexpected error has occurred."}})
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

/// A response without a body.
pub(crate) fn empty_response(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}
