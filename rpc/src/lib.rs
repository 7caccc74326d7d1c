//! placeholder: the axum RPC arrives with the RPC issue.
