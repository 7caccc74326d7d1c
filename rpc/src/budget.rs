//! Requests in flight, in three budgets that cannot starve each other:
//!
//! - `GET /health` and `GET /status`: a small budget of their own, so that a monitor and a
//!   load balancer get an answer while every other permit is taken;
//! - waiting submissions (`wait: true`): once admitted, a submission gives back its permit of
//!   the general budget and waits under a permit of the wait budget;
//! - everything else (including reading a request body, which has its own time limit).
//!
//! `/events` streams have their own budget in [`crate::events`]. A request that finds its
//! budget empty gets 503 at once (no queue).

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::NodeApi;
use crate::errors::{ErrorCode, RpcError};
use crate::limits::Limits;
use crate::state::AppState;

/// The semaphores of the three budgets.
pub(crate) struct Budgets {
    general: Arc<Semaphore>,
    status: Arc<Semaphore>,
    waits: Arc<Semaphore>,
}

impl Budgets {
    pub(crate) fn new(limits: &Limits) -> Budgets {
        Budgets {
            general: Arc::new(Semaphore::new(limits.permits())),
            status: Arc::new(Semaphore::new(limits.status_permits())),
            waits: Arc::new(Semaphore::new(limits.wait_permits())),
        }
    }

    /// A permit to wait for a commit, or the 503 that says why there is none.
    pub(crate) fn wait_permit(&self, limits: &Limits) -> Result<OwnedSemaphorePermit, RpcError> {
        self.waits.clone().try_acquire_owned().map_err(|_| {
            RpcError::new(
                ErrorCode::Overloaded,
                format!(
                    "too many submissions are waiting for their commit (the limit is {}); submit without \
                     waiting and poll /txs/{{hash}}, or try again later",
                    limits.wait_permits()
                ),
            )
        })
    }
}

/// The general permit a request holds; a submission that starts to wait gives it back early.
#[derive(Clone, Default)]
pub(crate) struct HeldPermit(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl HeldPermit {
    pub(crate) fn release(&self) {
        drop(self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take());
    }
}

/// Takes a permit from the request's budget, or answers 503 (the outer middleware writes the
/// JSON error in the route's shape).
pub(crate) async fn admit<A: NodeApi>(
    State(state): State<AppState<A>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let budget = if request.method() == Method::GET && (path == "/health" || path == "/status") {
        &state.budgets.status
    } else if path == "/events" {
        return next.run(request).await;
    } else {
        &state.budgets.general
    };
    let Ok(permit) = budget.clone().try_acquire_owned() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let held = HeldPermit(Arc::new(Mutex::new(Some(permit))));
    request.extensions_mut().insert(held.clone());
    let response = next.run(request).await;
    held.release();
    response
}
