//! The outermost middleware: counts every request with `record_request`, and turns any error
//! response this crate did not write (axum's 405, tower-http's 413 on a `Content-Length` over the
//! limit, …) into the JSON error shape, so no client ever sees a plain-text error.

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::api::NodeApi;
use crate::errors::{ErrorCode, ErrorMarker, RpcError, Verbatim};
use crate::jsonrpc::{Recorded, error_envelope};
use crate::state::AppState;

/// The metrics label of requests that matched no route: a client cannot make up new labels.
pub(crate) const UNMATCHED_LABEL: &str = "unmatched";
/// The outcome of a `/health` request answered 503.
pub(crate) const UNHEALTHY_OUTCOME: &str = "unhealthy";

pub(crate) async fn finish<A: NodeApi>(
    State(state): State<AppState<A>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let method = request.method().clone();
    let mut response = next.run(request).await;
    let status = response.status();
    let verbatim = response.extensions().get::<Verbatim>().is_some();
    let code = match response.extensions().get::<ErrorMarker>() {
        Some(ErrorMarker(code)) => Some(*code),
        None if verbatim => None,
        None if status.is_client_error() || status.is_server_error() => {
            let error = replacement(&state, &method, status);
            let code = error.code;
            let jsonrpc = method == Method::POST && route.as_deref() == Some("/");
            response = rewrite(jsonrpc, status, error);
            Some(code)
        }
        None => None,
    };
    if response.extensions().get::<Recorded>().is_none() {
        let label = match &route {
            Some(route) => format!("{} {route}", method_label(&method)),
            None => UNMATCHED_LABEL.to_owned(),
        };
        let outcome = if verbatim && !status.is_success() {
            UNHEALTHY_OUTCOME
        } else {
            code.map_or("ok", ErrorCode::name)
        };
        state.api.record_request(&label, outcome);
    }
    response
}

/// Known methods by name, any other as `OTHER` (bounded metric labels).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    }
}

/// The JSON error for an error response that a layer or axum itself produced.
fn replacement<A: NodeApi>(state: &AppState<A>, method: &Method, status: StatusCode) -> RpcError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => RpcError::body_too_large(state.limits.body_bytes_max),
        StatusCode::REQUEST_TIMEOUT => {
            RpcError::new(ErrorCode::RequestTimeout, "the request took longer than the server's time limit")
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            RpcError::new(ErrorCode::Overloaded, "the server is busy; try again later")
        }
        // axum adds the `Allow` header to the final response, outside this middleware.
        StatusCode::METHOD_NOT_ALLOWED => RpcError::invalid_request(format!(
            "method {method} is not allowed on this URL (the Allow header lists those that are)"
        )),
        StatusCode::NOT_FOUND => RpcError::new(ErrorCode::MethodNotFound, "no such URL"),
        status if status.is_server_error() => RpcError::internal(format!("internal error ({status})")),
        status => RpcError::invalid_request(format!("bad request ({status})")),
    }
}

/// A JSON response at the same status.
fn rewrite(jsonrpc: bool, status: StatusCode, error: RpcError) -> Response {
    let body = if jsonrpc { error_envelope(Value::Null, &error) } else { error.to_body() };
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(ErrorMarker(error.code));
    response
}
