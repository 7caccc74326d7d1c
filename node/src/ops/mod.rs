//! Operator tooling: `tetrad testnet` (homes, keys and genesis for a local network, and with
//! `--compose` a Docker Compose file that runs it in containers) and
//! `tetrad bench` (a real network's throughput and latency; the ledger alone).

pub mod bench;
pub mod bench_ledger;
pub mod compose;
pub mod testnet;
