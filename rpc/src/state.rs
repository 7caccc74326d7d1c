//! What every handler shares: the node, the limits, and the shutdown signal.

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};

use crate::api::NodeApi;
use crate::budget::Budgets;
use crate::limits::Limits;

#[derive(Clone)]
pub(crate) struct AppState<A> {
    pub api: A,
    pub limits: Limits,
    /// Open `/events` streams hold one permit each.
    pub event_streams: Arc<Semaphore>,
    /// Requests in flight: general, `/health` and `/status`, waiting submissions.
    pub budgets: Arc<Budgets>,
    /// Becomes true when [`crate::serve`] begins its graceful shutdown; `None` under
    /// [`crate::router`], which never stops on its own.
    pub stop: Option<watch::Receiver<bool>>,
}

impl<A: NodeApi> AppState<A> {
    pub fn new(api: A, limits: Limits, stop: Option<watch::Receiver<bool>>) -> AppState<A> {
        let event_streams = Arc::new(Semaphore::new(limits.permits()));
        let budgets = Arc::new(Budgets::new(&limits));
        AppState { api, limits, event_streams, budgets, stop }
    }

    /// Resolves when the server begins to shut down (never under [`crate::router`]).
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static + use<A> {
        let stop = self.stop.clone();
        async move {
            match stop {
                Some(mut stop) => {
                    // An error means the sender is gone: `serve` has returned, so stop too.
                    let _ = stop.wait_for(|stopped| *stopped).await;
                }
                None => std::future::pending::<()>().await,
            }
        }
    }
}
