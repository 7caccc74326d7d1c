//! `GET /events`: server-sent events, one `event: block` with a JSON [`BlockEvent`] per committed
//! block, and a keep-alive comment when idle.
//!
//! A client that reads too slowly falls behind the node's broadcast channel: it then gets a
//! comment saying how many blocks it missed and goes on with the next block. The stream ends when
//! the node closes the channel or the server shuts down.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::api::{BlockEvent, NodeApi};
use crate::errors::{ErrorCode, RpcError};
use crate::limits::EVENTS_KEEP_ALIVE_MS;
use crate::state::AppState;

/// The `event:` name of a new block.
pub const BLOCK_EVENT: &str = "block";

pub(crate) async fn stream<A: NodeApi>(
    State(state): State<AppState<A>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, RpcError> {
    let permit = state.event_streams.clone().try_acquire_owned().map_err(|_| {
        RpcError::new(
            ErrorCode::Overloaded,
            format!("too many open event streams (the limit is {}); try again later", state.limits.permits()),
        )
    })?;
    let receiver = state.api.subscribe_blocks();
    let events = futures::stream::unfold((receiver, permit), next_event).take_until(state.stopped());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_millis(EVENTS_KEEP_ALIVE_MS))))
}

/// The next event of the stream; `None` once the node closed the channel. The permit lives as long
/// as the stream.
async fn next_event(
    (mut receiver, permit): (Receiver<BlockEvent>, OwnedSemaphorePermit),
) -> Option<(Result<Event, Infallible>, (Receiver<BlockEvent>, OwnedSemaphorePermit))> {
    loop {
        let event = match receiver.recv().await {
            Ok(block) => match Event::default().event(BLOCK_EVENT).json_data(&block) {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(%error, height = %block.height, "cannot encode a block event");
                    continue;
                }
            },
            Err(RecvError::Lagged(skipped)) => {
                Event::default().comment(format!("skipped {skipped} blocks: this client reads too slowly"))
            }
            Err(RecvError::Closed) => return None,
        };
        return Some((Ok(event), (receiver, permit)));
    }
}
