//! A deterministic chain for tests and benchmarks: known keys, signed transfers, real commit
//! certificates, and a helper that executes and commits a batch.

use tetrad_consensus::{
    Certificate, Commit, CommitCertificate, Digest, SecretKey, Signed, ValidatorIndex, ValidatorSet, View,
};

#[cfg(feature = "rocksdb")]
use crate::block::Block;
use crate::execute::Execution;
use crate::storage::GenesisState;
#[cfg(feature = "rocksdb")]
use crate::storage::{StorageError, Store};
use crate::tx::{Address, Tx, TxBody, TxKind};
use crate::validators::ValidatorRegistry;

/// The key of test account `index` (deterministic).
pub fn account_key(index: u64) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&index.to_le_bytes());
    seed[8] = 0xac;
    SecretKey::from_seed(seed)
}

/// The key of test validator `index` (deterministic).
pub fn validator_key(index: u16) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..2].copy_from_slice(&index.to_le_bytes());
    seed[8] = 0x7a;
    SecretKey::from_seed(seed)
}

/// A test chain: `validators` validators and `accounts` accounts with `balance` each.
pub struct TestChain {
    pub genesis_hash: Digest,
    pub validator_keys: Vec<SecretKey>,
    pub validator_set: ValidatorSet,
    pub addresses: Vec<Address>,
    pub genesis: GenesisState,
}

impl TestChain {
    pub fn new(validators: u16, accounts: u64, balance: u64) -> TestChain {
        let addresses: Vec<Address> = (0..accounts).map(|index| account_key(index).public_key()).collect();
        let genesis_hash = Digest::of(format!("testchain/{validators}/{accounts}/{balance}").as_bytes());
        let validator_keys: Vec<SecretKey> = (0..validators).map(validator_key).collect();
        let validator_set =
            ValidatorSet::new(genesis_hash, validator_keys.iter().map(SecretKey::public_key).collect())
                .unwrap_or_else(|error| {
                    panic!("test validator set: {error}");
                });
        let balances: Vec<(Address, u64)> = addresses.iter().map(|address| (*address, balance)).collect();
        let registry = ValidatorRegistry::new(genesis_hash, 4, validator_set.keys().to_vec());
        let (header, accounts, _) =
            crate::execute::genesis_state("tetrad-test", 1_700_000_000_000, &balances, &registry);
        let genesis = GenesisState { genesis_hash, header, accounts, registry };
        TestChain { genesis_hash, validator_keys, validator_set, addresses, genesis }
    }

    /// A signed transfer from test account `from` to test account `to`.
    pub fn transfer(&self, from: u64, nonce: u64, to: u64, amount: u64) -> Tx {
        let to = account_key(to).public_key();
        self.transfer_to(from, nonce, to, amount)
    }

    pub fn transfer_to(&self, from: u64, nonce: u64, to: Address, amount: u64) -> Tx {
        let key = account_key(from);
        let body = TxBody {
            chain: crate::tx::chain_tag(&self.genesis_hash),
            from: key.public_key(),
            nonce,
            kind: TxKind::Transfer { to, amount },
        };
        Tx::sign(body, &key, &self.genesis_hash)
    }

    /// A transfer with an all-zero signature, for benchmarks that exclude signatures (execution
    /// never checks them; admission does).
    pub fn unsigned_transfer(&self, from: u64, nonce: u64, to: u64, amount: u64) -> Tx {
        let body = TxBody {
            chain: crate::tx::chain_tag(&self.genesis_hash),
            from: self.addresses[from as usize],
            nonce,
            kind: TxKind::Transfer { to: self.addresses[to as usize], amount },
        };
        Tx { body, signature: Default::default() }
    }

    /// A commit certificate by a quorum of the test validators.
    pub fn certify(&self, view: View, height: tetrad_consensus::Height, digest: Digest) -> CommitCertificate {
        let statement = Commit { view, height, digest };
        let votes: Vec<Signed<Commit>> = (0..self.validator_set.quorum())
            .map(|index| {
                let signer = ValidatorIndex(index as u16);
                Signed::sign(statement.clone(), signer, &self.validator_keys[index], &self.validator_set)
            })
            .collect();
        Certificate::from_votes(statement, &votes)
    }

    /// Executes `txs` as the next block on `store` and commits it. Returns the execution.
    #[cfg(feature = "rocksdb")]
    pub fn commit(&self, store: &Store, txs: &[Tx]) -> Result<Execution, StorageError> {
        let head = store.head();
        let batch = tetrad_consensus::Batch {
            view: View(0),
            proposer: ValidatorIndex(0),
            timestamp_ms: head.timestamp_ms + 1,
            payload: crate::tx::encode_payload(txs),
        };
        let execution = store.with_state(|head, state| crate::execute::execute(state, head, &batch, txs))?;
        let certificate = self.certify(View(0), execution.header.height, batch.digest());
        let block = Block { header: execution.header.clone(), batch, certificate };
        store.commit(&block, &execution)?;
        Ok(execution)
    }
}

/// The ledger state in memory: for property tests of `execute` without a database.
#[derive(Clone, Debug)]
pub struct MemoryState {
    pub accounts: std::collections::BTreeMap<Address, crate::block::Account>,
    pub tree: crate::state_tree::StateTree,
    pub registry: ValidatorRegistry,
}

impl MemoryState {
    pub fn from_genesis(genesis: &GenesisState) -> MemoryState {
        let mut leaves = vec![Digest::ZERO; genesis.accounts.len()];
        for (address, account) in &genesis.accounts {
            leaves[account.slot as usize] = account.leaf(address);
        }
        MemoryState {
            accounts: genesis.accounts.clone(),
            tree: crate::state_tree::StateTree::from_leaves(leaves),
            registry: genesis.registry.clone(),
        }
    }

    pub fn apply(&mut self, execution: &Execution) {
        for (address, account) in &execution.changes {
            self.accounts.insert(*address, *account);
        }
        self.tree.apply(&execution.tree_update);
        if let Some(registry) = &execution.registry {
            self.registry = registry.clone();
        }
    }

    pub fn total_balance(&self) -> u128 {
        self.accounts.values().map(|account| u128::from(account.balance)).sum()
    }
}

impl crate::execute::StateReader for MemoryState {
    type Error = std::convert::Infallible;

    fn account(&self, address: &Address) -> Result<Option<crate::block::Account>, Self::Error> {
        Ok(self.accounts.get(address).copied())
    }

    fn tree(&self) -> &crate::state_tree::StateTree {
        &self.tree
    }

    fn registry(&self) -> &ValidatorRegistry {
        &self.registry
    }
}
