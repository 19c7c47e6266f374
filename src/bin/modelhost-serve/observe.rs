//! What the HTTP layer records about every request, whether or not it reached a model:
//! counters by route, method and status, latency by route, and one structured log line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Which model a request reached, set by the handler on its response.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestInfo {
    pub(crate) model: String,
    pub(crate) version: Option<String>,
    pub(crate) rows: usize,
}

/// The route pattern a request matched (`/v2/models/{model}/infer`), copied onto the
/// response so the outer layer can label by it; unmatched requests have none.
#[derive(Debug, Clone)]
struct Route(String);

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Latency {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters and histograms of the HTTP layer, in the Prometheus text format.
#[derive(Default)]
pub(crate) struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Latency>>,
    refused_connections: AtomicU64,
}

impl HttpMetrics {
    fn record(&self, route: &str, method: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let mut latency = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        let l = latency.entry(route.to_string()).or_default();
        for (bound, count) in BUCKETS.iter().zip(&mut l.counts) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        l.count += 1;
        l.sum += seconds;
    }

    /// Counts a connection refused for being over `--max-connections`.
    pub(crate) fn refused_connection(&self) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text (classic Prometheus format, appended to the library's).
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP modelhost_http_requests_total HTTP requests answered, by route pattern, \
             method and status.\n# TYPE modelhost_http_requests_total counter\n",
        );
        for ((route, method, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "modelhost_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        out.push_str(
            "# HELP modelhost_http_request_duration_seconds Time from a request's headers to \
             its answer, by route pattern.\n# TYPE modelhost_http_request_duration_seconds histogram\n",
        );
        let name = "modelhost_http_request_duration_seconds";
        for (route, l) in self
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let route = escape(route);
            for (bound, count) in BUCKETS.iter().zip(&l.counts) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                l.count
            );
            let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", l.sum);
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {}", l.count);
        }
        let _ = write!(
            out,
            "# HELP modelhost_http_connections_refused_total Connections answered 503 for being \
             over --max-connections.\n# TYPE modelhost_http_connections_refused_total counter\n\
             modelhost_http_connections_refused_total {}\n",
            self.refused_connections.load(Ordering::Relaxed)
        );
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Inner layer (after routing): copies the matched route pattern onto the response.
pub(crate) async fn mark_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| Route(m.as_str().to_string()));
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// Outer layer: counts and times every request (unknown routes included) and logs one
/// line for it.
pub(crate) async fn observe(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let route = response
        .extensions()
        .get::<Route>()
        .map_or("unmatched", |r| r.0.as_str());
    let status = response.status().as_u16();
    metrics.record(route, &method, status, elapsed.as_secs_f64());
    let info = response.extensions().get::<RequestInfo>();
    tracing::info!(
        target: "modelhost_serve::request",
        method,
        path,
        route,
        status,
        duration_ms = elapsed.as_secs_f64() * 1e3,
        model = info.map(|i| i.model.as_str()),
        version = info.and_then(|i| i.version.as_deref()),
        rows = info.map(|i| i.rows),
        "request"
    );
    response
}
