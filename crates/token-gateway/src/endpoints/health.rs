//! `GET /healthz`: 200 while the token service's `grpc.health.v1` says SERVING, else 503.
//! The gateway holds no state, so its readiness is the token service's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::response::oauth_json;
use crate::upstream::Upstream;

pub async fn handle(State(upstream): State<Upstream>) -> Response {
    let (status, token_service) = match upstream.health().await {
        Some(ServingStatus::Serving) => (StatusCode::OK, "SERVING"),
        Some(other) => (StatusCode::SERVICE_UNAVAILABLE, other.as_str_name()),
        None => (StatusCode::SERVICE_UNAVAILABLE, "UNREACHABLE"),
    };
    oauth_json(
        status,
        &serde_json::json!({ "token_service": token_service }),
    )
}
