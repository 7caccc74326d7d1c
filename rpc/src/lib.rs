//! # tetrad-rpc
//!
//! The axum server of a Tetrad node: JSON-RPC 2.0 on `POST /` and plain GET URLs for curl. It
//! reaches the node only through the [`api::NodeApi`] trait.

pub mod api;
