//! The HTTP/1.1 listener for `/metrics`, `/healthz`, `/readyz` and
//! `/check` (hyper, one task per connection on the daemon's runtime).
//! Anything else is 404; only GET and HEAD are answered. Scrapes read
//! atomics and never wait on the daemon's loop; `/check` runs what
//! `mountleak check` runs, one at a time.

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
use crate::config::Config;

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
pub fn serve(
    addr: SocketAddr,
    shared: Arc<Shared>,
    check: Option<Arc<Config>>,
) -> Result<Handle, ServeError> {
    let checks = check.map(|cfg| {
        Arc::new(Checks {
            cfg,
            one_at_a_time: tokio::sync::Semaphore::new(1),
        })
    });
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
    info!(
        addr = %bound,
        check = checks.is_some(),
        "serving /metrics, /healthz, /readyz (and /check when on)"
    );
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
            let checks = checks.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let shared = Arc::clone(&shared);
                    let checks = checks.clone();
                    async move {
                        let answer = match &checks {
                            Some(c) if req.uri().path() == "/check" => c.answer(&req).await,
                            _ => respond(&req, &shared),
                        };
                        Ok::<_, Infallible>(answer)
                    }
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
            "mountleak: /metrics /healthz /readyz /check?target=TARGET\n".into(),
        ),
        "/check" => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "/check is off ([metrics] check = false)\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// `/check?target=TARGET[&format=text][&status=200]`: `mountleak check` for
/// callers that cannot run it (a preStop hook runs inside the pod).
struct Checks {
    cfg: Arc<Config>,
    /// Each check reads every mount table; callers queue rather than pile up.
    one_at_a_time: tokio::sync::Semaphore,
}

impl Checks {
    async fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET\n".into());
        }
        let query = req.uri().query().unwrap_or("");
        let Some(target) = query_param(query, "target").filter(|t| !t.is_empty()) else {
            return text(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "give ?target= a container id or name, a pod as NAMESPACE/NAME, or a mount path\n"
                    .into(),
            );
        };
        let as_text = query_param(query, "format").as_deref() == Some("text");
        // For clients that drop the body of an error (busybox wget): the
        // verdict is in the body either way.
        let always_ok = query_param(query, "status").as_deref() == Some("200");
        let Ok(_permit) = self.one_at_a_time.acquire().await else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "stopping\n".into(),
            );
        };
        let outcome = match crate::check::Target::parse(&target) {
            Err(e) => Err((StatusCode::BAD_REQUEST, format!("{e:#}"))),
            Ok(_) => crate::check::check(&self.cfg, &target).await.map_err(|e| {
                let msg = format!("{e:#}");
                let status = if msg.starts_with("unknown target") {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                (status, msg)
            }),
        };
        match outcome {
            Err((status, msg)) => {
                debug!(target, %status, "check: {msg}");
                text(status, "text/plain", format!("mountleak: {msg}\n"))
            }
            Ok(o) => {
                let mut body = Vec::new();
                let status = match crate::check::print(&o, !as_text, &mut body) {
                    Ok(_) if always_ok => StatusCode::OK,
                    Ok(0) => StatusCode::OK,
                    Ok(_) => StatusCode::CONFLICT,
                    Err(e) => {
                        return text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "text/plain",
                            format!("mountleak: {e:#}\n"),
                        )
                    }
                };
                let kind = if as_text {
                    "text/plain; charset=utf-8"
                } else {
                    "application/json"
                };
                text(status, kind, String::from_utf8_lossy(&body).into_owned())
            }
        }
    }
}

/// The value of `key` in a query string, percent-decoded (`+` is a space).
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        let q = "format=text&target=%2Fvar%2Flib%2Fa%20b+c%0Ad";
        assert_eq!(
            query_param(q, "target").as_deref(),
            Some("/var/lib/a b c\nd")
        );
        assert_eq!(query_param(q, "format").as_deref(), Some("text"));
        assert_eq!(query_param(q, "nope"), None);
        assert_eq!(
            query_param("target=shop/web-7f9c", "target").as_deref(),
            Some("shop/web-7f9c")
        );
        // Broken escapes stay as they are.
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
