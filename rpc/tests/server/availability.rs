//! Availability under abusive clients, over real TCP: slow bodies, slow headers, many
//! connections from one address, submissions that wait for ever. `/health` and `/status` must
//! keep answering, and each client may only use up its own share.
//!
//! Clients bind distinct loopback addresses (127.0.x.y) to play distinct hosts.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::Value;
use tetrad_rpc::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{FakeNode, Fixture, assert_error, get, post, setup};

/// Starts `tetrad_rpc::serve` on a free loopback port; the server stops when the test ends.
async fn start(node: &FakeNode, limits: Limits) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(tetrad_rpc::serve(listener, node.clone(), limits, std::future::pending()));
    address
}

/// A connection from the loopback address `from`.
async fn connect_from(from: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((Ipv4Addr::from(from), 0))).expect("bind a loopback address");
    socket.connect(server).await.expect("connect")
}

/// Everything the server sends until it closes the connection (or 5 s pass).
async fn read_all(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut seen)).await;
    String::from_utf8_lossy(&seen).into_owned()
}

/// `GET path` from `from` on a new connection: the status code and the body.
async fn get_from(from: [u8; 4], server: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = connect_from(from, server).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let answer = read_all(&mut stream).await;
    let code = answer.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (code, body)
}

/// Opens `count` connections spread over the addresses 127.0.1.1, 127.0.1.2, … (`per_address`
/// each), each sending the headers of a 1,000-byte body and only its first bytes.
async fn slow_bodies(server: SocketAddr, count: usize, per_address: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for index in 0..count {
        let host = u8::try_from(1 + index / per_address).expect("few addresses");
        let mut stream = connect_from([127, 0, 1, host], server).await;
        stream
            .write_all(
                b"POST /txs HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n\
                  content-length: 1000\r\n\r\n{\"chain\": ",
            )
            .await
            .expect("write");
        streams.push(stream);
    }
    streams
}

/// Waits until `path` from `from` answers `code` (the slow clients have taken their permits).
async fn wait_for(from: [u8; 4], server: SocketAddr, path: &str, code: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (found, body) = get_from(from, server, path).await;
        if found == code {
            return;
        }
        assert!(Instant::now() < deadline, "{path} still answers {found} {body}, expected {code}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn slow_bodies_leave_health_and_status_answering_and_time_out() {
    let fixture = Fixture::new();
    let node = FakeNode::new(&fixture);
    let limits = Limits { body_timeout_ms: 1_500, ..Limits::default() };
    let server = start(&node, limits).await;
    // As many slow bodies as the general budget has permits, from 8 addresses.
    let mut slow = slow_bodies(server, limits.concurrency_max, limits.concurrency_max / 8).await;
    wait_for([127, 0, 0, 2], server, "/blocks/latest", 503).await;
    // The general budget is gone; /health and /status have their own.
    let (code, body) = get_from([127, 0, 0, 2], server, "/health").await;
    assert_eq!(code, 200, "/health under slow bodies: {body}");
    let (code, body) = get_from([127, 0, 0, 2], server, "/status").await;
    assert_eq!(code, 200, "/status under slow bodies: {body}");
    let status: Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(status["chain_id"], fixture.status.chain_id);
    // A slow body gets 408 once its time is up, and its permit is back.
    let answer = read_all(&mut slow[0]).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 1500 ms"), "{answer}");
    wait_for([127, 0, 0, 2], server, "/blocks/latest", 200).await;
}

#[tokio::test]
async fn connections_per_client_address_are_capped() {
    let fixture = Fixture::new();
    let node = FakeNode::new(&fixture);
    let limits = Limits { connections_per_client_max: 4, ..Limits::default() };
    let server = start(&node, limits).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect_from([127, 0, 0, 3], server).await);
    }
    // Let the server accept them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, body) = get_from([127, 0, 0, 3], server, "/status").await;
    assert_eq!(code, 503, "a fifth connection from one address: {body}");
    let error: Value = serde_json::from_str(&body).expect("JSON error");
    assert_error(&error["error"], -32021, "too many open connections from this address");
    // Another address is served.
    assert_eq!(get_from([127, 0, 0, 4], server, "/status").await.0, 200);
    // A closed connection gives its place back.
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_from([127, 0, 0, 3], server, "/status").await.0 != 200 {
        assert!(Instant::now() < deadline, "the closed connection's place did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        node.records().contains(&("connection".to_owned(), "too_many_connections_from_client".to_owned())),
        "{:?}",
        node.records()
    );
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    let fixture = Fixture::new();
    let node = FakeNode::new(&fixture);
    let limits = Limits { header_timeout_ms: 300, ..Limits::default() };
    let server = start(&node, limits).await;
    let mut partial = connect_from([127, 0, 0, 5], server).await;
    partial.write_all(b"GET /status HTTP/1.1\r\nHo").await.expect("write");
    let mut silent = connect_from([127, 0, 0, 5], server).await;
    let started = Instant::now();
    for stream in [&mut partial, &mut silent] {
        let mut buffer = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(3), async {
            // Whatever the server says (hyper may answer 408) ends with its close.
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(read.is_ok(), "a connection without complete headers stayed open for 3 s");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn waiting_submissions_use_their_own_budget() {
    let limits = Limits { concurrency_max: 4, wait_concurrency_max: 8, ..Limits::default() };
    let (fixture, node, app) = setup(limits);
    node.state().wait_delay = Duration::from_secs(3);
    let body = serde_json::to_string(&fixture.fresh_tx).expect("tx json");
    let mut waiting = Vec::new();
    for _ in 0..8 {
        let (app, body) = (app.clone(), body.clone());
        waiting.push(tokio::spawn(async move { post(&app, "/txs?wait=true", body).await }));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.state().waits.len() < 8 {
        assert!(Instant::now() < deadline, "the submissions did not start to wait");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Eight submissions wait, yet the general budget of four is free for everything else.
    for path in ["/blocks/latest", "/status", "/validators"] {
        assert_eq!(get(&app, path).await.status, StatusCode::OK, "{path} while submissions wait");
    }
    assert_eq!(post(&app, "/txs", body.clone()).await.status, StatusCode::ACCEPTED);
    // A ninth waiting submission finds the wait budget empty: 503, and it is not admitted.
    let submitted = node.state().submitted.len();
    let refused = post(&app, "/txs?wait=true", body.clone()).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_error(&refused.json()["error"], -32021, "too many submissions are waiting");
    assert_eq!(node.state().submitted.len(), submitted);
    for answer in waiting {
        assert_eq!(answer.await.expect("waiting submission").status, StatusCode::OK);
    }
}

#[tokio::test]
async fn health_answers_what_the_node_says() {
    let (_fixture, node, app) = setup(Limits::default());
    let answer = get(&app, "/health").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["status"], "idle");
    node.state().health.status = tetrad_rpc::api::Health::Stalled;
    node.state().health.reason = "work has waited 9 s without a commit".to_owned();
    let answer = get(&app, "/health").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.content_type(), "application/json");
    let json = answer.json();
    assert_eq!(json["status"], "stalled");
    assert_eq!(json["reason"], "work has waited 9 s without a commit");
    assert!(node.records().contains(&("GET /health".to_owned(), "unhealthy".to_owned())));
    node.state().health.status = tetrad_rpc::api::Health::Stopped;
    assert_eq!(get(&app, "/health").await.status, StatusCode::SERVICE_UNAVAILABLE);
}
