//! The human API over HTTP (JSON), for the console and chat integrations: list approval
//! requests, read one, approve, deny. Every call but `/healthz` carries a human's token as
//! `Authorization: Bearer belay_human_...`; an agent's token is refused (403) and recorded.
//! Errors are `{"error": "...", "status": N}` with the matching status code.
//!
//! The decisions themselves are `App`'s (`approvals.rs`); this file maps HTTP onto them.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use belay_core::Secret;
use belay_store::{ApprovalStatus, Human};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::approvals::{approval_json, ApprovalError, CHANNEL_HTTP};
use crate::App;

/// The largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The routes of the human API.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/approvals", get(list))
        .route("/v1/approvals/{id}", get(one))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Serves the human API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.1, "status": self.0.as_u16() });
        (self.0, Json(body)).into_response()
    }
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        let status = match &e {
            ApprovalError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApprovalError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApprovalError::NotFound(_) => StatusCode::NOT_FOUND,
            ApprovalError::Conflict(_) => StatusCode::CONFLICT,
            ApprovalError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApprovalError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Runs `f` (which reads the state store and may wait for the audit fsync) as the human the
/// request's bearer token names.
async fn as_human<T: Send + 'static>(
    app: Arc<App>,
    headers: &HeaderMap,
    f: impl FnOnce(&App, &Human) -> Result<T, ApprovalError> + Send + 'static,
) -> Result<T, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Secret::new(t.trim()))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "send a human's token as `Authorization: Bearer belay_human_...`".to_owned(),
            )
        })?;
    tokio::task::spawn_blocking(move || {
        let human = app.authenticate_human(&token, CHANNEL_HTTP)?;
        f(&app, &human)
    })
    .await
    .map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request failed: {e}"),
        )
    })?
    .map_err(ApiError::from)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// A status, or `all`; `pending` when absent.
    status: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let statuses = match q.status.as_deref() {
        None => vec![ApprovalStatus::Pending],
        Some("all") => Vec::new(),
        Some(s) => vec![s.parse::<ApprovalStatus>().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("`{s}` is not a status: pending, approved, denied, expired, executed, abandoned or all"),
            )
        })?],
    };
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let found = as_human(app, &headers, move |app, _| app.approvals(&statuses, limit)).await?;
    Ok(Json(
        json!({ "approvals": found.iter().map(approval_json).collect::<Vec<_>>() }),
    ))
}

async fn one(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<u64>) -> ApiResult {
    let found = as_human(app, &headers, move |app, _| app.approval(id)).await?;
    Ok(Json(approval_json(&found)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteBody {
    comment: Option<String>,
    reason: Option<String>,
}

fn vote_body(body: &Bytes) -> Result<VoteBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(VoteBody::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body must be a JSON object such as {{\"comment\": \"...\"}} or {{\"reason\": \"...\"}}: {e}"),
        )
    })
}

async fn approve(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Bytes,
) -> ApiResult {
    vote(app, &headers, id, &body, true).await
}

async fn deny(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Bytes,
) -> ApiResult {
    vote(app, &headers, id, &body, false).await
}

/// An approval (`comment` optional) or a denial (`reason`, or `comment`, required).
async fn vote(
    app: Arc<App>,
    headers: &HeaderMap,
    id: u64,
    body: &Bytes,
    approve: bool,
) -> ApiResult {
    let body = vote_body(body)?;
    let done = as_human(app, headers, move |app, human| {
        if approve {
            app.approve(human, id, body.comment.as_deref(), CHANNEL_HTTP)
        } else {
            let reason = body.reason.or(body.comment).unwrap_or_default();
            app.deny(human, id, &reason, CHANNEL_HTTP)
        }
    })
    .await?;
    Ok(Json(approval_json(&done)))
}
