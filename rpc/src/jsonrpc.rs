//! JSON-RPC 2.0 on `POST /`: single calls, batches and notifications, with named parameters.
//!
//! Every answer that reaches this layer is HTTP 200 (204 when only notifications were sent);
//! errors are in the JSON-RPC `error` member with the codes of [`crate::errors`].

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tetrad_consensus::{Digest, Height};
use tetrad_ledger::{Address, Tx};

use crate::api::{BlockRef, NodeApi};
use crate::budget::HeldPermit;
use crate::calls::{self, Submitted};
use crate::errors::{ErrorMarker, RpcError};
use crate::extract::{body_within, clip, json_kind, parse_params};
use crate::state::AppState;

/// The methods, as `method_not_found` lists them.
pub const METHODS: [&str; 12] = [
    "submit_transaction",
    "submit_transactions",
    "get_transaction",
    "get_block",
    "get_account",
    "get_checkpoint",
    "get_validators",
    "get_status",
    "prove_transaction",
    "prove_block",
    "prove_account",
    "prove_validators",
];

/// The metrics label of calls that name no known method (invalid requests, parse errors, unknown
/// methods): a client cannot make up new labels.
pub const INVALID_CALL_LABEL: &str = "jsonrpc";

/// Marks a response whose calls this layer already counted with `record_request`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recorded;

pub(crate) async fn handle<A: NodeApi>(State(state): State<AppState<A>>, request: Request) -> Response {
    let held = request.extensions().get::<HeldPermit>().cloned().unwrap_or_default();
    let bytes = match body_within(request, &state).await {
        Ok(bytes) => bytes,
        Err(error) => {
            // Counted by the middleware, under the route.
            let status = error.code.http_status();
            let mut response = (status, Json(error_envelope(Value::Null, &error))).into_response();
            response.extensions_mut().insert(ErrorMarker(error.code));
            return response;
        }
    };
    let mut response = match answer(&state, &bytes, &held).await {
        Some(answer) => (StatusCode::OK, Json(answer)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    response.extensions_mut().insert(Recorded);
    response
}

/// The answer to a body: one response, an array of them, or nothing (only notifications).
async fn answer<A: NodeApi>(state: &AppState<A>, bytes: &[u8], held: &HeldPermit) -> Option<Value> {
    let request = match serde_json::from_slice::<Value>(bytes) {
        Ok(request) => request,
        Err(error) => {
            let error = RpcError::parse_error(format!("body is not valid JSON: {error}"));
            return Some(refuse(state, &error));
        }
    };
    let Value::Array(calls) = request else {
        return call(state, request, held).await;
    };
    if calls.is_empty() {
        let error = RpcError::invalid_request("empty batch: a batch must hold at least one request");
        return Some(refuse(state, &error));
    }
    if calls.len() > state.limits.batch_max {
        let error = RpcError::invalid_request(format!(
            "batch of {} requests is over the limit of {}",
            calls.len(),
            state.limits.batch_max
        ))
        .with_data(json!({ "found": calls.len(), "max": state.limits.batch_max }));
        return Some(refuse(state, &error));
    }
    let answers =
        futures::future::join_all(calls.into_iter().map(|request| call(state, request, held))).await;
    let answers: Vec<Value> = answers.into_iter().flatten().collect();
    if answers.is_empty() { None } else { Some(Value::Array(answers)) }
}

/// Counts and answers an error that belongs to no call.
fn refuse<A: NodeApi>(state: &AppState<A>, error: &RpcError) -> Value {
    state.api.record_request(INVALID_CALL_LABEL, error.code.name());
    error_envelope(Value::Null, error)
}

/// A request that has the shape JSON-RPC 2.0 demands.
struct Call {
    /// `None` for a notification, which gets no response.
    id: Option<Value>,
    method: String,
    params: Value,
}

impl Call {
    /// Checks the shape; on failure returns the id to answer with, and the error.
    fn from_value(request: Value) -> Result<Call, (Value, RpcError)> {
        let Value::Object(mut members) = request else {
            let message = format!("a request must be a JSON object, found {}", json_kind(&request));
            return Err((Value::Null, RpcError::invalid_request(message)));
        };
        let id = members.remove("id");
        let answer_id = match &id {
            None => Value::Null,
            Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => id.clone(),
            Some(other) => {
                let message = format!("id: expected a string, a number or null, found {}", json_kind(other));
                return Err((Value::Null, RpcError::invalid_request(message)));
            }
        };
        let refuse = |message: String| Err((answer_id.clone(), RpcError::invalid_request(message)));
        match members.get("jsonrpc") {
            Some(Value::String(version)) if version == "2.0" => {}
            Some(other) => {
                return refuse(format!("jsonrpc: expected \"2.0\", found {}", clip(&other.to_string())));
            }
            None => return refuse("jsonrpc: missing; expected \"2.0\"".to_owned()),
        }
        let method = match members.remove("method") {
            Some(Value::String(method)) => method,
            Some(other) => return refuse(format!("method: expected a string, found {}", json_kind(&other))),
            None => return refuse("method: missing".to_owned()),
        };
        let params = match members.remove("params") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(params @ (Value::Object(_) | Value::Array(_))) => params,
            Some(other) => {
                return refuse(format!("params: expected an object, found {}", json_kind(&other)));
            }
        };
        Ok(Call { id, method, params })
    }
}

/// Answers one call (`None` for a notification), counting it.
async fn call<A: NodeApi>(state: &AppState<A>, request: Value, held: &HeldPermit) -> Option<Value> {
    let call = match Call::from_value(request) {
        Ok(call) => call,
        Err((id, error)) => {
            state.api.record_request(INVALID_CALL_LABEL, error.code.name());
            return Some(error_envelope(id, &error));
        }
    };
    let result = dispatch(state, &call.method, call.params, held).await;
    let label = METHODS.iter().find(|known| **known == call.method).copied().unwrap_or(INVALID_CALL_LABEL);
    state.api.record_request(label, result.as_ref().map_or_else(|error| error.code.name(), |_| "ok"));
    let id = call.id?;
    Some(match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "result": result, "id": id }),
        Err(error) => error_envelope(id, &error),
    })
}

/// `{"jsonrpc": "2.0", "error": {...}, "id": id}`.
pub(crate) fn error_envelope(id: Value, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "error": error, "id": id })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitParams {
    tx: Tx,
    #[serde(default)]
    wait: bool,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HashParams {
    hash: Digest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockParams {
    height: Option<Height>,
    hash: Option<Digest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressParams {
    address: Address,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeightParams {
    height: Option<Height>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinksParams {
    height: Option<Height>,
    after: Option<Height>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequiredHeightParams {
    height: Height,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchSubmitParams {
    txs: Vec<Tx>,
}

async fn dispatch<A: NodeApi>(
    state: &AppState<A>,
    method: &str,
    params: Value,
    held: &HeldPermit,
) -> Result<Value, RpcError> {
    match method {
        "submit_transaction" => {
            let SubmitParams { tx, wait, timeout_ms } = parse_params(params)?;
            match calls::submit(state, tx, wait, timeout_ms, held).await? {
                Submitted::Pending(view) => to_value(&view),
                Submitted::Committed(view) => to_value(&view),
            }
        }
        "submit_transactions" => {
            let BatchSubmitParams { txs } = parse_params(params)?;
            to_value(&calls::submit_batch(state, txs).await?)
        }
        "get_transaction" => {
            let HashParams { hash } = parse_params(params)?;
            to_value(&calls::tx(state, &hash)?)
        }
        "get_block" => {
            let at = match parse_params(params)? {
                BlockParams { height: None, hash: None } => BlockRef::Latest,
                BlockParams { height: Some(height), hash: None } => BlockRef::Height(height),
                BlockParams { height: None, hash: Some(hash) } => BlockRef::Hash(hash),
                BlockParams { height: Some(_), hash: Some(_) } => {
                    return Err(RpcError::invalid_params(
                        "height and hash: give one of them (or neither, for the latest block), not both",
                    ));
                }
            };
            to_value(&calls::block(state, at)?)
        }
        "get_account" => {
            let AddressParams { address } = parse_params(params)?;
            to_value(&calls::account(state, &address)?)
        }
        "get_checkpoint" => {
            let HeightParams { height } = parse_params(params)?;
            to_value(&calls::checkpoint(state, height)?)
        }
        "get_validators" => {
            let HeightParams { height } = parse_params(params)?;
            to_value(&calls::validators(state, height)?)
        }
        "get_status" => {
            let NoParams {} = parse_params(params)?;
            to_value(&calls::status(state))
        }
        "prove_transaction" => {
            let HashParams { hash } = parse_params(params)?;
            to_value(&calls::prove_tx(state, &hash)?)
        }
        "prove_block" => {
            let RequiredHeightParams { height } = parse_params(params)?;
            to_value(&calls::prove_block(state, height)?)
        }
        "prove_account" => {
            let AddressParams { address } = parse_params(params)?;
            to_value(&calls::prove_account(state, &address)?)
        }
        "prove_validators" => {
            let LinksParams { height, after } = parse_params(params)?;
            to_value(&calls::prove_validators(state, height, after)?)
        }
        unknown => Err(RpcError::new(
            crate::errors::ErrorCode::MethodNotFound,
            format!("unknown method `{}`; the methods are {}", clip(unknown), METHODS.join(", ")),
        )),
    }
}

/// Parses a call's parameters as its method would, without calling the node (the fuzz
/// targets' way into every parameter parser).
pub(crate) fn check_params(method: &str, params: Value) -> Result<(), RpcError> {
    match method {
        "submit_transaction" => parse_params::<SubmitParams>(params).map(drop),
        "submit_transactions" => parse_params::<BatchSubmitParams>(params).map(drop),
        "get_transaction" | "prove_transaction" => parse_params::<HashParams>(params).map(drop),
        "prove_block" => parse_params::<RequiredHeightParams>(params).map(drop),
        "prove_account" => parse_params::<AddressParams>(params).map(drop),
        "prove_validators" => parse_params::<LinksParams>(params).map(drop),
        "get_block" => parse_params::<BlockParams>(params).map(drop),
        "get_account" => parse_params::<AddressParams>(params).map(drop),
        "get_checkpoint" | "get_validators" => parse_params::<HeightParams>(params).map(drop),
        "get_status" => parse_params::<NoParams>(params).map(drop),
        _ => Ok(()),
    }
}

/// Parses a `POST /` body as the server does, down to every call's parameters.
pub(crate) fn check_body(bytes: &[u8], batch_max: usize) {
    let Ok(request) = serde_json::from_slice::<Value>(bytes) else { return };
    let calls = match request {
        Value::Array(calls) => calls.into_iter().take(batch_max).collect(),
        other => vec![other],
    };
    for request in calls {
        if let Ok(call) = Call::from_value(request) {
            let _ = check_params(&call.method, call.params);
        }
    }
}

fn to_value(value: &impl serde::Serialize) -> Result<Value, RpcError> {
    serde_json::to_value(value)
        .map_err(|error| RpcError::internal(format!("cannot encode the result: {error}")))
}
