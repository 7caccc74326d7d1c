//! JSON-RPC 2.0 on `POST /`: every method, notifications, batches and the error table.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tetrad_rpc::Limits;
use tetrad_rpc::api::SubmitError;

use crate::support::{assert_error, call, hex64, post, result, rpc, setup, to_json};

#[tokio::test]
async fn every_query_method_answers_the_node_view() {
    let (fixture, _node, app) = setup(Limits::default());
    assert_eq!(result(&app, "get_status", json!({})).await, to_json(&fixture.status));
    assert_eq!(result(&app, "get_block", json!({})).await, to_json(&fixture.block));
    assert_eq!(result(&app, "get_block", json!({ "height": 0 })).await, to_json(&fixture.genesis));
    assert_eq!(
        result(&app, "get_block", json!({ "hash": fixture.block.hash })).await,
        to_json(&fixture.block)
    );
    let tx = &fixture.txs[1];
    assert_eq!(result(&app, "get_transaction", json!({ "hash": tx.hash })).await, to_json(tx));
    let account = &fixture.accounts[2];
    assert_eq!(result(&app, "get_account", json!({ "address": account.address })).await, to_json(account));
    assert_eq!(result(&app, "get_checkpoint", json!({})).await, to_json(&fixture.checkpoint));
    assert_eq!(result(&app, "get_checkpoint", json!({ "height": 1 })).await, to_json(&fixture.checkpoint));
    assert_eq!(result(&app, "get_validators", json!({})).await, to_json(&fixture.validators));
    let validators = result(&app, "get_validators", json!({ "height": 1 })).await;
    assert_eq!(validators["height"], 1);
    assert_eq!(validators["validators"], to_json(&fixture.validators.validators));
    // Absent and null params mean no params.
    let response = rpc(&app, json!({ "jsonrpc": "2.0", "method": "get_status", "id": "s" })).await;
    assert_eq!(response["id"], "s");
    assert_eq!(response["result"], to_json(&fixture.status));
    let response =
        rpc(&app, json!({ "jsonrpc": "2.0", "method": "get_status", "params": null, "id": 7 })).await;
    assert_eq!(response["result"], to_json(&fixture.status));
}

#[tokio::test]
async fn submit_without_wait_answers_pending() {
    let (fixture, node, app) = setup(Limits::default());
    let answer = result(&app, "submit_transaction", json!({ "tx": fixture.fresh_tx })).await;
    assert_eq!(answer, json!({ "hash": fixture.fresh_tx.hash(), "status": "pending" }));
    assert_eq!(node.state().submitted, vec![fixture.fresh_tx.clone()]);
    assert!(node.state().waits.is_empty());
}

#[tokio::test]
async fn submit_many_answers_one_entry_per_transaction() {
    let (fixture, node, app) = setup(Limits::default());
    let txs = vec![fixture.fresh_tx.clone(), fixture.fresh_tx.clone()];
    let answer = result(&app, "submit_transactions", json!({ "txs": txs })).await;
    let hash = fixture.fresh_tx.hash();
    assert_eq!(answer, json!([{ "hash": hash, "status": "pending" }, { "hash": hash, "status": "pending" }]));
    assert_eq!(node.state().submitted.len(), 2);
    // Refusals are per transaction, with the same codes as single submissions.
    node.state().refuse_with = Some(SubmitError::StaleNonce { expected: 3, found: 0 });
    let answer = result(&app, "submit_transactions", json!({ "txs": [fixture.fresh_tx] })).await;
    assert_eq!(answer[0]["error"]["code"], -32003, "{answer}");
    // More than the limit per call is refused as a whole.
    let many: Vec<_> = (0..1001).map(|_| fixture.fresh_tx.clone()).collect();
    let error = call(&app, "submit_transactions", json!({ "txs": many })).await;
    assert_error(&error["error"], -32602, "at most 1000 per call");
}

#[tokio::test]
async fn submit_with_wait_answers_the_committed_view_and_caps_the_timeout() {
    let (fixture, node, app) = setup(Limits::default());
    let hash = fixture.fresh_tx.hash();
    let view = result(&app, "submit_transaction", json!({ "tx": fixture.fresh_tx, "wait": true })).await;
    assert_eq!(view["hash"], json!(hash));
    assert_eq!(view["status"], "committed");
    assert_eq!(view["height"], 2);
    assert_eq!(view["tx"], to_json(&fixture.fresh_tx));
    let params = json!({ "tx": fixture.fresh_tx, "wait": true, "timeout_ms": 500 });
    result(&app, "submit_transaction", params).await;
    let params = json!({ "tx": fixture.fresh_tx, "wait": true, "timeout_ms": 1_000_000_000u64 });
    result(&app, "submit_transaction", params).await;
    assert_eq!(
        node.state().waits,
        vec![Duration::from_secs(30), Duration::from_millis(500), Duration::from_secs(30)]
    );
}

#[tokio::test]
async fn submit_with_wait_that_times_out_is_an_error_with_the_hash() {
    let (fixture, node, app) = setup(Limits::default());
    node.state().commit_on_wait = false;
    let params = json!({ "tx": fixture.fresh_tx, "wait": true, "timeout_ms": 20 });
    let response = call(&app, "submit_transaction", params).await;
    assert_error(&response["error"], -32014, "timeout waiting for commit");
    assert_eq!(response["error"]["data"], json!({ "hash": fixture.fresh_tx.hash(), "timeout_ms": 20 }));
}

/// Every refusal of the node, with its code, HTTP status on `POST /txs` and message.
pub fn submit_error_table() -> Vec<(SubmitError, i64, StatusCode, &'static str, Option<Value>)> {
    let from = tetrad_ledger::testkit::account_key(0).public_key();
    vec![
        (
            SubmitError::Malformed("trailing bytes".into()),
            -32008,
            StatusCode::BAD_REQUEST,
            "malformed: trailing bytes",
            Some(json!({ "detail": "trailing bytes" })),
        ),
        (
            SubmitError::TooLarge { size: 2000, max: 1024 },
            -32009,
            StatusCode::BAD_REQUEST,
            "2000 bytes, the limit is 1024",
            Some(json!({ "size": 2000, "max": 1024 })),
        ),
        (SubmitError::ZeroAmount, -32016, StatusCode::BAD_REQUEST, "amount must be greater than zero", None),
        (
            SubmitError::WrongChain { expected: 0xabcd, found: 0x1234 },
            -32002,
            StatusCode::BAD_REQUEST,
            "for chain 00001234, this chain is 0000abcd",
            Some(json!({ "expected": 0xabcd, "found": 0x1234 })),
        ),
        (
            SubmitError::BadSignature { from },
            -32001,
            StatusCode::BAD_REQUEST,
            "signature does not verify",
            Some(json!({ "from": from })),
        ),
        (
            SubmitError::StaleNonce { expected: 5, found: 3 },
            -32003,
            StatusCode::BAD_REQUEST,
            "nonce 3 was already used; the account's next nonce is 5",
            Some(json!({ "expected": 5, "found": 3 })),
        ),
        (
            SubmitError::NonceTooFarAhead { expected: 5, found: 500, max_ahead: 64 },
            -32004,
            StatusCode::BAD_REQUEST,
            "nonce 500 is more than 64 ahead",
            Some(json!({ "expected": 5, "found": 500, "max_ahead": 64 })),
        ),
        (
            SubmitError::InsufficientBalance { balance: 4, amount: 9 },
            -32005,
            StatusCode::BAD_REQUEST,
            "balance 4 (after pending transfers) is less than the amount 9",
            Some(json!({ "balance": 4, "amount": 9 })),
        ),
        (
            SubmitError::NoAccount { from },
            -32017,
            StatusCode::BAD_REQUEST,
            "has no account",
            Some(json!({ "from": from })),
        ),
        (
            SubmitError::NotValidator { from, validator: 2 },
            -32018,
            StatusCode::BAD_REQUEST,
            "a rotation of validator 2 must be signed by its current consensus key",
            Some(json!({ "from": from, "validator": 2 })),
        ),
        (
            SubmitError::SenderQueueFull { from, pending: 128, max: 128 },
            -32019,
            StatusCode::TOO_MANY_REQUESTS,
            "already has 128 transactions waiting, the limit is 128",
            Some(json!({ "from": from, "pending": 128, "max": 128 })),
        ),
        (SubmitError::Duplicate, -32007, StatusCode::BAD_REQUEST, "already pending", None),
        (
            SubmitError::MempoolFull { txs: 10, bytes: 2000 },
            -32006,
            StatusCode::SERVICE_UNAVAILABLE,
            "mempool is full (10 transactions, 2000 bytes)",
            Some(json!({ "txs": 10, "bytes": 2000 })),
        ),
        (SubmitError::Unavailable, -32015, StatusCode::SERVICE_UNAVAILABLE, "shutting down", None),
    ]
}

#[tokio::test]
async fn every_submit_error_maps_to_its_code_on_both_interfaces() {
    let (fixture, node, app) = setup(Limits::default());
    for (error, code, status, message, data) in submit_error_table() {
        node.state().refuse_with = Some(error.clone());
        let response =
            call(&app, "submit_transaction", json!({ "tx": fixture.fresh_tx, "wait": true })).await;
        assert_error(&response["error"], code, message);
        let data = match error {
            SubmitError::Duplicate => Some(json!({ "hash": fixture.fresh_tx.hash() })),
            _ => data,
        };
        assert_eq!(response["error"].get("data"), data.as_ref(), "{error:?}");
        let answer = post(&app, "/txs", serde_json::to_string(&fixture.fresh_tx).expect("tx json")).await;
        assert_eq!(answer.status, status, "{error:?}");
        assert_eq!(answer.json()["error"], response["error"], "{error:?}");
    }
    assert!(node.state().waits.is_empty());
}

/// A call with id 9.
fn request(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params, "id": 9 })
}

/// Bodies that are not valid JSON-RPC calls or have bad params, with the code, the id of the
/// answer and a part of the message.
#[tokio::test]
async fn bad_requests_get_exact_codes_and_messages() {
    let (fixture, _node, app) = setup(Limits::default());
    let mut bad_signature = serde_json::to_value(&fixture.fresh_tx).expect("tx json");
    bad_signature["signature"] = json!("abcd");
    let mut bad_kind = serde_json::to_value(&fixture.fresh_tx).expect("tx json");
    bad_kind["kind"] = json!({ "type": "burn", "amount": 5 });
    let mut bad_to = serde_json::to_value(&fixture.fresh_tx).expect("tx json");
    bad_to["kind"]["to"] = json!("12345");
    let cases: Vec<(String, i64, Value, &str)> = vec![
        ("{".into(), -32700, Value::Null, "not valid JSON"),
        ("".into(), -32700, Value::Null, "not valid JSON"),
        (r#"{"jsonrpc": "2.0", "method": "get_status", "id": 1"#.into(), -32700, Value::Null, "EOF"),
        ("5".into(), -32600, Value::Null, "a request must be a JSON object, found a number"),
        ("[]".into(), -32600, Value::Null, "empty batch"),
        (r#"{"method": "get_status", "id": 1}"#.into(), -32600, json!(1), "jsonrpc: missing"),
        (
            r#"{"jsonrpc": "1.0", "method": "get_status", "id": 1}"#.into(),
            -32600,
            json!(1),
            "jsonrpc: expected \"2.0\"",
        ),
        (r#"{"jsonrpc": 2, "method": "get_status", "id": 1}"#.into(), -32600, json!(1), "jsonrpc: expected"),
        (r#"{"jsonrpc": "2.0", "id": 1}"#.into(), -32600, json!(1), "method: missing"),
        (
            r#"{"jsonrpc": "2.0", "method": 5, "id": "a"}"#.into(),
            -32600,
            json!("a"),
            "method: expected a string, found a number",
        ),
        (
            r#"{"jsonrpc": "2.0", "method": "get_status", "id": [1]}"#.into(),
            -32600,
            Value::Null,
            "id: expected a string, a number or null, found an array",
        ),
        (
            r#"{"jsonrpc": "2.0", "method": "get_status", "params": 5, "id": 1}"#.into(),
            -32600,
            json!(1),
            "params: expected an object, found a number",
        ),
        (
            request("get_balance", json!({})).to_string(),
            -32601,
            json!(9),
            "unknown method `get_balance`; the methods are submit_transaction",
        ),
        (
            request("get_block", json!([1])).to_string(),
            -32602,
            json!(9),
            "positional parameters are not supported",
        ),
        (
            request("get_block", json!({ "height": "one" })).to_string(),
            -32602,
            json!(9),
            "height: invalid type: string \"one\"",
        ),
        (
            request("get_block", json!({ "height": -1 })).to_string(),
            -32602,
            json!(9),
            "height: invalid value: integer `-1`",
        ),
        (
            request("get_block", json!({ "height": 0, "hash": hex64(1) })).to_string(),
            -32602,
            json!(9),
            "not both",
        ),
        (
            request("get_block", json!({ "hieght": 1 })).to_string(),
            -32602,
            json!(9),
            "unknown field `hieght`",
        ),
        (
            request("get_transaction", json!({ "hash": "abcdef0123" })).to_string(),
            -32602,
            json!(9),
            "hash: expected 64 hex digits, found 10",
        ),
        (
            request("get_transaction", json!({ "hash": "zz".repeat(32) })).to_string(),
            -32602,
            json!(9),
            "hash: not lowercase or uppercase hex",
        ),
        (
            request("get_transaction", json!({ "hash": 5 })).to_string(),
            -32602,
            json!(9),
            "hash: invalid type: integer `5`",
        ),
        (request("get_transaction", json!({})).to_string(), -32602, json!(9), "missing field `hash`"),
        (
            request("get_account", json!({ "address": "00".repeat(31) })).to_string(),
            -32602,
            json!(9),
            "address: expected 64 hex digits, found 62",
        ),
        (request("get_status", json!({ "x": 1 })).to_string(), -32602, json!(9), "unknown field `x`"),
        (
            request("get_checkpoint", json!({ "height": true })).to_string(),
            -32602,
            json!(9),
            "height: invalid type: boolean",
        ),
        (request("submit_transaction", json!({})).to_string(), -32602, json!(9), "missing field `tx`"),
        (
            request("submit_transaction", json!({ "tx": 5 })).to_string(),
            -32602,
            json!(9),
            "tx: invalid type: integer `5`",
        ),
        (
            request("submit_transaction", json!({ "tx": bad_signature })).to_string(),
            -32602,
            json!(9),
            "expected 128 hex digits, found 4",
        ),
        (
            request("submit_transaction", json!({ "tx": bad_kind })).to_string(),
            -32602,
            json!(9),
            "unknown variant `burn`",
        ),
        (
            request("submit_transaction", json!({ "tx": bad_to })).to_string(),
            -32602,
            json!(9),
            "expected 64 hex digits, found 5",
        ),
        (
            request("submit_transaction", json!({ "tx": fixture.fresh_tx, "wait": "yes" })).to_string(),
            -32602,
            json!(9),
            "wait: invalid type: string \"yes\", expected a boolean",
        ),
        (
            request("get_transaction", json!({ "hash": hex64(7) })).to_string(),
            -32011,
            json!(9),
            "no transaction with hash 07070707",
        ),
        (
            request("get_block", json!({ "height": 99 })).to_string(),
            -32010,
            json!(9),
            "no block at height 99; the head is at 1",
        ),
        (
            request("get_block", json!({ "hash": hex64(7) })).to_string(),
            -32010,
            json!(9),
            "no block with hash",
        ),
        (
            request("get_account", json!({ "address": hex64(7) })).to_string(),
            -32012,
            json!(9),
            "no account at address",
        ),
        (
            request("get_checkpoint", json!({ "height": 7 })).to_string(),
            -32013,
            json!(9),
            "no stable checkpoint at height 7",
        ),
        (
            request("get_validators", json!({ "height": 50 })).to_string(),
            -32010,
            json!(9),
            "no validator set for height 50: it is above the head 1",
        ),
    ];
    for (body, code, id, message) in cases {
        let answer = post(&app, "/", body.clone()).await;
        assert_eq!(answer.status, StatusCode::OK, "{body}");
        let response = answer.json();
        assert_eq!(response["jsonrpc"], "2.0", "{body}");
        assert_eq!(response["id"], id, "{body}");
        assert!(response.get("result").is_none(), "{body}");
        assert_error(&response["error"], code, message);
    }
}

#[tokio::test]
async fn unknown_objects_carry_data() {
    let (_fixture, _node, app) = setup(Limits::default());
    let response = call(&app, "get_block", json!({ "height": 99 })).await;
    assert_eq!(response["error"]["data"], json!({ "height": 99, "head": 1 }));
    let response = call(&app, "get_transaction", json!({ "hash": hex64(3) })).await;
    assert_eq!(response["error"]["data"], json!({ "hash": hex64(3) }));
}

#[tokio::test]
async fn latest_checkpoint_absent_is_unknown_checkpoint() {
    let (_fixture, node, app) = setup(Limits::default());
    node.state().checkpoints.clear();
    let response = call(&app, "get_checkpoint", json!({})).await;
    assert_error(&response["error"], -32013, "no stable checkpoint yet");
}

#[tokio::test]
async fn node_failures_are_internal_errors() {
    let (_fixture, node, app) = setup(Limits::default());
    node.state().fail_queries = Some("disk on fire".into());
    let response = call(&app, "get_block", json!({ "height": 1 })).await;
    assert_error(&response["error"], -32603, "internal error: disk on fire");
    let answer = crate::support::get(&app, "/blocks/1").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_error(&answer.json()["error"], -32603, "disk on fire");
}

#[tokio::test]
async fn notifications_run_but_get_no_answer() {
    let (fixture, node, app) = setup(Limits::default());
    let notification =
        json!({ "jsonrpc": "2.0", "method": "submit_transaction", "params": { "tx": fixture.fresh_tx } });
    let answer = post(&app, "/", notification.to_string()).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.body.is_empty());
    assert_eq!(node.state().submitted.len(), 1);
    // Even a notification that fails gets no answer; a batch of notifications neither.
    let batch = json!([
        { "jsonrpc": "2.0", "method": "no_such_method" },
        { "jsonrpc": "2.0", "method": "get_block", "params": { "height": "x" } },
        notification,
    ]);
    let answer = post(&app, "/", batch.to_string()).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(node.state().submitted.len(), 2);
    // A request with a null id is not a notification.
    let response = rpc(&app, json!({ "jsonrpc": "2.0", "method": "get_status", "id": null })).await;
    assert_eq!(response["id"], Value::Null);
    assert!(response.get("result").is_some());
}

#[tokio::test]
async fn a_mixed_batch_answers_each_call_in_order() {
    let (fixture, _node, app) = setup(Limits::default());
    let batch = json!([
        { "jsonrpc": "2.0", "method": "get_status", "id": 1 },
        { "jsonrpc": "2.0", "method": "get_nothing", "id": 2 },
        { "jsonrpc": "2.0", "method": "get_status" },
        5,
        { "jsonrpc": "2.0", "method": "get_transaction", "params": { "hash": "00" }, "id": "three" },
        [],
        { "jsonrpc": "2.0", "method": "get_block", "params": { "height": 1 }, "id": 4 },
    ]);
    let answers = rpc(&app, batch).await;
    let answers = answers.as_array().expect("a batch answers an array");
    assert_eq!(answers.len(), 6);
    assert_eq!(answers[0]["id"], 1);
    assert_eq!(answers[0]["result"], to_json(&fixture.status));
    assert_eq!(answers[1]["id"], 2);
    assert_error(&answers[1]["error"], -32601, "unknown method `get_nothing`");
    assert_eq!(answers[2]["id"], Value::Null);
    assert_error(&answers[2]["error"], -32600, "found a number");
    assert_eq!(answers[3]["id"], "three");
    assert_error(&answers[3]["error"], -32602, "hash: expected 64 hex digits, found 2");
    assert_error(&answers[4]["error"], -32600, "found an array");
    assert_eq!(answers[5]["id"], 4);
    assert_eq!(answers[5]["result"], to_json(&fixture.block));
}

#[tokio::test]
async fn batches_over_the_limit_are_refused_whole() {
    let (_fixture, node, app) = setup(Limits { batch_max: 2, ..Limits::default() });
    let one = json!({ "jsonrpc": "2.0", "method": "get_status", "id": 1 });
    let answers = rpc(&app, json!([one, one])).await;
    assert_eq!(answers.as_array().map(Vec::len), Some(2));
    let response = rpc(&app, json!([one, one, one])).await;
    assert_eq!(response["id"], Value::Null);
    assert_error(&response["error"], -32600, "batch of 3 requests is over the limit of 2");
    assert_eq!(response["error"]["data"], json!({ "found": 3, "max": 2 }));
    let records = node.records();
    assert_eq!(records.iter().filter(|record| record.0 == "get_status").count(), 2);
    assert!(records.contains(&("jsonrpc".to_owned(), "invalid_request".to_owned())));
}

#[tokio::test]
async fn every_call_is_recorded_with_its_outcome() {
    let (_fixture, node, app) = setup(Limits::default());
    result(&app, "get_status", json!({})).await;
    call(&app, "get_block", json!({ "height": 99 })).await;
    call(&app, "frobnicate", json!({})).await;
    post(&app, "/", "{").await;
    let expected: Vec<(String, String)> = [
        ("get_status", "ok"),
        ("get_block", "unknown_block"),
        ("jsonrpc", "method_not_found"),
        ("jsonrpc", "parse_error"),
    ]
    .iter()
    .map(|(method, outcome)| ((*method).to_owned(), (*outcome).to_owned()))
    .collect();
    assert_eq!(node.records(), expected);
}
