//! A node's home directory and its `config.toml`.
//!
//! ```text
//! HOME/config.toml          node settings (below)
//! HOME/genesis.json         the chain's genesis file
//! HOME/consensus_key.json   signs PBFT messages (0600)
//! HOME/consensus_key.next.json   during a key rotation: the next consensus key (0600)
//! HOME/network_key.json     libp2p identity (0600)
//! HOME/data/                RocksDB: the chain (may be deleted to resync from peers)
//! HOME/safety/              RocksDB: what this validator signed (never delete)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tetrad_genesis::durable::{self, Existing};

pub const CONFIG_FILE: &str = "config.toml";
pub const GENESIS_FILE: &str = "genesis.json";
pub const CONSENSUS_KEY_FILE: &str = "consensus_key.json";
pub const NETWORK_KEY_FILE: &str = "network_key.json";
pub const NEXT_CONSENSUS_KEY_FILE: &str = "consensus_key.next.json";
pub const RETIRED_CONSENSUS_KEY_FILE: &str = "consensus_key.retired.json";
pub const DATA_DIR: &str = "data";
pub const SAFETY_DIR: &str = "safety";

/// `config.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A name for logs and `/status`; a validator's genesis name.
    pub name: String,
    /// libp2p listen address, e.g. `/ip4/0.0.0.0/tcp/26000`.
    pub p2p_listen: String,
    /// RPC listen address, e.g. `127.0.0.1:8545`.
    pub rpc_listen: String,
    /// When this validator is the primary and the chain has been quiet this long (nothing ready
    /// in the mempool, nothing in flight) short of a checkpoint boundary, it proposes empty
    /// batches up to the boundary, so the last blocks get a stable checkpoint. Timing only:
    /// safety does not depend on it, and validators may differ.
    #[serde(default = "default_empty_blocks_after_idle_ms")]
    pub empty_blocks_after_idle_ms: u64,
}

/// The default of `empty_blocks_after_idle_ms`: long enough that a client sending one
/// transaction after another (a round trip each) is not interleaved with empty blocks, short
/// beside a human's wait for finality.
pub const EMPTY_BLOCKS_AFTER_IDLE_MS: u64 = 150;

/// The longest `empty_blocks_after_idle_ms` (an hour).
pub const EMPTY_BLOCKS_AFTER_IDLE_MS_MAX: u64 = 3_600_000;

fn default_empty_blocks_after_idle_ms() -> u64 {
    EMPTY_BLOCKS_AFTER_IDLE_MS
}

/// Paths inside a home directory.
#[derive(Clone, Debug)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn new(dir: &Path) -> Home {
        Home { dir: dir.to_path_buf() }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    pub fn genesis(&self) -> PathBuf {
        self.dir.join(GENESIS_FILE)
    }

    pub fn consensus_key(&self) -> PathBuf {
        self.dir.join(CONSENSUS_KEY_FILE)
    }

    /// The key a rotation in progress switches to (see `keys.rs`).
    pub fn next_consensus_key(&self) -> PathBuf {
        self.dir.join(NEXT_CONSENSUS_KEY_FILE)
    }

    /// During the key swap only: the old key, until it is erased (see `keys.rs`).
    pub fn retired_consensus_key(&self) -> PathBuf {
        self.dir.join(RETIRED_CONSENSUS_KEY_FILE)
    }

    pub fn network_key(&self) -> PathBuf {
        self.dir.join(NETWORK_KEY_FILE)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join(DATA_DIR)
    }

    /// What this validator signed (kept apart from `data/`, which may be deleted to resync).
    pub fn safety(&self) -> PathBuf {
        self.dir.join(SAFETY_DIR)
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let config: Config = toml::from_str(&text)
            .map_err(|error| anyhow::anyhow!("{}: {}", path.display(), error.to_string().trim_end()))?;
        config.validate().with_context(|| format!("{}: invalid", path.display()))?;
        Ok(config)
    }

    /// Writes a new `config.toml` durably (synced temporary file, linked into place, directory
    /// synced); refuses to overwrite one.
    pub fn save_new(&self, path: &Path) -> Result<()> {
        let text = format!(
            "# Tetrad node configuration\n\n{}",
            toml::to_string_pretty(self).context("encoding config.toml")?
        );
        match durable::write_file(path, text.as_bytes(), 0o644, Existing::Refuse) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("{}: already exists; refusing to overwrite", path.display())
            }
            Err(error) => Err(error).with_context(|| format!("{}: cannot write", path.display())),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            bail!("name: must not be empty");
        }
        self.rpc_listen.parse::<std::net::SocketAddr>().with_context(|| {
            format!("rpc_listen: {:?} is not an address like 127.0.0.1:8545", self.rpc_listen)
        })?;
        self.p2p_listen.parse::<libp2p::Multiaddr>().with_context(|| {
            format!("p2p_listen: {:?} is not a multiaddr like /ip4/0.0.0.0/tcp/26000", self.p2p_listen)
        })?;
        if self.empty_blocks_after_idle_ms > EMPTY_BLOCKS_AFTER_IDLE_MS_MAX {
            bail!(
                "empty_blocks_after_idle_ms: must be at most {EMPTY_BLOCKS_AFTER_IDLE_MS_MAX} (an hour), found {}",
                self.empty_blocks_after_idle_ms
            );
        }
        Ok(())
    }
}
