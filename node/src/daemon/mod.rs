//! The daemon (`tetrad run`): the node's long-running parts. `node` assembles them from a home
//! directory and watches them; `driver` owns the replica; `intake` (inbound consensus messages,
//! per sender) and `answers` (expensive answers, rationed per peer) serve it; `executor`
//! executes committed blocks; `mempool`, `network` (libp2p), `admission` (who may connect and
//! who may speak consensus), `wire` (frames and their limits), `api` (what the RPC server
//! reaches), `health` (what `/health` says), `keys` (the schedule and this validator's keys
//! across a rotation), `safety_check` (are the safety records whole before a validator signs),
//! `deferred` (messages above the schedule horizon), `tcp` (the p2p sockets' retransmission
//! timeout) and `metrics`.

pub mod admission;
pub mod answers;
pub mod api;
pub mod backpressure;
#[cfg(feature = "byzantine")]
pub mod byzantine;
pub mod deferred;
pub mod driver;
pub mod executor;
#[cfg(test)]
mod fuzzing;
pub mod health;
pub mod in_flight;
pub mod intake;
pub mod keys;
pub mod mempool;
pub mod metrics;
pub mod network;
pub mod node;
pub mod safety_check;
#[cfg(test)]
mod submit_tests;
pub mod tcp;
pub mod timing;
pub mod wire;
