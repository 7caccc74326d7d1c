//! Entry points for the fuzz targets (`fuzz/`) and the fuzz run of the test suite: every parser
//! of bytes a client sends, without a node behind it. Not an API.

use axum::extract::Query;
use axum::http::Uri;
use serde_json::Value;
use tetrad_consensus::{Digest, Height};
use tetrad_ledger::{Address, Tx};

use crate::limits::BATCH_MAX_DEFAULT;

/// A `POST /` body: JSON, the JSON-RPC envelope of each call (or each call of a batch), and
/// each method's parameters.
pub fn jsonrpc_body(bytes: &[u8]) {
    crate::jsonrpc::check_body(bytes, BATCH_MAX_DEFAULT);
}

/// A `POST /txs` body, and the same bytes as a query string and as each kind of path
/// parameter (hash, address, height).
pub fn rest_body(bytes: &[u8]) {
    let _ = crate::extract::parse_json_body::<Tx>(bytes);
    let text = String::from_utf8_lossy(bytes);
    for parse in [parse_digest, parse_address, parse_height] {
        parse(&text);
    }
    if let Ok(uri) = format!("/txs?{text}").parse::<Uri>() {
        let _ = Query::<crate::rest::SubmitQuery>::try_from_uri(&uri);
        let _ = Query::<crate::rest::HeightQuery>::try_from_uri(&uri);
    }
}

fn parse_digest(text: &str) {
    let _ = serde_json::from_value::<Digest>(Value::String(text.to_owned()));
}

fn parse_address(text: &str) {
    let _ = serde_json::from_value::<Address>(Value::String(text.to_owned()));
}

fn parse_height(text: &str) {
    let _ = serde_json::from_value::<Height>(Value::String(text.to_owned()));
}
