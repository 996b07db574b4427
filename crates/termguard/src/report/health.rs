//! `/healthz`, `/readyz` and `/metrics` on one small HTTP server.

use super::metrics::Metrics;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;

/// What `/readyz` asks.
pub trait Readiness: Send + Sync {
    /// Whether the process can do its work now (caches synced, sources reachable).
    fn ready(&self) -> Result<(), String>;
}

struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<dyn Readiness>,
}

/// Serves until the listener fails or the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<dyn Readiness>,
) -> std::io::Result<()> {
    let state = Arc::new(AppState { metrics, readiness });
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    axum::serve(listener, app).await
}

async fn readyz(State(s): State<Arc<AppState>>) -> (StatusCode, String) {
    match s.readiness.ready() {
        Ok(()) => (StatusCode::OK, "ok".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics_text(
    State(s): State<Arc<AppState>>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
