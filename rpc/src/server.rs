//! The accept loop: HTTP/1.1 connections under a cap per client address and in all, with a time
//! limit on the request headers (which also closes idle kept-alive connections), and a graceful
//! shutdown that lets requests in flight finish.
//!
//! `axum::serve` has neither a header timeout nor a connection cap: a client that opened
//! connections and sent nothing (or one header byte a minute) held them for ever.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::limits::Limits;

/// How long a refused connection gets to take its 503 answer.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error (out of file descriptors, say) before accepting again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Why a connection was refused, as counted in the node's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client's address already holds `connections_per_client_max` connections.
    PerClient,
    /// The server already holds `connections_max` connections.
    Total,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::PerClient => "too_many_connections_from_client",
            Refusal::Total => "too_many_connections",
        }
    }
}

/// Open connections per client address and in all.
#[derive(Clone)]
pub(crate) struct ConnectionLimiter {
    per_client_max: usize,
    total_max: usize,
    open: Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>,
}

/// One admitted connection; gives its place back when dropped.
pub(crate) struct ConnectionSlot {
    limiter: ConnectionLimiter,
    client: IpAddr,
}

impl ConnectionLimiter {
    pub(crate) fn new(limits: &Limits) -> ConnectionLimiter {
        ConnectionLimiter {
            per_client_max: limits.connections_per_client_max.max(1),
            total_max: limits.connections_max.max(1),
            open: Arc::default(),
        }
    }

    pub(crate) fn admit(&self, client: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (total, per_client) = &mut *open;
        if *total >= self.total_max {
            return Err(Refusal::Total);
        }
        let count = per_client.entry(client).or_insert(0);
        if *count >= self.per_client_max {
            return Err(Refusal::PerClient);
        }
        *count += 1;
        *total += 1;
        Ok(ConnectionSlot { limiter: self.clone(), client })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (total, per_client) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(count) = per_client.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, tells `stop`, and
/// waits for the open connections to finish what they are doing. `refused` hears of every
/// connection refused.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: watch::Sender<bool>,
    refused: impl Fn(Refusal) + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limiter = ConnectionLimiter::new(&limits);
    // Every connection task holds a receiver; `closed()` resolves when the last one is gone.
    let (connections_done, connections) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "rpc accept");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        match limiter.admit(remote.ip()) {
            Ok(slot) => {
                let app = app.clone();
                let stopping = stop.subscribe();
                let done = connections.clone();
                tokio::spawn(async move {
                    serve_connection(stream, remote, app, &limits, stopping).await;
                    drop(slot);
                    drop(done);
                });
            }
            Err(refusal) => {
                refused(refusal);
                tokio::spawn(refuse(stream, refusal));
            }
        }
    }
    drop(listener);
    stop.send_replace(true);
    drop(connections);
    connections_done.closed().await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: &Limits,
    mut stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = app.map_request(|request: hyper::Request<Incoming>| request.map(Body::new));
    let service = TowerToHyperService::new(service);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout()).keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut stop_seen = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::trace!(%error, %remote, "rpc connection ended");
                }
                return;
            }
            changed = stopping.wait_for(|stopped| *stopped), if !stop_seen => {
                stop_seen = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Answers a refused connection with a 503 in the server's JSON error shape, without reading
/// what it sent, and closes it.
async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    let message = match refusal {
        Refusal::PerClient => "too many open connections from this address; close some and try again",
        Refusal::Total => "the server has too many open connections; try again later",
    };
    let body = serde_json::json!({ "error": {
        "code": crate::errors::ErrorCode::Overloaded.code(),
        "message": message,
    }})
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
