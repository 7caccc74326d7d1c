//! Body size, requests in flight and time limits: each answers JSON with its code.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tetrad_rpc::Limits;

use crate::support::{assert_error, get, post, send, setup};

const SMALL_BODY_BYTES_MAX: usize = 1000;

fn small_bodies() -> Limits {
    Limits { body_bytes_max: SMALL_BODY_BYTES_MAX, ..Limits::default() }
}

/// A JSON-RPC call padded to `bytes` bytes with spaces.
fn padded_call(bytes: usize) -> String {
    let call = json!({ "jsonrpc": "2.0", "method": "get_status", "id": 1 }).to_string();
    format!("{call}{}", " ".repeat(bytes - call.len()))
}

#[tokio::test]
async fn oversized_bodies_get_413_whether_or_not_they_announce_their_length() {
    let (_fixture, node, app) = setup(small_bodies());
    // A body just at the limit is served.
    let answer = post(&app, "/", padded_call(SMALL_BODY_BYTES_MAX)).await;
    assert_eq!(answer.status, StatusCode::OK);
    for uri in ["/", "/txs"] {
        let body = padded_call(SMALL_BODY_BYTES_MAX + 1);
        // With a Content-Length, tower-http refuses before the handler runs.
        let request = Request::post(uri)
            .header("content-length", body.len().to_string())
            .body(Body::from(body.clone()))
            .expect("request");
        let announced = send(&app, request).await;
        // Without one (chunked), the body is cut while it is read.
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(body.into_bytes())]);
        let request = Request::post(uri).body(Body::from_stream(stream)).expect("request");
        let streamed = send(&app, request).await;
        for answer in [announced, streamed] {
            assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
            assert_eq!(answer.content_type(), "application/json", "{uri}");
            let json = answer.json();
            assert_error(&json["error"], -32020, "request body is larger than the limit of 1000 bytes");
            assert_eq!(json["error"]["data"], json!({ "max": 1000 }));
            if uri == "/" {
                assert_eq!(json["jsonrpc"], "2.0");
                assert_eq!(json["id"], serde_json::Value::Null);
            }
        }
    }
    let records = node.records();
    assert!(records.contains(&("POST /".to_owned(), "body_too_large".to_owned())), "{records:?}");
    assert!(records.contains(&("POST /txs".to_owned(), "body_too_large".to_owned())), "{records:?}");
}

#[tokio::test]
async fn requests_over_the_concurrency_limit_are_shed_with_503() {
    let (_fixture, node, app) = setup(Limits { concurrency_max: 1, ..Limits::default() });
    // A request whose body arrives slowly holds the only permit of the general budget.
    let (more, body) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    let slow = tokio::spawn({
        let app = app.clone();
        async move {
            let request = Request::post("/").body(Body::from_stream(body)).expect("request");
            send(&app, request).await
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let answer = loop {
        let answer = get(&app, "/blocks/latest").await;
        if answer.status != StatusCode::OK || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_error(&answer.json()["error"], -32021, "the server is busy");
    let rpc = post(&app, "/", json!({ "jsonrpc": "2.0", "method": "get_status", "id": 1 }).to_string()).await;
    assert_eq!(rpc.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rpc.json()["jsonrpc"], "2.0");
    assert_error(&rpc.json()["error"], -32021, "try again later");
    // /status has a budget of its own.
    assert_eq!(get(&app, "/status").await.status, StatusCode::OK);
    let call = json!({ "jsonrpc": "2.0", "method": "get_status", "id": 1 }).to_string();
    more.unbounded_send(Ok(call.into_bytes())).expect("slow body");
    drop(more);
    assert_eq!(slow.await.expect("slow request").status, StatusCode::OK);
    // The permit is back.
    assert_eq!(get(&app, "/blocks/latest").await.status, StatusCode::OK);
    assert!(node.records().contains(&("GET /blocks/latest".to_owned(), "overloaded".to_owned())));
}

#[tokio::test]
async fn requests_over_the_time_limit_get_408() {
    let limits = Limits { request_timeout_ms: 30, wait_timeout_max_ms: 30, ..Limits::default() };
    let (fixture, node, app) = setup(limits);
    // A node that does not honour the wait timeout.
    node.state().wait_delay = Duration::from_secs(5);
    let body = serde_json::to_string(&fixture.fresh_tx).expect("tx json");
    let answer = post(&app, "/txs?wait=true", body).await;
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
    assert_error(&answer.json()["error"], -32022, "took longer than the server's time limit");
    let params = json!({ "tx": fixture.fresh_tx, "wait": true });
    let call = json!({ "jsonrpc": "2.0", "method": "submit_transaction", "params": params, "id": 1 });
    let answer = post(&app, "/", call.to_string()).await;
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
    assert_error(&answer.json()["error"], -32022, "time limit");
    assert!(node.records().contains(&("POST /".to_owned(), "request_timeout".to_owned())));
}

#[tokio::test]
async fn a_wait_may_use_its_full_time_beyond_the_request_limit() {
    let limits = Limits { request_timeout_ms: 50, wait_timeout_max_ms: 1_000, ..Limits::default() };
    let (fixture, node, app) = setup(limits);
    node.state().wait_delay = Duration::from_millis(200);
    let body = serde_json::to_string(&fixture.fresh_tx).expect("tx json");
    let answer = post(&app, "/txs?wait=true", body).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", String::from_utf8_lossy(&answer.body));
    assert_eq!(node.state().waits, vec![Duration::from_secs(1)]);
}
