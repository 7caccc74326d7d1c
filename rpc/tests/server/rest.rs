//! The URLs: every one on its happy path, and a table of bad input.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tetrad_rpc::Limits;

use crate::support::{assert_error, get, hex64, post, send, setup, to_json};

#[tokio::test]
async fn every_url_answers_the_node_view() {
    let (fixture, node, app) = setup(Limits::default());
    let health = to_json(&node.state().health);
    let tx = &fixture.txs[0];
    let account = &fixture.accounts[1];
    let mut validators_at_1 = fixture.validators.clone();
    validators_at_1.height = tetrad_consensus::Height(1);
    let cases = vec![
        ("/status".to_owned(), to_json(&fixture.status)),
        ("/health".to_owned(), health),
        ("/blocks/latest".to_owned(), to_json(&fixture.block)),
        ("/blocks/0".to_owned(), to_json(&fixture.genesis)),
        ("/blocks/1".to_owned(), to_json(&fixture.block)),
        (format!("/blocks/hash/{}", fixture.genesis.hash), to_json(&fixture.genesis)),
        (format!("/txs/{}", tx.hash), to_json(tx)),
        (format!("/txs/{}", tx.hash.to_hex().to_uppercase()), to_json(tx)),
        (format!("/accounts/{}", account.address), to_json(account)),
        ("/checkpoints/latest".to_owned(), to_json(&fixture.checkpoint)),
        ("/checkpoints/1".to_owned(), to_json(&fixture.checkpoint)),
        ("/validators".to_owned(), to_json(&fixture.validators)),
        ("/validators?height=1".to_owned(), to_json(&validators_at_1)),
    ];
    for (uri, expected) in cases {
        let answer = get(&app, &uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        assert_eq!(answer.content_type(), "application/json", "{uri}");
        assert_eq!(answer.json(), expected, "{uri}");
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let (_fixture, _node, app) = setup(Limits::default());
    let answer = get(&app, "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type(), "text/plain; version=0.0.4");
    assert_eq!(&answer.body[..], b"# TYPE tetrad_height gauge\ntetrad_height 1\n");
}

#[tokio::test]
async fn post_txs_answers_pending_or_the_committed_view() {
    let (fixture, node, app) = setup(Limits::default());
    let body = serde_json::to_string(&fixture.fresh_tx).expect("tx json");
    let answer = post(&app, "/txs", body.clone()).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.json(), json!({ "hash": fixture.fresh_tx.hash(), "status": "pending" }));
    let answer = post(&app, "/txs?wait=true&timeout_ms=250", body.clone()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let view = answer.json();
    assert_eq!(view["status"], "committed");
    assert_eq!(view["tx"], to_json(&fixture.fresh_tx));
    assert_eq!(node.state().waits, vec![std::time::Duration::from_millis(250)]);
    node.state().commit_on_wait = false;
    let answer = post(&app, "/txs?wait=true&timeout_ms=5", body).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_error(&answer.json()["error"], -32014, "timeout waiting for commit");
    assert_eq!(node.state().submitted.len(), 3);
}

/// (method, uri, body, status, code, part of the message)
#[tokio::test]
async fn bad_input_gets_json_errors_with_exact_codes() {
    let (fixture, _node, app) = setup(Limits::default());
    let tx = serde_json::to_value(&fixture.fresh_tx).expect("tx json");
    let mut bad_signature = tx.clone();
    bad_signature["signature"] = json!("00");
    let mut negative_nonce = tx.clone();
    negative_nonce["nonce"] = json!(-1);
    let unknown = hex64(7);
    let cases: Vec<(&str, String, String, StatusCode, i64, &str)> = vec![
        (
            "GET",
            "/blocks/abc".into(),
            "".into(),
            StatusCode::BAD_REQUEST,
            -32602,
            "height: expected an unsigned integer (u64), found `abc`",
        ),
        (
            "GET",
            "/blocks/-1".into(),
            "".into(),
            StatusCode::BAD_REQUEST,
            -32602,
            "height: expected an unsigned integer",
        ),
        (
            "GET",
            "/blocks/99999999999999999999999".into(),
            "".into(),
            StatusCode::BAD_REQUEST,
            -32602,
            "height: expected an unsigned integer",
        ),
        (
            "GET",
            "/blocks/99".into(),
            "".into(),
            StatusCode::NOT_FOUND,
            -32010,
            "no block at height 99; the head is at 1",
        ),
        (
            "GET",
            "/blocks/hash/abc".into(),
            "".into(),
            StatusCode::BAD_REQUEST,
            -32602,
            "hash: expected 64 hex digits, found 3",
        ),
        (
            "GET",
            format!("/blocks/hash/{}", "zz".repeat(32)),
            "".into(),
            StatusCode::BAD_REQUEST,
            -32602,
            "hash: not lowercase or uppercase hex",
        ),
        (
            "GET",
            format!("/blocks/hash/{unknown}"),
            "".into(),
            StatusCode::NOT_FOUND,
            -32010,
            "no block with hash 0707",
        ),
        (
            "GET",
            "/txs/abcdef0123".into(),
            "".into(),
            StatusCode::BAD_REQUEST,
            -32602,
            "hash: expected 64 hex digits, found 10",
        ),
        (
            "GET",
            format!("/txs/{unknown}"),
            "".into(),
            StatusCode::NOT_FOUND,
            -32011,
            "no transaction with hash 0707",
        ),
        (
            "GET",
            format!("/accounts/{}", "00".repeat(31)),
            "".into(),
            StatusCode::BAD_REQUEST,
            -32602,
            "address: expected 64 hex digits, found 62",
        ),
        (
            "GET",
            format!("/accounts/{unknown}"),
            "".into(),
            StatusCode::NOT_FOUND,
            -32012,
            "no account at address 0707",
        ),
        (
            "GET",
            "/checkpoints/7".into(),
            "".into(),
            StatusCode::NOT_FOUND,
            -32013,
            "no stable checkpoint at height 7",
        ),
        (
            "GET",
            "/checkpoints/x".into(),
            "".into(),
            StatusCode::BAD_REQUEST,
            -32602,
            "height: expected an unsigned integer (u64), found `x`",
        ),
        (
            "GET",
            "/validators?height=abc".into(),
            "".into(),
            StatusCode::BAD_REQUEST,
            -32602,
            "query string: height: invalid digit",
        ),
        (
            "GET",
            "/validators?hieght=1".into(),
            "".into(),
            StatusCode::BAD_REQUEST,
            -32602,
            "unknown field `hieght`",
        ),
        (
            "GET",
            "/validators?height=50".into(),
            "".into(),
            StatusCode::NOT_FOUND,
            -32010,
            "no validator set for height 50",
        ),
        ("GET", "/nope".into(), "".into(), StatusCode::NOT_FOUND, -32601, "no such URL: GET /nope"),
        ("GET", "/blocks".into(), "".into(), StatusCode::NOT_FOUND, -32601, "no such URL"),
        (
            "DELETE",
            "/status".into(),
            "".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            -32600,
            "method DELETE is not allowed on this URL",
        ),
        ("GET", "/".into(), "".into(), StatusCode::METHOD_NOT_ALLOWED, -32600, "method GET is not allowed"),
        (
            "POST",
            "/status".into(),
            "{}".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            -32600,
            "method POST is not allowed",
        ),
        ("POST", "/txs".into(), "{".into(), StatusCode::BAD_REQUEST, -32700, "body is not valid JSON"),
        ("POST", "/txs".into(), "".into(), StatusCode::BAD_REQUEST, -32700, "EOF while parsing"),
        ("POST", "/txs".into(), format!("{tx} 5"), StatusCode::BAD_REQUEST, -32700, "trailing characters"),
        ("POST", "/txs".into(), "{}".into(), StatusCode::BAD_REQUEST, -32602, "missing field"),
        (
            "POST",
            "/txs".into(),
            "[1, 2]".into(),
            StatusCode::BAD_REQUEST,
            -32602,
            "[1]: invalid type: integer `2`, expected a string",
        ),
        (
            "POST",
            "/txs".into(),
            bad_signature.to_string(),
            StatusCode::BAD_REQUEST,
            -32602,
            "expected 128 hex digits, found 2",
        ),
        (
            "POST",
            "/txs".into(),
            negative_nonce.to_string(),
            StatusCode::BAD_REQUEST,
            -32602,
            "invalid value: integer `-1`",
        ),
        (
            "POST",
            "/txs?wait=maybe".into(),
            tx.to_string(),
            StatusCode::BAD_REQUEST,
            -32602,
            "query string: wait",
        ),
        (
            "POST",
            "/txs?timeout_ms=-5".into(),
            tx.to_string(),
            StatusCode::BAD_REQUEST,
            -32602,
            "query string: timeout_ms",
        ),
    ];
    for (method, uri, body, status, code, message) in cases {
        let request = Request::builder().method(method).uri(&uri).body(Body::from(body)).expect("request");
        let answer = send(&app, request).await;
        assert_eq!(answer.status, status, "{method} {uri}: {:?}", String::from_utf8_lossy(&answer.body));
        assert_eq!(answer.content_type(), "application/json", "{method} {uri}");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(answer.headers.contains_key("allow"), "{method} {uri}: no Allow header");
        }
        let json = answer.json();
        assert_eq!(json.as_object().map(|object| object.len()), Some(1), "{method} {uri}: {json}");
        assert_error(&json["error"], code, message);
    }
}

#[tokio::test]
async fn every_request_is_recorded_by_route_and_outcome() {
    let (_fixture, node, app) = setup(Limits::default());
    get(&app, "/status").await;
    get(&app, "/blocks/99").await;
    get(&app, "/blocks/abc").await;
    get(&app, &format!("/txs/{}", hex64(1))).await;
    get(&app, "/no/such/thing").await;
    let request = Request::builder().method("PATCH").uri("/status").body(Body::empty()).expect("request");
    send(&app, request).await;
    let expected: Vec<(String, String)> = [
        ("GET /status", "ok"),
        ("GET /blocks/{height}", "unknown_block"),
        ("GET /blocks/{height}", "invalid_params"),
        ("GET /txs/{hash}", "unknown_tx"),
        ("unmatched", "method_not_found"),
        ("OTHER /status", "invalid_request"),
    ]
    .iter()
    .map(|(route, outcome)| ((*route).to_owned(), (*outcome).to_owned()))
    .collect();
    assert_eq!(node.records(), expected);
}
