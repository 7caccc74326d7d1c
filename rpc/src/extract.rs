//! Extractors whose rejections are JSON errors with this crate's codes, never axum's plain-text
//! defaults; and the parsing of JSON bodies and parameters with messages that name the field.

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, RawPathParams, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::NodeApi;
use crate::errors::{ErrorCode, RpcError};
use crate::state::AppState;

/// `Path<T>` with JSON rejections: `height: expected an unsigned integer, found `abc``.
pub(crate) struct UrlPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for UrlPath<T> {
    type Rejection = RpcError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<UrlPath<T>, RpcError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(UrlPath(value)),
            Err(rejection) => {
                // A custom error (bad hex) comes without its key: name the only parameter.
                let keys: Vec<String> = match RawPathParams::from_request_parts(parts, state).await {
                    Ok(params) => params.iter().map(|(key, _)| key.to_owned()).collect(),
                    Err(_) => Vec::new(),
                };
                let only_key = if let [key] = keys.as_slice() { Some(key.as_str()) } else { None };
                Err(path_rejection(rejection, only_key))
            }
        }
    }
}

fn path_rejection(rejection: PathRejection, only_key: Option<&str>) -> RpcError {
    let status = rejection.status();
    let message = match rejection {
        PathRejection::FailedToDeserializePathParams(error) => match error.into_kind() {
            ErrorKind::ParseErrorAtKey { key, value, expected_type } => {
                format!("{key}: expected {}, found `{}`", describe_type(expected_type), clip(&value))
            }
            ErrorKind::DeserializeError { key, value: _, message } => format!("{key}: {message}"),
            ErrorKind::InvalidUtf8InPathParam { key } => format!("{key}: not valid UTF-8"),
            ErrorKind::Message(message) => match only_key {
                Some(key) => format!("{key}: {message}"),
                None => message,
            },
            other => other.to_string(),
        },
        other => other.body_text(),
    };
    if status.is_server_error() { RpcError::internal(message) } else { RpcError::invalid_params(message) }
}

/// `Query<T>` with JSON rejections.
pub(crate) struct UrlQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for UrlQuery<T> {
    type Rejection = RpcError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<UrlQuery<T>, RpcError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(UrlQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> RpcError {
    let text = rejection.body_text();
    // axum prefixes the serde error (already `field: what was wrong`) with its own words.
    let detail = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
    RpcError::invalid_params(format!("query string: {detail}"))
}

/// A JSON body parsed into `T`: `-32700` if it is not JSON, `-32602` if it does not fit `T`.
pub(crate) struct JsonBody<T>(pub T);

impl<A: NodeApi, T: DeserializeOwned> FromRequest<AppState<A>> for JsonBody<T> {
    type Rejection = RpcError;

    async fn from_request(request: Request, state: &AppState<A>) -> Result<JsonBody<T>, RpcError> {
        let bytes = body_within(request, state).await?;
        parse_json_body(&bytes).map(JsonBody)
    }
}

/// The whole body, read within [`crate::Limits::body_timeout_ms`]: a client that sends a body
/// slowly holds a permit of the general budget for that long at most, then gets 408.
pub(crate) async fn body_within<A: NodeApi>(
    request: Request,
    state: &AppState<A>,
) -> Result<Bytes, RpcError> {
    match tokio::time::timeout(state.limits.body_timeout(), Bytes::from_request(request, state)).await {
        Ok(body) => read_body(body, state.limits.body_bytes_max),
        Err(_) => Err(RpcError::new(
            ErrorCode::RequestTimeout,
            format!("the request body did not arrive within {} ms", state.limits.body_timeout_ms),
        )
        .with_data(serde_json::json!({ "body_timeout_ms": state.limits.body_timeout_ms }))),
    }
}

/// The body, or the error for a body that could not be read (413 when over the limit).
pub(crate) fn read_body(
    body: Result<Bytes, BytesRejection>,
    body_bytes_max: usize,
) -> Result<Bytes, RpcError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            RpcError::body_too_large(body_bytes_max)
        } else {
            RpcError::invalid_request(format!("could not read the request body: {}", rejection.body_text()))
        }
    })
}

/// Parses a whole body as `T`, naming the path of a field that does not fit.
pub(crate) fn parse_json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        json_error(&path, error.into_inner())
    })?;
    deserializer.end().map_err(|error| json_error(".", error))?;
    Ok(value)
}

fn json_error(path: &str, error: serde_json::Error) -> RpcError {
    match error.classify() {
        serde_json::error::Category::Data => RpcError::invalid_params(with_path(path, &error)),
        serde_json::error::Category::Io
        | serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof => {
            RpcError::parse_error(format!("body is not valid JSON: {error}"))
        }
    }
}

/// Parses named parameters (a JSON object) as `T`: `-32602` naming the parameter when it does not
/// fit, e.g. `hash: expected 64 hex digits, found 10`.
pub(crate) fn parse_params<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    if params.is_array() {
        return Err(RpcError::invalid_params(
            "params: expected an object of named parameters, found an array \
             (positional parameters are not supported)",
        ));
    }
    serde_path_to_error::deserialize(params).map_err(|error| {
        let path = error.path().to_string();
        RpcError::invalid_params(with_path(&path, error.inner()))
    })
}

fn with_path(path: &str, error: &impl std::fmt::Display) -> String {
    if path == "." || path.is_empty() { error.to_string() } else { format!("{path}: {error}") }
}

/// Names a Rust type the way a curl user would.
fn describe_type(expected_type: &str) -> String {
    match expected_type {
        "u64" | "u32" | "u16" | "usize" => format!("an unsigned integer ({expected_type})"),
        other => format!("a {other}"),
    }
}

/// The first 80 characters of text a client sent, for an error message.
pub(crate) fn clip(text: &str) -> String {
    const CHARS_MAX: usize = 80;
    let mut clipped: String = text.chars().take(CHARS_MAX).collect();
    if text.chars().nth(CHARS_MAX).is_some() {
        clipped.push('…');
    }
    clipped
}

/// The kind of a JSON value, for messages: "an array", "a string", …
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
