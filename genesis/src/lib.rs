//! # tetrad-genesis
//!
//! The genesis file (`genesis.json`): chain id, genesis time, consensus parameters, validators
//! and funded accounts; its validation, with errors that name the file and the field; the
//! genesis hash that every signature on the chain is bound to; and JSON key files.
//!
//! ## Call loop
//!
//! ```text
//! let genesis = Genesis::load(path)?;            // parse + validate, errors name path and field
//! let hash = genesis.hash();                     // the chain's identity
//! let state = genesis.ledger_state();            // what the store is initialised with
//! let validators = genesis.validator_set()?;     // the consensus validator set of height 0
//! ```
//!
//! ## IO contract
//!
//! Reads and writes files only where a function says so (`load`, `save`, key files).

// The workspace denies unsafe code (node/src/daemon/tcp.rs alone allows it); here it is forbidden.
#![forbid(unsafe_code)]

pub mod durable;
pub mod keyfile;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use tetrad_consensus::{Digest, PublicKey, ValidatorSet};
use tetrad_ledger::{Address, GenesisState, genesis_state};

pub use keyfile::{KeyFile, KeyFileError};

/// Consensus parameters, fixed at genesis. Units are in the names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusParams {
    /// Heights between PBFT checkpoints (K). A stable checkpoint is a finalized header.
    pub checkpoint_interval: u64,
    /// Heights that may be in flight above the last stable checkpoint (PBFT's high - low).
    /// At least twice the checkpoint interval, so the pipeline never stalls on a checkpoint.
    pub watermark_window: u64,
    /// Most transactions in one batch (block).
    pub batch_txs_max: u32,
    /// Most payload bytes in one batch.
    pub batch_bytes_max: u32,
    /// How long the primary waits to fill a batch before it proposes a smaller one.
    pub batch_timeout_ms: u64,
    /// How long a backup waits for pending work to commit before it asks for a view change.
    /// Doubles with each consecutive view change.
    pub view_change_timeout_ms: u64,
    /// The cap on the doubled view-change timeout.
    pub view_change_timeout_max_ms: u64,
}

impl Default for ConsensusParams {
    fn default() -> Self {
        ConsensusParams {
            checkpoint_interval: 16,
            watermark_window: 64,
            batch_txs_max: 2000,
            batch_bytes_max: 1 << 20,
            batch_timeout_ms: 20,
            view_change_timeout_ms: 2000,
            view_change_timeout_max_ms: 60_000,
        }
    }
}

/// One validator: its consensus key signs PBFT messages; its network key (peer id) is its
/// libp2p identity; `p2p_address` is where the others dial it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    pub name: String,
    pub consensus_key: PublicKey,
    pub peer_id: String,
    pub p2p_address: String,
}

/// A funded account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    pub address: Address,
    pub balance: u64,
}

/// The genesis file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    /// Milliseconds since the Unix epoch; the timestamp of the genesis header.
    pub genesis_time_ms: u64,
    #[serde(default)]
    pub consensus: ConsensusParams,
    pub validators: Vec<GenesisValidator>,
    pub accounts: Vec<GenesisAccount>,
}

/// Where in the genesis file a problem is, and what it is.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: {field}: {message}")]
    Parse { path: PathBuf, field: String, message: String },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: Problem },
}

/// A rule of a valid genesis that the file breaks; each names its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("chain_id: must be 1 to 64 characters of [A-Za-z0-9._-], found {0:?}")]
    BadChainId(String),
    #[error("validators: the validator set is empty")]
    NoValidators,
    #[error("validators: {count} validators, at most {max}")]
    TooManyValidators { count: usize, max: usize },
    #[error("validators[{index}].name: {reason}")]
    BadValidatorName { index: usize, reason: String },
    #[error("validators[{index}].name: {name:?} is also the name of validators[{other}]")]
    DuplicateName { index: usize, other: usize, name: String },
    #[error("validators[{index}].consensus_key: the same key as validators[{other}]")]
    DuplicateKey { index: usize, other: usize },
    #[error("validators[{index}].consensus_key: {reason}")]
    BadKey { index: usize, reason: String },
    #[error("validators[{index}].peer_id: {reason}")]
    BadPeerId { index: usize, reason: String },
    #[error("validators[{index}].peer_id: the same peer id as validators[{other}]")]
    DuplicatePeerId { index: usize, other: usize },
    #[error("validators[{index}].p2p_address: {reason}")]
    BadAddress { index: usize, reason: String },
    #[error("accounts[{index}].address: the same address as accounts[{other}]")]
    DuplicateAccount { index: usize, other: usize },
    #[error("accounts: total supply is zero; fund at least one account")]
    ZeroSupply,
    #[error("accounts[{index}].balance: total supply overflows u64")]
    SupplyOverflow { index: usize },
    #[error("consensus.{field}: {reason}")]
    BadParam { field: &'static str, reason: String },
}

const BASE58_ALPHABET: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
/// Largest genesis file read (a few thousand accounts fit comfortably).
pub const GENESIS_BYTES_MAX: u64 = 256 << 20;

impl Genesis {
    /// An empty genesis for `chain_id` (no validators, no accounts: not yet valid).
    pub fn new(chain_id: &str, genesis_time_ms: u64) -> Genesis {
        Genesis {
            chain_id: chain_id.to_string(),
            genesis_time_ms,
            consensus: ConsensusParams::default(),
            validators: Vec::new(),
            accounts: Vec::new(),
        }
    }

    /// Parses JSON text; errors name `path` and the field (e.g. `validators[1].consensus_key`).
    pub fn parse(path: &Path, text: &str) -> Result<Genesis, GenesisError> {
        let deserializer = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let field = error.path().to_string();
            GenesisError::Parse {
                path: path.to_path_buf(),
                field: if field == "." { "(top level)".to_string() } else { field },
                message: error.into_inner().to_string(),
            }
        })
    }

    /// Reads, parses and validates a genesis file.
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let genesis = Self::load_unvalidated(path)?;
        genesis.validate().map_err(|problem| GenesisError::Invalid { path: path.to_path_buf(), problem })?;
        Ok(genesis)
    }

    /// Reads and parses without the validity rules (for editing a genesis under construction).
    pub fn load_unvalidated(path: &Path) -> Result<Genesis, GenesisError> {
        let read = |source| GenesisError::Read { path: path.to_path_buf(), source };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > GENESIS_BYTES_MAX {
            return Err(GenesisError::Parse {
                path: path.to_path_buf(),
                field: "(file)".into(),
                message: format!("{size} bytes, the limit is {GENESIS_BYTES_MAX}"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::parse(path, &text)
    }

    /// Writes the genesis as pretty JSON, durably and atomically (a synced temporary file
    /// renamed over `path`, then the directory synced; see [`durable`]).
    pub fn save(&self, path: &Path) -> Result<(), GenesisError> {
        let write = |source| GenesisError::Write { path: path.to_path_buf(), source };
        let mut text =
            serde_json::to_string_pretty(self).map_err(|error| write(std::io::Error::other(error)))?;
        text.push('\n');
        durable::write_file(path, text.as_bytes(), 0o644, durable::Existing::Replace).map_err(write)
    }

    /// Checks every rule of a valid genesis; the first broken one is returned.
    pub fn validate(&self) -> Result<(), Problem> {
        let chain_id_ok = !self.chain_id.is_empty()
            && self.chain_id.len() <= 64
            && self.chain_id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !chain_id_ok {
            return Err(Problem::BadChainId(self.chain_id.clone()));
        }
        self.validate_params()?;
        self.validate_validators()?;
        self.validate_view_change_size()?;
        self.validate_accounts()
    }

    /// A view change must fit in one message: the largest new-view honest replicas can build
    /// (a quorum of view-changes with a full window of prepared certificates) grows with the
    /// window and with n², and a view change that cannot be sent never completes.
    fn validate_view_change_size(&self) -> Result<(), Problem> {
        use tetrad_consensus::view_messages::new_view_bytes_max;
        let n = self.validators.len();
        let window = self.consensus.watermark_window;
        let limit = tetrad_consensus::wire::MESSAGE_BYTES_MAX as u64;
        let size = new_view_bytes_max(n, window);
        if size <= limit {
            return Ok(());
        }
        // The size is affine in the window.
        let fixed = new_view_bytes_max(n, 0);
        let per_height = new_view_bytes_max(n, 1) - fixed;
        let window_max = limit.saturating_sub(fixed) / per_height.max(1);
        Err(Problem::BadParam {
            field: "watermark_window",
            reason: format!(
                "with {n} validators a full-window view change needs a new-view of {size} bytes, above the {limit}-byte message limit; use a window of at most {window_max}"
            ),
        })
    }

    fn validate_params(&self) -> Result<(), Problem> {
        let params = &self.consensus;
        let bad = |field: &'static str, reason: String| Err(Problem::BadParam { field, reason });
        if params.checkpoint_interval == 0 || params.checkpoint_interval > 10_000 {
            return bad(
                "checkpoint_interval",
                format!("must be 1..=10000, found {}", params.checkpoint_interval),
            );
        }
        if params.watermark_window < 2 * params.checkpoint_interval || params.watermark_window > 100_000 {
            return bad(
                "watermark_window",
                format!(
                    "must be at least twice checkpoint_interval ({}) and at most 100000, found {}",
                    2 * params.checkpoint_interval,
                    params.watermark_window
                ),
            );
        }
        if params.batch_txs_max == 0 || params.batch_txs_max > 100_000 {
            return bad("batch_txs_max", format!("must be 1..=100000, found {}", params.batch_txs_max));
        }
        let bytes_min = tetrad_ledger::tx::TX_BYTES_MAX as u32 + 8;
        if params.batch_bytes_max < bytes_min || params.batch_bytes_max > 16 << 20 {
            return bad(
                "batch_bytes_max",
                format!(
                    "must be {bytes_min}..={} (one largest transaction fits), found {}",
                    16 << 20,
                    params.batch_bytes_max
                ),
            );
        }
        if params.batch_timeout_ms == 0 || params.batch_timeout_ms >= params.view_change_timeout_ms {
            return bad(
                "batch_timeout_ms",
                format!(
                    "must be above 0 and below view_change_timeout_ms, found {}",
                    params.batch_timeout_ms
                ),
            );
        }
        if params.view_change_timeout_ms < 10 {
            return bad(
                "view_change_timeout_ms",
                format!("must be at least 10, found {}", params.view_change_timeout_ms),
            );
        }
        if params.view_change_timeout_max_ms < params.view_change_timeout_ms {
            return bad(
                "view_change_timeout_max_ms",
                format!(
                    "must be at least view_change_timeout_ms ({}), found {}",
                    params.view_change_timeout_ms, params.view_change_timeout_max_ms
                ),
            );
        }
        Ok(())
    }

    fn validate_validators(&self) -> Result<(), Problem> {
        if self.validators.is_empty() {
            return Err(Problem::NoValidators);
        }
        let max = tetrad_consensus::validators::VALIDATORS_MAX;
        if self.validators.len() > max {
            return Err(Problem::TooManyValidators { count: self.validators.len(), max });
        }
        let mut names = HashMap::new();
        let mut keys = HashMap::new();
        let mut peers = HashMap::new();
        for (index, validator) in self.validators.iter().enumerate() {
            let name_ok = !validator.name.is_empty()
                && validator.name.len() <= 64
                && validator.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !name_ok {
                let reason =
                    format!("must be 1 to 64 characters of [A-Za-z0-9._-], found {:?}", validator.name);
                return Err(Problem::BadValidatorName { index, reason });
            }
            if let Some(&other) = names.get(&validator.name) {
                return Err(Problem::DuplicateName { index, other, name: validator.name.clone() });
            }
            names.insert(validator.name.clone(), index);
            if let Err(error) = validator.consensus_key.verifying_key() {
                return Err(Problem::BadKey { index, reason: error.to_string() });
            }
            if let Some(&other) = keys.get(&validator.consensus_key) {
                return Err(Problem::DuplicateKey { index, other });
            }
            keys.insert(validator.consensus_key, index);
            check_peer_id(&validator.peer_id).map_err(|reason| Problem::BadPeerId { index, reason })?;
            if let Some(&other) = peers.get(&validator.peer_id) {
                return Err(Problem::DuplicatePeerId { index, other });
            }
            peers.insert(validator.peer_id.clone(), index);
            check_multiaddr(&validator.p2p_address)
                .map_err(|reason| Problem::BadAddress { index, reason })?;
        }
        Ok(())
    }

    fn validate_accounts(&self) -> Result<(), Problem> {
        let mut seen = HashMap::new();
        let mut supply: u64 = 0;
        for (index, account) in self.accounts.iter().enumerate() {
            if let Some(&other) = seen.get(&account.address) {
                return Err(Problem::DuplicateAccount { index, other });
            }
            seen.insert(account.address, index);
            supply = supply.checked_add(account.balance).ok_or(Problem::SupplyOverflow { index })?;
        }
        if supply == 0 {
            return Err(Problem::ZeroSupply);
        }
        Ok(())
    }

    /// The chain's identity: blake3 over a tag and the borsh encoding of the whole genesis.
    pub fn hash(&self) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"tetrad/genesis/1");
        hasher.update(&borsh::to_vec(self).unwrap_or_default());
        Digest(*hasher.finalize().as_bytes())
    }

    /// Total balance of all genesis accounts (conserved by every block).
    pub fn total_supply(&self) -> u64 {
        self.accounts.iter().map(|account| account.balance).fold(0u64, u64::saturating_add)
    }

    /// The validator set of height 0. Fails only on a genesis that does not validate.
    pub fn validator_set(&self) -> Result<ValidatorSet, tetrad_consensus::ValidatorSetError> {
        ValidatorSet::new(
            self.hash(),
            self.validators.iter().map(|validator| validator.consensus_key).collect(),
        )
    }

    /// What a new store is initialised with.
    pub fn ledger_state(&self) -> GenesisState {
        let balances: Vec<(Address, u64)> =
            self.accounts.iter().map(|account| (account.address, account.balance)).collect();
        let registry = self.registry();
        let (header, accounts, _) = genesis_state(&self.chain_id, self.genesis_time_ms, &balances, &registry);
        GenesisState { genesis_hash: self.hash(), header, accounts, registry }
    }

    /// The validator registry of height 0: every validator's consensus key.
    pub fn registry(&self) -> tetrad_ledger::ValidatorRegistry {
        tetrad_ledger::ValidatorRegistry::new(
            self.hash(),
            self.consensus.checkpoint_interval,
            self.validators.iter().map(|validator| validator.consensus_key).collect(),
        )
    }
}

/// A libp2p peer id in its base58 text form (the node parses it fully with libp2p).
fn check_peer_id(peer_id: &str) -> Result<(), String> {
    if peer_id.len() < 40 || peer_id.len() > 64 {
        return Err(format!(
            "expected a base58 libp2p peer id of 40 to 64 characters, found {} characters",
            peer_id.len()
        ));
    }
    if let Some(bad) = peer_id.chars().find(|c| !BASE58_ALPHABET.contains(*c)) {
        return Err(format!("{bad:?} is not a base58 character"));
    }
    Ok(())
}

/// A multiaddr of the form `/ip4/A.B.C.D/tcp/PORT` (or ip6, or dns).
fn check_multiaddr(address: &str) -> Result<(), String> {
    let parts: Vec<&str> = address.split('/').collect();
    let shape = format!("expected /ip4/<address>/tcp/<port>, found {address:?}");
    if parts.len() != 5 || !parts[0].is_empty() || parts[3] != "tcp" {
        return Err(shape);
    }
    let host_ok = match parts[1] {
        "ip4" => parts[2].parse::<std::net::Ipv4Addr>().is_ok(),
        "ip6" => parts[2].parse::<std::net::Ipv6Addr>().is_ok(),
        "dns" | "dns4" | "dns6" => !parts[2].is_empty(),
        _ => false,
    };
    if !host_ok {
        return Err(shape);
    }
    match parts[4].parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(format!("port {:?} is not 1..=65535", parts[4])),
    }
}

impl fmt::Display for Genesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chain id      {}", self.chain_id)?;
        writeln!(f, "genesis hash  {}", self.hash())?;
        writeln!(f, "validators    {}", self.validators.len())?;
        for (index, validator) in self.validators.iter().enumerate() {
            writeln!(
                f,
                "  [{index}] {} {} {}",
                validator.name, validator.consensus_key, validator.p2p_address
            )?;
        }
        writeln!(f, "accounts      {}", self.accounts.len())?;
        write!(f, "total supply  {}", self.total_supply())
    }
}

#[cfg(test)]
mod tests;
