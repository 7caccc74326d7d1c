//! `GET /events` as server-sent events: through the router, and over a real socket with `serve`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use tetrad_rpc::Limits;
use tetrad_rpc::api::BlockEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use crate::support::{EVENTS_CAPACITY, FakeNode, Fixture, setup};

/// The `data:` of an SSE frame whose `event:` is `block`.
fn block_of(frame: &str) -> Option<BlockEvent> {
    if !frame.lines().any(|line| line == "event: block") {
        return None;
    }
    let data = frame.lines().find_map(|line| line.strip_prefix("data: "))?;
    Some(serde_json::from_str(data).expect("block event JSON"))
}

async fn next_frame(body: &mut axum::body::BodyDataStream) -> String {
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream goes on")
        .expect("a chunk");
    String::from_utf8(chunk.to_vec()).expect("UTF-8 frame")
}

#[tokio::test]
async fn each_new_block_is_one_block_event() {
    let (fixture, node, app) = setup(Limits::default());
    let request = Request::get("/events").body(Body::empty()).expect("request");
    let response = app.clone().oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body().into_data_stream();
    for height in [2, 3] {
        node.shared.blocks.send(fixture.event(height)).expect("a subscriber");
        assert_eq!(block_of(&next_frame(&mut body).await), Some(fixture.event(height)));
    }
    assert!(node.records().contains(&("GET /events".to_owned(), "ok".to_owned())));
}

#[tokio::test]
async fn a_lagging_reader_skips_blocks_and_goes_on() {
    let (fixture, node, app) = setup(Limits::default());
    let request = Request::get("/events").body(Body::empty()).expect("request");
    let response = app.clone().oneshot(request).await.expect("response");
    let mut body = response.into_body().into_data_stream();
    let sent = 10;
    for height in 1..=sent {
        node.shared.blocks.send(fixture.event(height)).expect("a subscriber");
    }
    let skipped = sent - EVENTS_CAPACITY as u64;
    let frame = next_frame(&mut body).await;
    assert!(frame.starts_with(&format!(": skipped {skipped} blocks")), "{frame:?}");
    for height in skipped + 1..=sent {
        assert_eq!(block_of(&next_frame(&mut body).await), Some(fixture.event(height)));
    }
}

#[tokio::test]
async fn open_streams_are_limited() {
    let (_fixture, _node, app) = setup(Limits { concurrency_max: 1, ..Limits::default() });
    let request = Request::get("/events").body(Body::empty()).expect("request");
    let first = app.clone().oneshot(request).await.expect("response");
    assert_eq!(first.status(), StatusCode::OK);
    let answer = crate::support::get(&app, "/events").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    crate::support::assert_error(&answer.json()["error"], -32021, "too many open event streams");
    drop(first);
    let request = Request::get("/events").body(Body::empty()).expect("request");
    let again = app.clone().oneshot(request).await.expect("response");
    assert_eq!(again.status(), StatusCode::OK);
}

/// Reads from `stream` until `needle` has arrived; returns everything read.
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within 5 s; read {:?}", String::from_utf8_lossy(&seen)))
            .expect("read");
        assert!(read > 0, "connection closed before {needle:?}; read {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn serve_streams_events_over_tcp_and_shuts_down_gracefully() {
    let fixture = Fixture::new();
    let node = FakeNode::new(&fixture);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tetrad_rpc::serve(listener, node.clone(), Limits::default(), async move {
        let _ = stopped.await;
    }));

    let mut health = tokio::net::TcpStream::connect(address).await.expect("connect");
    health
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = read_until(&mut health, "stall_after_ms").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    let mut events = tokio::net::TcpStream::connect(address).await.expect("connect");
    events.write_all(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n").await.expect("write");
    let head = read_until(&mut events, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    node.shared.blocks.send(fixture.event(5)).expect("a subscriber");
    let frame = read_until(&mut events, "\n\n").await;
    let data = serde_json::to_string(&fixture.event(5)).expect("event JSON");
    assert!(frame.contains(&format!("event: block\ndata: {data}\n\n")), "{frame:?}");

    // Shutdown ends the open event stream, so the server finishes.
    stop.send(()).expect("server running");
    let finished =
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve returns within 5 s");
    finished.expect("server task").expect("serve result");
}
