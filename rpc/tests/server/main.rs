//! HTTP-level tests of the RPC server against an in-memory fake of the node.

mod availability;
mod events;
mod jsonrpc;
mod limits;
mod rest;
mod support;
