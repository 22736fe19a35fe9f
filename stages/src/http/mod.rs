//! Queryable state of the serving stage over HTTP (axum).
//!
//! | route | answer |
//! |---|---|
//! | `GET /models` | JSON array of the dataTypes that have a current model |
//! | `GET /state` | JSON [`ServingSnapshot`] (every dataType, totals, buffer) |
//! | `GET /state/{dataType}` | JSON [`DataTypeState`](crate::serving::DataTypeState): current model and its statistics; 404 for an unknown dataType |
//! | `GET /state/{dataType}/history` | JSON array of [`HistoryEntry`](crate::serving::HistoryEntry), oldest first; 404 for an unknown dataType |
//! | `GET /metrics` | Prometheus text format |
//!
//! Handlers read the latest published snapshot (lock-free), so they never
//! block scoring. Unknown paths get 404, other methods on these paths 405.
//! The field names are documented in `stages/README.md`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::serving::{ServingSnapshot, ServingState, DURATION_BUCKETS_NS};

/// The default address: `127.0.0.1:5500` (the tutorial's state port; loopback only).
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5500);

/// Errors of the HTTP server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The server task panicked or was aborted.
    #[error("HTTP server task ended abnormally: {0}")]
    Task(String),
}

/// The routes, over `state`. Serve them yourself, or use [`serve`].
pub fn router(state: ServingState) -> Router {
    Router::new()
        .route("/models", get(models))
        .route("/state", get(all_state))
        .route("/state/{data_type}", get(one_state))
        .route("/state/{data_type}/history", get(history))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A running HTTP server; [`shutdown`](HttpServer::shutdown) stops it
/// gracefully (dropping it stops it too).
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl HttpServer {
    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets running requests finish, and waits.
    pub async fn shutdown(mut self) -> Result<(), HttpError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(r) => r.map_err(HttpError::Serve),
                Err(e) => Err(HttpError::Task(e.to_string())),
            },
            None => Ok(()),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `addr` (use [`DEFAULT_ADDR`], or port 0 for any free port) and serves
/// [`router`] on a tokio task.
pub async fn serve(state: ServingState, addr: SocketAddr) -> Result<HttpServer, HttpError> {
    serve_router(router(state), addr).await
}

/// Like [`serve`], for any router — e.g. [`router`] merged with routes of
/// your own (the wine server adds `/state/instances`).
pub async fn serve_router(app: Router, addr: SocketAddr) -> Result<HttpServer, HttpError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(HttpServer {
        addr: local,
        stop: Some(stop),
        task: Some(task),
    })
}

/// A JSON error body `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such resource".into())
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "only GET (and HEAD) are served".into(),
    )
}

/// The answer to a `/state/{data_type}` path whose dataType is not UTF-8 once decoded.
fn not_a_data_type() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "not a dataType: the path is not UTF-8 text once decoded".into(),
    )
}

/// The 404 of a dataType nobody serves (a long name shortened).
fn unknown_data_type(data_type: &str) -> Response {
    const SHOWN: usize = 100;
    let mut shown: String = data_type.chars().take(SHOWN).collect();
    if shown.len() < data_type.len() {
        shown.push('…');
    }
    error(
        StatusCode::NOT_FOUND,
        format!("no dataType {shown:?} is served"),
    )
}

async fn models(State(state): State<ServingState>) -> Response {
    Json(state.snapshot().models()).into_response()
}

async fn all_state(State(state): State<ServingState>) -> Response {
    Json(&*state.snapshot()).into_response()
}

async fn one_state(
    State(state): State<ServingState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    of_data_type(&state, path, |s| Json(s).into_response())
}

async fn history(
    State(state): State<ServingState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    of_data_type(&state, path, |s| Json(&s.history).into_response())
}

/// `answer` about the dataType of a `/state/{data_type}…` path; a 400 or a 404 when the path
/// names none or one nobody serves.
fn of_data_type(
    state: &ServingState,
    path: Result<Path<String>, PathRejection>,
    answer: impl FnOnce(&crate::serving::DataTypeState) -> Response,
) -> Response {
    let Ok(Path(data_type)) = path else {
        return not_a_data_type();
    };
    match state.snapshot().data_types.get(&data_type) {
        Some(s) => answer(s),
        None => unknown_data_type(&data_type),
    }
}

async fn metrics(State(state): State<ServingState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&state.snapshot()),
    )
        .into_response()
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The snapshot in the Prometheus text exposition format.
pub fn render_metrics(s: &ServingSnapshot) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail.
    let _ = write_metrics(&mut o, s);
    o
}

fn write_metrics(o: &mut String, s: &ServingSnapshot) -> std::fmt::Result {
    writeln!(o, "# HELP flowstage_serving_records_total Records served, by dataType and outcome (scored, error, no_model).")?;
    writeln!(o, "# TYPE flowstage_serving_records_total counter")?;
    // Records of a dataType without state count under the empty dataType: in its own
    // series, or in that of a dataType named "" (one series per label set).
    let known_no_model: u64 = s.data_types.values().map(|d| d.no_model).sum();
    let unknown_no_model = s.totals.no_model.saturating_sub(known_no_model);
    for (name, st) in &s.data_types {
        let dt = label(name);
        writeln!(
            o,
            "flowstage_serving_records_total{{data_type=\"{dt}\",outcome=\"scored\"}} {}",
            st.scored
        )?;
        writeln!(
            o,
            "flowstage_serving_records_total{{data_type=\"{dt}\",outcome=\"error\"}} {}",
            st.scoring_errors
        )?;
        writeln!(
            o,
            "flowstage_serving_records_total{{data_type=\"{dt}\",outcome=\"no_model\"}} {}",
            st.no_model + if name.is_empty() { unknown_no_model } else { 0 }
        )?;
    }
    if !s.data_types.contains_key("") {
        writeln!(
            o,
            "flowstage_serving_records_total{{data_type=\"\",outcome=\"no_model\"}} {}",
            unknown_no_model
        )?;
    }
    writeln!(
        o,
        "# HELP flowstage_serving_errors_total Records whose scoring failed."
    )?;
    writeln!(o, "# TYPE flowstage_serving_errors_total counter")?;
    writeln!(o, "flowstage_serving_errors_total {}", s.totals.errors)?;
    writeln!(
        o,
        "# HELP flowstage_serving_model_swaps_total Models that became current, by dataType."
    )?;
    writeln!(o, "# TYPE flowstage_serving_model_swaps_total counter")?;
    for (dt, st) in &s.data_types {
        writeln!(
            o,
            "flowstage_serving_model_swaps_total{{data_type=\"{}\"}} {}",
            label(dt),
            st.swaps
        )?;
    }
    writeln!(
        o,
        "# HELP flowstage_serving_model_load_failures_total Model loads that failed, by dataType."
    )?;
    writeln!(
        o,
        "# TYPE flowstage_serving_model_load_failures_total counter"
    )?;
    for (dt, st) in &s.data_types {
        writeln!(
            o,
            "flowstage_serving_model_load_failures_total{{data_type=\"{}\"}} {}",
            label(dt),
            st.load_failures
        )?;
    }
    writeln!(o, "# HELP flowstage_serving_scoring_duration_seconds Scoring time per record, by dataType (all models).")?;
    writeln!(
        o,
        "# TYPE flowstage_serving_scoring_duration_seconds histogram"
    )?;
    for (dt, st) in &s.data_types {
        let dt = label(dt);
        let mut cumulative = 0u64;
        for (i, bound) in DURATION_BUCKETS_NS.iter().enumerate() {
            cumulative += st.duration_buckets.get(i).copied().unwrap_or(0);
            writeln!(
                o,
                "flowstage_serving_scoring_duration_seconds_bucket{{data_type=\"{dt}\",le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e9
            )?;
        }
        let count: u64 = st.duration_buckets.iter().sum();
        writeln!(o, "flowstage_serving_scoring_duration_seconds_bucket{{data_type=\"{dt}\",le=\"+Inf\"}} {count}")?;
        writeln!(
            o,
            "flowstage_serving_scoring_duration_seconds_sum{{data_type=\"{dt}\"}} {}",
            st.duration_sum_ns as f64 / 1e9
        )?;
        writeln!(
            o,
            "flowstage_serving_scoring_duration_seconds_count{{data_type=\"{dt}\"}} {count}"
        )?;
    }
    writeln!(
        o,
        "# HELP flowstage_serving_models_loading Model loads in progress."
    )?;
    writeln!(o, "# TYPE flowstage_serving_models_loading gauge")?;
    writeln!(
        o,
        "flowstage_serving_models_loading {}",
        s.data_types.values().map(|d| d.loading).sum::<u64>()
    )?;
    writeln!(
        o,
        "# HELP flowstage_serving_buffer_records Records held by the stage."
    )?;
    writeln!(o, "# TYPE flowstage_serving_buffer_records gauge")?;
    writeln!(o, "flowstage_serving_buffer_records {}", s.buffer.fill)?;
    writeln!(
        o,
        "# HELP flowstage_serving_buffer_capacity The most records the stage holds."
    )?;
    writeln!(o, "# TYPE flowstage_serving_buffer_capacity gauge")?;
    writeln!(o, "flowstage_serving_buffer_capacity {}", s.buffer.capacity)?;
    Ok(())
}
