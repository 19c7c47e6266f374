//! The accept loop: HTTP/1.1 connections with a header-read timeout and a connection
//! limit, drained gracefully on stop.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// How connections are accepted and bounded.
pub(crate) struct Listen {
    /// A client must send a request's headers within this (or the connection is closed).
    pub(crate) header_timeout: Duration,
    /// Connections open at once. Past it, up to `PROBE_CONNECTIONS` more are served by the
    /// probe router (health checks answer; anything else is a 503), and any more get a
    /// 503 and are closed.
    pub(crate) max_connections: usize,
    /// After `stop` resolves, how long requests in flight may take before they are closed.
    pub(crate) drain_timeout: Duration,
}

/// What became of the connections when serving stopped.
pub(crate) enum Drained {
    /// Every request in flight was answered.
    All,
    /// Some were still open after the drain timeout and were closed.
    TimedOut,
}

impl Listen {
    /// Serves `router` on `listener` until `stop` resolves, then stops accepting and waits
    /// (at most the drain timeout) for the connections in flight.
    pub(crate) async fn serve(
        &self,
        listener: TcpListener,
        (router, probes): (Router, Router),
        stop: impl Future<Output = ()>,
        refused: impl Fn() + Send + Sync + 'static,
    ) -> Drained {
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(self.max_connections.max(1)));
        let probe_slots = Arc::new(Semaphore::new(PROBE_CONNECTIONS));
        let refused = Arc::new(refused);
        tokio::pin!(stop);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            let (slot, service) = match slots.clone().try_acquire_owned() {
                Ok(slot) => (slot, router.clone()),
                Err(_) => {
                    refused();
                    // Health checks still get through when the connections are spent.
                    let Ok(slot) = probe_slots.clone().try_acquire_owned() else {
                        tokio::spawn(refuse(stream, self.max_connections));
                        continue;
                    };
                    (slot, probes.clone())
                }
            };
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.header_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                // Errors here are the client's (a reset, a timeout): nothing to answer.
                let _ = connection.await;
                drop(slot);
            });
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => Drained::All,
            () = tokio::time::sleep(self.drain_timeout) => Drained::TimedOut,
        }
    }
}

/// Connections past `max_connections` still served, for health checks only.
const PROBE_CONNECTIONS: usize = 64;

/// Answers a connection over the limit with a 503 and closes it.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let body = format!(
        "{{\"error\":\"the server has {limit} connections open, its limit \
         (--max-connections); retry later\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
