//! The error codes of the RPC server, the same on `POST /` (JSON-RPC) and on the GET/POST URLs.
//!
//! A JSON-RPC call answers `{"jsonrpc": "2.0", "error": {"code", "message", "data"?}, "id"}` with
//! HTTP 200; a URL answers `{"error": {"code", "message", "data"?}}` with the HTTP status below.
//! `message` says what was expected and what was found; `data`, when present, carries the same
//! facts as fields (`expected`, `found`, `hash`, …). `rpc/ERRORS.md` is this table for users.
//!
//! | code   | name                  | HTTP | meaning                                                  |
//! |--------|-----------------------|------|----------------------------------------------------------|
//! | -32700 | `parse_error`         | 400  | the body is not JSON                                     |
//! | -32600 | `invalid_request`     | 400  | not a JSON-RPC 2.0 request; empty or oversized batch     |
//! | -32601 | `method_not_found`    | 404  | unknown JSON-RPC method, or no such URL                  |
//! | -32602 | `invalid_params`      | 400  | a parameter is missing, of the wrong type or bad hex     |
//! | -32603 | `internal_error`      | 500  | the node failed to answer (not the caller's fault)       |
//! | -32001 | `bad_signature`       | 400  | the signature does not verify for the sender             |
//! | -32002 | `wrong_chain`         | 400  | the transaction is for another chain                     |
//! | -32003 | `stale_nonce`         | 400  | the nonce was already used                               |
//! | -32004 | `nonce_too_far_ahead` | 400  | the nonce is too far ahead of the account's next nonce   |
//! | -32005 | `insufficient_balance`| 400  | the balance (after pending transfers) is too small       |
//! | -32006 | `mempool_full`        | 503  | the mempool is full; try again later                     |
//! | -32007 | `duplicate`           | 400  | the same transaction is already pending                  |
//! | -32008 | `malformed_tx`        | 400  | the transaction is malformed                             |
//! | -32009 | `tx_too_large`        | 400  | the encoded transaction is over the size limit           |
//! | -32010 | `unknown_block`       | 404  | no block at that height or with that hash                |
//! | -32011 | `unknown_tx`          | 404  | no transaction with that hash                            |
//! | -32012 | `unknown_account`     | 404  | no account at that address                               |
//! | -32013 | `unknown_checkpoint`  | 404  | no stable checkpoint at that height (or none yet)        |
//! | -32014 | `wait_timeout`        | 504  | admitted, but not committed before the wait timed out    |
//! | -32015 | `unavailable`         | 503  | the node is shutting down                                |
//! | -32016 | `zero_amount`         | 400  | the transfer amount is zero                              |
//! | -32017 | `no_account`          | 400  | a transfer from an address that has no account           |
//! | -32018 | `not_validator`       | 400  | a key rotation not signed by the validator's current key |
//! | -32019 | `sender_queue_full`   | 429  | the sender has too many transactions waiting             |
//! | -32020 | `body_too_large`      | 413  | the request body is over the server's limit              |
//! | -32021 | `overloaded`          | 503  | too many requests in flight; try again later             |
//! | -32022 | `request_timeout`     | 408  | the request took longer than the server's time limit     |
//! | -32023 | `not_final`           | 409  | committed, but no stable checkpoint covers it yet; retry |
//! | -32024 | `proof_unavailable`   | 503  | this node cannot build that proof (ask another node)     |

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::{Value, json};
use tetrad_consensus::Digest;

use crate::api::{InternalError, SubmitError};

/// One row of the error-code table (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    ParseError,
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    InternalError,
    BadSignature,
    WrongChain,
    StaleNonce,
    NonceTooFarAhead,
    InsufficientBalance,
    MempoolFull,
    Duplicate,
    MalformedTx,
    TxTooLarge,
    UnknownBlock,
    UnknownTx,
    UnknownAccount,
    UnknownCheckpoint,
    WaitTimeout,
    Unavailable,
    ZeroAmount,
    NoAccount,
    NotValidator,
    SenderQueueFull,
    BodyTooLarge,
    Overloaded,
    RequestTimeout,
    NotFinal,
    ProofUnavailable,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 29] = [
        ErrorCode::ParseError,
        ErrorCode::InvalidRequest,
        ErrorCode::MethodNotFound,
        ErrorCode::InvalidParams,
        ErrorCode::InternalError,
        ErrorCode::BadSignature,
        ErrorCode::WrongChain,
        ErrorCode::StaleNonce,
        ErrorCode::NonceTooFarAhead,
        ErrorCode::InsufficientBalance,
        ErrorCode::MempoolFull,
        ErrorCode::Duplicate,
        ErrorCode::MalformedTx,
        ErrorCode::TxTooLarge,
        ErrorCode::UnknownBlock,
        ErrorCode::UnknownTx,
        ErrorCode::UnknownAccount,
        ErrorCode::UnknownCheckpoint,
        ErrorCode::WaitTimeout,
        ErrorCode::Unavailable,
        ErrorCode::ZeroAmount,
        ErrorCode::NoAccount,
        ErrorCode::NotValidator,
        ErrorCode::SenderQueueFull,
        ErrorCode::BodyTooLarge,
        ErrorCode::Overloaded,
        ErrorCode::RequestTimeout,
        ErrorCode::NotFinal,
        ErrorCode::ProofUnavailable,
    ];

    /// The number on the wire.
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::InternalError => -32603,
            ErrorCode::BadSignature => -32001,
            ErrorCode::WrongChain => -32002,
            ErrorCode::StaleNonce => -32003,
            ErrorCode::NonceTooFarAhead => -32004,
            ErrorCode::InsufficientBalance => -32005,
            ErrorCode::MempoolFull => -32006,
            ErrorCode::Duplicate => -32007,
            ErrorCode::MalformedTx => -32008,
            ErrorCode::TxTooLarge => -32009,
            ErrorCode::UnknownBlock => -32010,
            ErrorCode::UnknownTx => -32011,
            ErrorCode::UnknownAccount => -32012,
            ErrorCode::UnknownCheckpoint => -32013,
            ErrorCode::WaitTimeout => -32014,
            ErrorCode::Unavailable => -32015,
            ErrorCode::ZeroAmount => -32016,
            ErrorCode::NoAccount => -32017,
            ErrorCode::NotValidator => -32018,
            ErrorCode::SenderQueueFull => -32019,
            ErrorCode::BodyTooLarge => -32020,
            ErrorCode::Overloaded => -32021,
            ErrorCode::RequestTimeout => -32022,
            ErrorCode::NotFinal => -32023,
            ErrorCode::ProofUnavailable => -32024,
        }
    }

    /// The code for a number from the wire (for clients).
    pub fn from_code(code: i64) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|candidate| candidate.code() == code)
    }

    /// A short snake_case name: the `outcome` label of request metrics, and the table's name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::ParseError => "parse_error",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::MethodNotFound => "method_not_found",
            ErrorCode::InvalidParams => "invalid_params",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::WrongChain => "wrong_chain",
            ErrorCode::StaleNonce => "stale_nonce",
            ErrorCode::NonceTooFarAhead => "nonce_too_far_ahead",
            ErrorCode::InsufficientBalance => "insufficient_balance",
            ErrorCode::MempoolFull => "mempool_full",
            ErrorCode::Duplicate => "duplicate",
            ErrorCode::MalformedTx => "malformed_tx",
            ErrorCode::TxTooLarge => "tx_too_large",
            ErrorCode::UnknownBlock => "unknown_block",
            ErrorCode::UnknownTx => "unknown_tx",
            ErrorCode::UnknownAccount => "unknown_account",
            ErrorCode::UnknownCheckpoint => "unknown_checkpoint",
            ErrorCode::WaitTimeout => "wait_timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ZeroAmount => "zero_amount",
            ErrorCode::NoAccount => "no_account",
            ErrorCode::NotValidator => "not_validator",
            ErrorCode::SenderQueueFull => "sender_queue_full",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::NotFinal => "not_final",
            ErrorCode::ProofUnavailable => "proof_unavailable",
        }
    }

    /// The HTTP status a URL answers with (JSON-RPC answers 200 unless the request never reached
    /// the JSON-RPC layer: body too large, overloaded, timed out).
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorCode::ParseError
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidParams
            | ErrorCode::BadSignature
            | ErrorCode::WrongChain
            | ErrorCode::StaleNonce
            | ErrorCode::NonceTooFarAhead
            | ErrorCode::InsufficientBalance
            | ErrorCode::Duplicate
            | ErrorCode::MalformedTx
            | ErrorCode::TxTooLarge
            | ErrorCode::ZeroAmount
            | ErrorCode::NoAccount
            | ErrorCode::NotValidator => StatusCode::BAD_REQUEST,
            ErrorCode::SenderQueueFull => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::MethodNotFound
            | ErrorCode::UnknownBlock
            | ErrorCode::UnknownTx
            | ErrorCode::UnknownAccount
            | ErrorCode::UnknownCheckpoint => StatusCode::NOT_FOUND,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::NotFinal => StatusCode::CONFLICT,
            ErrorCode::MempoolFull
            | ErrorCode::Unavailable
            | ErrorCode::Overloaded
            | ErrorCode::ProofUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::WaitTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// An error as the server answers it: a code, a message that says what was expected and what was
/// found, and optional structured `data`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message} ({})", code.code())]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: String,
    pub data: Option<Value>,
}

impl Serialize for RpcError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = if self.data.is_some() { 3 } else { 2 };
        let mut object = serializer.serialize_struct("RpcError", fields)?;
        object.serialize_field("code", &self.code.code())?;
        object.serialize_field("message", &self.message)?;
        if let Some(data) = &self.data {
            object.serialize_field("data", data)?;
        }
        object.end()
    }
}

/// Marks a response whose error body this crate wrote, with its code (for request metrics, and
/// so that the fallback middleware leaves it alone).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ErrorMarker(pub ErrorCode);

/// Marks a response whose error status is the answer itself (`/health` when unhealthy): the
/// outermost middleware leaves it as it is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Verbatim;

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into(), data: None }
    }

    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }

    pub fn parse_error(message: impl Into<String>) -> RpcError {
        RpcError::new(ErrorCode::ParseError, message)
    }

    pub fn invalid_request(message: impl Into<String>) -> RpcError {
        RpcError::new(ErrorCode::InvalidRequest, message)
    }

    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(ErrorCode::InvalidParams, message)
    }

    pub fn internal(message: impl Into<String>) -> RpcError {
        RpcError::new(ErrorCode::InternalError, message)
    }

    pub fn body_too_large(body_bytes_max: usize) -> RpcError {
        RpcError::new(
            ErrorCode::BodyTooLarge,
            format!("request body is larger than the limit of {body_bytes_max} bytes"),
        )
        .with_data(json!({ "max": body_bytes_max }))
    }

    /// The refusal of a submitted transaction whose hash is `hash`.
    pub fn from_submit(error: SubmitError, hash: &Digest) -> RpcError {
        let message = error.to_string();
        let (code, data) = match error {
            SubmitError::Malformed(detail) => (ErrorCode::MalformedTx, Some(json!({ "detail": detail }))),
            SubmitError::TooLarge { size, max } => {
                (ErrorCode::TxTooLarge, Some(json!({ "size": size, "max": max })))
            }
            SubmitError::ZeroAmount => (ErrorCode::ZeroAmount, None),
            SubmitError::WrongChain { expected, found } => {
                (ErrorCode::WrongChain, Some(json!({ "expected": expected, "found": found })))
            }
            SubmitError::BadSignature { from } => (ErrorCode::BadSignature, Some(json!({ "from": from }))),
            SubmitError::StaleNonce { expected, found } => {
                (ErrorCode::StaleNonce, Some(json!({ "expected": expected, "found": found })))
            }
            SubmitError::NonceTooFarAhead { expected, found, max_ahead } => (
                ErrorCode::NonceTooFarAhead,
                Some(json!({ "expected": expected, "found": found, "max_ahead": max_ahead })),
            ),
            SubmitError::InsufficientBalance { balance, amount } => {
                (ErrorCode::InsufficientBalance, Some(json!({ "balance": balance, "amount": amount })))
            }
            SubmitError::NoAccount { from } => (ErrorCode::NoAccount, Some(json!({ "from": from }))),
            SubmitError::NotValidator { from, validator } => {
                (ErrorCode::NotValidator, Some(json!({ "from": from, "validator": validator })))
            }
            SubmitError::SenderQueueFull { from, pending, max } => {
                (ErrorCode::SenderQueueFull, Some(json!({ "from": from, "pending": pending, "max": max })))
            }
            // The hash lets a client that resubmitted after losing the answer look the first
            // submission up.
            SubmitError::Duplicate => (ErrorCode::Duplicate, Some(json!({ "hash": hash }))),
            SubmitError::MempoolFull { txs, bytes } => {
                (ErrorCode::MempoolFull, Some(json!({ "txs": txs, "bytes": bytes })))
            }
            SubmitError::Unavailable => (ErrorCode::Unavailable, None),
            SubmitError::Busy { waiting, max } => {
                (ErrorCode::Overloaded, Some(json!({ "waiting": waiting, "max": max })))
            }
        };
        RpcError { code, message, data }
    }

    /// The body a URL answers with: `{"error": {...}}`.
    pub fn to_body(&self) -> Value {
        json!({ "error": self })
    }

    /// The response a URL answers with, at this error's HTTP status.
    pub(crate) fn into_response_with_status(self, status: StatusCode) -> Response {
        let mut response = (status, axum::Json(self.to_body())).into_response();
        response.extensions_mut().insert(ErrorMarker(self.code));
        response
    }
}

impl From<InternalError> for RpcError {
    fn from(error: InternalError) -> RpcError {
        tracing::warn!(%error, "rpc query failed inside the node");
        RpcError::internal(format!("internal error: {error}"))
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let status = self.code.http_status();
        self.into_response_with_status(status)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_and_names_are_unique_and_round_trip() {
        let codes: HashSet<i64> = ErrorCode::ALL.iter().map(|code| code.code()).collect();
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|code| code.name()).collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
        assert_eq!(ErrorCode::from_code(0), None);
    }

    /// `ERRORS.md` and the table in these docs must list every code with its name and status.
    #[test]
    fn the_markdown_table_lists_every_code() {
        let markdown = include_str!("../ERRORS.md");
        let module = include_str!("errors.rs");
        for code in ErrorCode::ALL {
            let row = format!("| {} | `{}`", code.code(), code.name());
            let line = markdown.lines().find(|line| line.starts_with(&row));
            let line = line.unwrap_or_else(|| panic!("ERRORS.md has no row starting {row:?}"));
            let status = code.http_status().as_u16().to_string();
            assert!(line.contains(&status), "ERRORS.md row {line:?} does not say HTTP {status}");
            let doc_row = format!("//! | {} | `{}`", code.code(), code.name());
            assert!(
                module.lines().any(|line| line.starts_with(&doc_row)),
                "the errors.rs docs have no row {doc_row:?}"
            );
        }
    }

    #[test]
    fn serializes_code_as_a_number_and_omits_absent_data() {
        let error = RpcError::invalid_params("hash: expected 64 hex digits, found 10");
        assert_eq!(
            serde_json::to_value(&error).expect("serialize"),
            json!({ "code": -32602, "message": "hash: expected 64 hex digits, found 10" })
        );
        let error = RpcError::from_submit(SubmitError::StaleNonce { expected: 4, found: 2 }, &Digest::ZERO);
        assert_eq!(error.code, ErrorCode::StaleNonce);
        assert_eq!(error.data, Some(json!({ "expected": 4, "found": 2 })));
    }
}
