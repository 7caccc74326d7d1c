//! The decoders of Tetrad that read bytes from a peer or a client, as fuzz targets.
//!
//! `wire` is the node's own `node/src/daemon/wire.rs` (frames, sync messages, limits), compiled
//! here as it is; `checks` is what each target does, also run by the test suite.

#[path = "../../node/src/daemon/wire.rs"]
#[allow(dead_code)]
pub mod wire;

pub mod checks;
