//! The daemon (`tetrad run`): the node's long-running parts. `node` assembles them from a home
//! directory; `driver` owns the replica; `executor` executes committed blocks; `mempool`,
//! `network` (libp2p), `api` (what the RPC server reaches), `keys` (the schedule and this
//! validator's keys across a rotation), `deferred` (messages above the schedule horizon) and
//! `metrics`.

pub mod api;
pub mod deferred;
pub mod driver;
pub mod executor;
pub mod keys;
pub mod mempool;
pub mod metrics;
pub mod network;
pub mod node;
