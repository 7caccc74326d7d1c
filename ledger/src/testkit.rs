//! A deterministic chain for tests and benchmarks: known keys, signed transfers, real commit
//! certificates, and a helper that executes and commits a batch.

use tetrad_consensus::{
    Certificate, Checkpoint, CheckpointCertificate, Commit, CommitCertificate, Digest, SecretKey, Signed,
    ValidatorIndex, ValidatorSet, View,
};

#[cfg(feature = "rocksdb")]
use crate::block::Block;
use crate::block::Header;
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

    /// A checkpoint certificate over `header` by the first quorum of `keys` (validator `i`
    /// signs with `keys[i]`), on this chain.
    pub fn certify_checkpoint(&self, header: &Header, keys: &[SecretKey]) -> CheckpointCertificate {
        let set = ValidatorSet::new(self.genesis_hash, keys.iter().map(SecretKey::public_key).collect())
            .unwrap_or_else(|error| panic!("test validator set: {error}"));
        let statement =
            Checkpoint { height: header.height, header_hash: header.hash(), state_root: header.state_root };
        let votes: Vec<Signed<Checkpoint>> = (0..set.quorum())
            .map(|index| Signed::sign(statement.clone(), ValidatorIndex(index as u16), &keys[index], &set))
            .collect();
        Certificate::from_votes(statement, &votes)
    }

    /// A rotation of validator `validator` from `old` to `new`, sent by `old` with `nonce`.
    pub fn rotation(&self, validator: u16, old: &SecretKey, new: &SecretKey, nonce: u64) -> Tx {
        let index = ValidatorIndex(validator);
        let digest = crate::validators::possession_digest(
            &self.genesis_hash,
            index,
            &old.public_key(),
            &new.public_key(),
        );
        let body = TxBody {
            chain: crate::tx::chain_tag(&self.genesis_hash),
            from: old.public_key(),
            nonce,
            kind: TxKind::RotateValidatorKey {
                validator: index,
                new_key: new.public_key(),
                proof_of_possession: new.sign_digest(&digest),
            },
        };
        Tx::sign(body, old, &self.genesis_hash)
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
    pub addresses: crate::address_tree::AddressTree,
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
            addresses: crate::address_tree::AddressTree::build(
                genesis.accounts.iter().map(|(address, account)| (*address, account.slot)),
            ),
            registry: genesis.registry.clone(),
        }
    }

    pub fn apply(&mut self, execution: &Execution) {
        for (address, account) in &execution.changes {
            self.accounts.insert(*address, *account);
        }
        self.tree.apply(&execution.tree_update);
        for (address, slot) in &execution.created {
            self.addresses.insert(address, *slot);
        }
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

    fn addresses(&self) -> &crate::address_tree::AddressTree {
        &self.addresses
    }

    fn registry(&self) -> &ValidatorRegistry {
        &self.registry
    }
}
