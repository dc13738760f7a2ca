//! The HTTP/1.1 listener for `/metrics`, `/healthz` and `/readyz` (hyper,
//! one task per connection on the daemon's runtime). Anything else is 404;
//! only GET and HEAD are answered. Scrapes read atomics and never wait on
//! the daemon's loop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

use super::Shared;

/// The Prometheus text exposition format this encoder writes.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} for metrics: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics need the daemon's async runtime")]
    NoRuntime,
}

/// The listener's task; aborted when the sink goes.
pub struct Handle {
    pub addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Handle {
    /// No listener (unit tests of the sink).
    #[cfg(test)]
    pub fn none() -> Handle {
        Handle {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            task: None,
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Binds now (so a taken port is an error at startup, not later) and
/// serves on the current tokio runtime.
pub fn serve(addr: SocketAddr, shared: Arc<Shared>) -> Result<Handle, ServeError> {
    let rt = tokio::runtime::Handle::try_current().map_err(|_| ServeError::NoRuntime)?;
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = std_listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let listener = {
        let _guard = rt.enter();
        TcpListener::from_std(std_listener).map_err(|source| ServeError::Bind { addr, source })?
    };
    info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    let task = rt.spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: wait a little rather than spin.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, Infallible>(respond(&req, &shared)) }
                });
                if let Err(e) = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%peer, error = %e, "metrics connection ended with an error");
                }
            });
        }
    });
    Ok(Handle {
        addr: bound,
        task: Some(task),
    })
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

fn respond<B>(req: &Request<B>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET or HEAD\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => match shared.encode() {
            Ok(body) => text(StatusCode::OK, CONTENT_TYPE, body),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "encoding failed\n".into(),
            ),
        },
        "/healthz" | "/livez" => match shared.live() {
            Ok(()) => text(StatusCode::OK, "text/plain", "ok\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        "/readyz" => {
            if shared.ready() {
                text(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "starting: the first scan is not done\n".into(),
                )
            }
        }
        "/" => text(
            StatusCode::OK,
            "text/plain",
            "mountleak: /metrics /healthz /readyz\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
