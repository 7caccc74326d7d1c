//! The RocksDB side of [`crate::storage`]: the `Store`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use borsh::{BorshDeserialize, BorshSerialize};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions,
};
use tetrad_consensus::{Batch, CheckpointCertificate, CommitCertificate, Digest, Height};

use super::{AccountAt, AccountProof, GenesisState, StorageError, TxInBlock, TxLocation};
use crate::address_tree::AddressTree;
use crate::block::{Account, Block, Header, Receipt};
use crate::execute::{Execution, StateReader};
use crate::state_tree::StateTree;
use crate::tx::{Address, Tx};
use crate::validators::ValidatorRegistry;

pub const CF_BLOCKS: &str = "blocks";
pub const CF_CERTIFICATES: &str = "certificates";
pub const CF_BLOCK_HASHES: &str = "block_hashes";
pub const CF_CHECKPOINTS: &str = "checkpoints";
pub const CF_TX_INDEX: &str = "tx_index";
pub const CF_RECEIPTS: &str = "receipts";
pub const CF_ACCOUNTS: &str = "accounts";
pub const CF_VALIDATOR_SETS: &str = "validator_sets";
pub const CF_META: &str = "meta";

const COLUMN_FAMILIES: [&str; 9] = [
    CF_BLOCKS,
    CF_CERTIFICATES,
    CF_BLOCK_HASHES,
    CF_CHECKPOINTS,
    CF_TX_INDEX,
    CF_RECEIPTS,
    CF_ACCOUNTS,
    CF_VALIDATOR_SETS,
    CF_META,
];

const META_HEAD: &[u8] = b"head";
const META_GENESIS_HASH: &[u8] = b"genesis_hash";
const META_GENESIS_HEADER: &[u8] = b"genesis_header";
const META_ACCOUNT_COUNT: &[u8] = b"account_count";
const REGISTRY_KEY: &[u8] = b"registry";
/// Registry snapshots: `r` + the big-endian height of the block that changed the registry
/// (0: genesis). The registry after block h is the snapshot with the highest height ≤ h.
const REGISTRY_AT_PREFIX: u8 = b'r';
/// How many checkpoint-boundary states a store keeps in memory to prove accounts at a
/// finalized height (the newest boundaries executed; a stable checkpoint trails execution by
/// at most about one interval).
const BOUNDARY_STATES_MAX: usize = 3;

fn registry_at_key(height: Height) -> [u8; 9] {
    let mut key = [REGISTRY_AT_PREFIX; 9];
    key[1..].copy_from_slice(&height.0.to_be_bytes());
    key
}

/// Block cache shared by all column families.
const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// Memtable size for the column families written once per transaction (tx index, accounts).
const SMALL_MEMTABLE_BYTES: usize = 8 << 20;

/// The state at the last committed block, in memory: the header, the state tree and every
/// account (about 150 bytes per account with the tree), so execution and queries never wait
/// for a disk read of an account.
struct Head {
    header: Header,
    tree: StateTree,
    accounts: HashMap<Address, Account>,
    registry: ValidatorRegistry,
    /// Every account's address to its slot (proves absences).
    addresses: AddressTree,
    /// The state at the last few checkpoint boundaries executed, oldest first.
    boundaries: Vec<BoundaryState>,
}

/// The state at a checkpoint boundary, kept so that accounts can be proven against a
/// finalized header while the head moves on: the state tree as it was, and the accounts
/// changed since, as they were (`None`: created since).
struct BoundaryState {
    header: Header,
    tree: StateTree,
    addresses: AddressTree,
    before: HashMap<Address, Option<Account>>,
}

pub struct Store {
    db: DB,
    path: PathBuf,
    head: RwLock<Head>,
    sync_writes: bool,
}

fn be(height: Height) -> [u8; 8] {
    height.0.to_be_bytes()
}

fn decode<T: BorshDeserialize>(cf: &'static str, bytes: &[u8]) -> Result<T, StorageError> {
    borsh::from_slice(bytes).map_err(|error| StorageError::Corrupt { cf, detail: error.to_string() })
}

fn encode<T: BorshSerialize>(value: &T) -> Vec<u8> {
    borsh::to_vec(value).unwrap_or_default()
}

impl Store {
    /// Options for the database (`cf == None`) and for each column family.
    ///
    /// Measured with `tetrad bench ledger` pinned to one core (docs/performance.md): most of the
    /// commit time is the memtable skip list taking one cache miss per level for every random
    /// key (tx hashes, account addresses). Small memtables for those two column families keep
    /// the skip list in cache; L0 and L1 stay uncompressed because their keys are hashes that
    /// do not compress and the flushes run on the same core.
    fn options(cache: &Cache, cf: Option<&str>) -> Options {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_background_jobs(2);
        // One writer (the executor) at a time: the single-writer memtable insert is cheaper.
        options.set_allow_concurrent_memtable_write(false);
        use rocksdb::DBCompressionType::{Lz4, None as Plain};
        options.set_compression_per_level(&[Plain, Plain, Lz4, Lz4, Lz4, Lz4, Lz4]);
        if matches!(cf, Some(CF_TX_INDEX | CF_ACCOUNTS)) {
            options.set_write_buffer_size(SMALL_MEMTABLE_BYTES);
        }
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(cache);
        table.set_bloom_filter(10.0, false);
        options.set_block_based_table_factory(&table);
        options
    }

    fn open_db(path: &Path) -> Result<DB, StorageError> {
        // RocksDB would create a missing directory without syncing its name (crate::dirs).
        crate::dirs::create_dir_synced(path)
            .map_err(|source| StorageError::Io { path: path.to_path_buf(), source })?;
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let options = Self::options(&cache, None);
        let descriptors = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Self::options(&cache, Some(name))));
        DB::open_cf_descriptors(&options, path, descriptors)
            .map_err(|source| StorageError::Rocks { path: path.to_path_buf(), source })
    }

    fn rocks(&self, source: rocksdb::Error) -> StorageError {
        StorageError::Rocks { path: self.path.clone(), source }
    }

    fn cf(&self, name: &'static str) -> &rocksdb::ColumnFamily {
        // Every column family in COLUMN_FAMILIES is created when the database opens.
        self.db.cf_handle(name).unwrap_or_else(|| panic!("column family {name} is missing"))
    }

    fn get_raw(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.cf(cf), key).map_err(|source| self.rocks(source))
    }

    fn get<T: BorshDeserialize>(&self, cf: &'static str, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.get_raw(cf, key)? {
            Some(bytes) => decode(cf, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Opens the store at `path`, writing `genesis` first if the store is empty. Refuses a
    /// store that holds another chain.
    pub fn open_or_init(path: &Path, genesis: &GenesisState) -> Result<Store, StorageError> {
        let db = Self::open_db(path)?;
        let meta = db
            .cf_handle(CF_META)
            .ok_or_else(|| StorageError::Corrupt { cf: CF_META, detail: "missing".into() })?;
        let existing = db
            .get_cf(meta, META_GENESIS_HASH)
            .map_err(|source| StorageError::Rocks { path: path.into(), source })?;
        if existing.is_none() {
            let mut batch = WriteBatch::default();
            let accounts = db
                .cf_handle(CF_ACCOUNTS)
                .ok_or_else(|| StorageError::Corrupt { cf: CF_ACCOUNTS, detail: "missing".into() })?;
            for (address, account) in &genesis.accounts {
                batch.put_cf(accounts, address.0, encode(account));
            }
            let registries = db
                .cf_handle(CF_VALIDATOR_SETS)
                .ok_or_else(|| StorageError::Corrupt { cf: CF_VALIDATOR_SETS, detail: "missing".into() })?;
            batch.put_cf(registries, REGISTRY_KEY, encode(&genesis.registry));
            batch.put_cf(registries, registry_at_key(Height::GENESIS), encode(&genesis.registry));
            batch.put_cf(meta, META_GENESIS_HASH, genesis.genesis_hash.0);
            batch.put_cf(meta, META_GENESIS_HEADER, encode(&genesis.header));
            batch.put_cf(meta, META_HEAD, encode(&genesis.header));
            batch.put_cf(meta, META_ACCOUNT_COUNT, (genesis.accounts.len() as u64).to_le_bytes());
            let mut write = WriteOptions::default();
            write.set_sync(true);
            db.write_opt(batch, &write)
                .map_err(|source| StorageError::Rocks { path: path.into(), source })?;
        }
        drop(db);
        let store = Self::open(path)?;
        let found = store.genesis_hash()?;
        if found != genesis.genesis_hash {
            return Err(StorageError::WrongChain {
                path: path.into(),
                expected: genesis.genesis_hash,
                found,
            });
        }
        Ok(store)
    }

    /// Opens an initialised store and restores its last committed block.
    pub fn open(path: &Path) -> Result<Store, StorageError> {
        let db = Self::open_db(path)?;
        let mut store = Store {
            db,
            path: path.to_path_buf(),
            head: RwLock::new(Head {
                header: genesis_placeholder(),
                tree: StateTree::default(),
                accounts: HashMap::new(),
                registry: ValidatorRegistry::new(Digest::ZERO, 1, Vec::new()),
                addresses: AddressTree::default(),
                boundaries: Vec::new(),
            }),
            sync_writes: true,
        };
        let Some(header) = store.get::<Header>(CF_META, META_HEAD)? else {
            return Err(StorageError::NotInitialized { path: path.to_path_buf() });
        };
        let (tree, accounts) = store.load_accounts()?;
        if tree.root() != header.state_root {
            return Err(StorageError::Corrupt {
                cf: CF_ACCOUNTS,
                detail: format!(
                    "state root {} does not match head {} root {}",
                    tree.root(),
                    header.height,
                    header.state_root
                ),
            });
        }
        let registry: ValidatorRegistry = store
            .get(CF_VALIDATOR_SETS, REGISTRY_KEY)?
            .ok_or(StorageError::Corrupt { cf: CF_VALIDATOR_SETS, detail: "no validator registry".into() })?;
        if registry.hash() != header.validators_hash {
            return Err(StorageError::Corrupt {
                cf: CF_VALIDATOR_SETS,
                detail: format!("validator registry does not match head {} validators hash", header.height),
            });
        }
        // A head at a checkpoint boundary (an idle chain fills up to one) can prove accounts
        // at that height after a restart too.
        let addresses =
            AddressTree::build(accounts.iter().map(|(address, account)| (*address, account.slot)));
        if addresses.root() != header.address_root {
            return Err(StorageError::Corrupt {
                cf: CF_ACCOUNTS,
                detail: format!("address root does not match head {}", header.height),
            });
        }
        let boundaries = if header.height.0.is_multiple_of(registry.checkpoint_interval.max(1)) {
            let boundary = BoundaryState {
                header: header.clone(),
                tree: tree.clone(),
                addresses: addresses.clone(),
                before: HashMap::new(),
            };
            vec![boundary]
        } else {
            Vec::new()
        };
        *store.head.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Head { header, tree, accounts, registry, addresses, boundaries };
        Ok(store)
    }

    /// Turns off the fsync per commit. Only for benchmarks that measure execution alone.
    pub fn set_sync_writes(&mut self, sync: bool) {
        self.sync_writes = sync;
    }

    /// Reads every account and rebuilds the state tree from them.
    fn load_accounts(&self) -> Result<(StateTree, HashMap<Address, Account>), StorageError> {
        let count_bytes = self
            .get_raw(CF_META, META_ACCOUNT_COUNT)?
            .ok_or(StorageError::Corrupt { cf: CF_META, detail: "no account count".into() })?;
        let count = u64::from_le_bytes(
            count_bytes
                .as_slice()
                .try_into()
                .map_err(|_| StorageError::Corrupt { cf: CF_META, detail: "account count".into() })?,
        );
        let mut leaves: Vec<Option<Digest>> = vec![None; count as usize];
        let mut accounts = HashMap::with_capacity(count as usize);
        for entry in self.db.iterator_cf(self.cf(CF_ACCOUNTS), IteratorMode::Start) {
            let (key, value) = entry.map_err(|source| self.rocks(source))?;
            let address =
                tetrad_consensus::PublicKey(key.as_ref().try_into().map_err(|_| StorageError::Corrupt {
                    cf: CF_ACCOUNTS,
                    detail: "address length".into(),
                })?);
            let account: Account = decode(CF_ACCOUNTS, &value)?;
            let slot = leaves.get_mut(account.slot as usize).ok_or_else(|| StorageError::Corrupt {
                cf: CF_ACCOUNTS,
                detail: format!("slot {} beyond account count {count}", account.slot),
            })?;
            if slot.replace(account.leaf(&address)).is_some() {
                return Err(StorageError::Corrupt {
                    cf: CF_ACCOUNTS,
                    detail: format!("slot {} used twice", account.slot),
                });
            }
            accounts.insert(address, account);
        }
        let leaves = leaves
            .into_iter()
            .enumerate()
            .map(|(slot, leaf)| {
                leaf.ok_or(StorageError::Corrupt { cf: CF_ACCOUNTS, detail: format!("slot {slot} empty") })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((StateTree::from_leaves(leaves), accounts))
    }

    fn read_head(&self) -> RwLockReadGuard<'_, Head> {
        self.head.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_head(&self) -> RwLockWriteGuard<'_, Head> {
        self.head.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The validator registry at the head (every epoch's keys).
    pub fn registry(&self) -> ValidatorRegistry {
        self.read_head().registry.clone()
    }

    /// Validator `validator`'s consensus key for the next block: the key a rotation of that
    /// validator must be signed with if it executes next (no copy of the registry).
    pub fn validator_key(
        &self,
        validator: tetrad_consensus::ValidatorIndex,
    ) -> Option<tetrad_consensus::PublicKey> {
        let head = self.read_head();
        head.registry.keys_at(head.header.height.next()).get(validator.as_usize()).copied()
    }

    /// The header of the last committed block (the genesis header before the first block).
    pub fn head(&self) -> Header {
        self.read_head().header.clone()
    }

    pub fn genesis_hash(&self) -> Result<Digest, StorageError> {
        let bytes = self
            .get_raw(CF_META, META_GENESIS_HASH)?
            .ok_or(StorageError::NotInitialized { path: self.path.clone() })?;
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| StorageError::Corrupt { cf: CF_META, detail: "genesis hash".into() })?;
        Ok(Digest(array))
    }

    /// Runs `f` with a consistent view of the state at the head (for `execute`).
    pub fn with_state<R>(&self, f: impl FnOnce(&Header, &StoreState<'_>) -> R) -> R {
        let head = self.read_head();
        let state = StoreState { head: &head };
        f(&head.header, &state)
    }

    /// Like [`Store::with_state`], unless a block is being committed right now (the head is
    /// held for the write, its synced write included): then `None` at once, for a caller that
    /// must not wait for the disk.
    pub fn try_with_state<R>(&self, f: impl FnOnce(&Header, &StoreState<'_>) -> R) -> Option<R> {
        let head = match self.head.try_read() {
            Ok(head) => head,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let state = StoreState { head: &head };
        Some(f(&head.header, &state))
    }

    /// Commits an executed block in one atomic, synced write.
    pub fn commit(&self, block: &Block, execution: &Execution) -> Result<(), StorageError> {
        let mut head = self.write_head();
        let height = block.header.height;
        if height != head.header.height.next() || block.header.parent_hash != head.header.hash() {
            return Err(StorageError::NotNext {
                head: head.header.height,
                found: height,
                detail: "height or parent hash does not match".into(),
            });
        }
        if block.header != execution.header || execution.tree_update.root != block.header.state_root {
            return Err(StorageError::NotNext {
                head: head.header.height,
                found: height,
                detail: "header differs from execution".into(),
            });
        }
        let mut batch = WriteBatch::default();
        let key = be(height);
        // Encoded like the tuple (Header, Batch), without copying the batch into a tuple first.
        let mut block_bytes = encode(&block.header);
        block_bytes.extend(encode(&block.batch));
        batch.put_cf(self.cf(CF_BLOCKS), key, block_bytes);
        batch.put_cf(self.cf(CF_CERTIFICATES), key, encode(&block.certificate));
        batch.put_cf(self.cf(CF_BLOCK_HASHES), block.header.hash().0, key);
        // A block lists only transactions that executed (a copy of one that executed earlier,
        // here or in this block, has a used nonce and is left out), so each hash is indexed
        // once, where it executed.
        for receipt in &execution.receipts {
            let location = TxLocation { height, index: receipt.index };
            batch.put_cf(self.cf(CF_TX_INDEX), receipt.tx_hash.0, encode(&location));
        }
        // One record per block: a put per receipt would double the writes per transaction.
        batch.put_cf(self.cf(CF_RECEIPTS), key, encode(&execution.receipts));
        for (address, account) in &execution.changes {
            batch.put_cf(self.cf(CF_ACCOUNTS), address.0, encode(account));
        }
        if let Some(registry) = &execution.registry {
            batch.put_cf(self.cf(CF_VALIDATOR_SETS), REGISTRY_KEY, encode(registry));
            batch.put_cf(self.cf(CF_VALIDATOR_SETS), registry_at_key(height), encode(registry));
        }
        batch.put_cf(self.cf(CF_META), META_HEAD, encode(&block.header));
        batch.put_cf(self.cf(CF_META), META_ACCOUNT_COUNT, execution.tree_update.count.to_le_bytes());
        let mut write = WriteOptions::default();
        write.set_sync(self.sync_writes);
        self.db.write_opt(batch, &write).map_err(|source| self.rocks(source))?;
        head.tree.apply(&execution.tree_update);
        for (address, slot) in &execution.created {
            head.addresses.insert(address, *slot);
        }
        let Head { accounts, boundaries, .. } = &mut *head;
        for (address, account) in &execution.changes {
            let before = accounts.insert(*address, *account);
            for boundary in boundaries.iter_mut() {
                boundary.before.entry(*address).or_insert(before);
            }
        }
        if let Some(registry) = &execution.registry {
            head.registry = registry.clone();
        }
        head.header = block.header.clone();
        if height.0.is_multiple_of(head.registry.checkpoint_interval.max(1)) {
            let boundary = BoundaryState {
                header: block.header.clone(),
                tree: head.tree.clone(),
                addresses: head.addresses.clone(),
                before: HashMap::new(),
            };
            head.boundaries.push(boundary);
            if head.boundaries.len() > BOUNDARY_STATES_MAX {
                head.boundaries.remove(0);
            }
        }
        Ok(())
    }

    /// The validator registry after block `height` (`None` in a store written before registry
    /// snapshots were kept, or above the head).
    pub fn registry_at(&self, height: Height) -> Result<Option<ValidatorRegistry>, StorageError> {
        if height > self.read_head().header.height {
            return Ok(None);
        }
        let key = registry_at_key(height);
        let mode = IteratorMode::From(&key, rocksdb::Direction::Reverse);
        match self.db.iterator_cf(self.cf(CF_VALIDATOR_SETS), mode).next() {
            Some(entry) => {
                let (found, value) = entry.map_err(|source| self.rocks(source))?;
                if found.len() != key.len() || found[0] != REGISTRY_AT_PREFIX {
                    return Ok(None);
                }
                decode(CF_VALIDATOR_SETS, &value).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The account at `height` with a proof against that height's state root: at the head, or
    /// at one of the last checkpoint boundaries this store executed.
    pub fn prove_account_at(&self, address: &Address, height: Height) -> Result<AccountAt, StorageError> {
        let head = self.read_head();
        let (account, tree, addresses, header) = if height == head.header.height {
            (head.accounts.get(address).copied(), &head.tree, &head.addresses, &head.header)
        } else if let Some(boundary) =
            head.boundaries.iter().find(|boundary| boundary.header.height == height)
        {
            let account = match boundary.before.get(address) {
                Some(before) => *before,
                None => head.accounts.get(address).copied(),
            };
            (account, &boundary.tree, &boundary.addresses, &boundary.header)
        } else {
            return Ok(AccountAt::Unavailable);
        };
        let address_proof = addresses.prove(address);
        let Some(account) = account else {
            return Ok(AccountAt::Absent(Box::new((address_proof, header.clone()))));
        };
        let proof = tree.prove(account.slot).ok_or_else(|| StorageError::Corrupt {
            cf: CF_ACCOUNTS,
            detail: format!("slot {} not in the tree of height {height}", account.slot),
        })?;
        let account = AccountProof { address: *address, account, proof };
        Ok(AccountAt::Found(Box::new((account, address_proof, header.clone()))))
    }

    /// A committed transaction, its receipt and the header of its block, with proofs of both
    /// against the header's tx and receipts roots.
    pub fn prove_tx(&self, tx_hash: &Digest) -> Result<Option<TxInBlock>, StorageError> {
        let Some(location) = self.get::<TxLocation>(CF_TX_INDEX, &tx_hash.0)? else {
            return Ok(None);
        };
        let corrupt = |cf: &'static str, detail: String| StorageError::Corrupt { cf, detail };
        let block = self
            .block(location.height)?
            .ok_or_else(|| corrupt(CF_TX_INDEX, format!("block {} missing", location.height)))?;
        let receipts = self
            .receipts(location.height)?
            .ok_or_else(|| corrupt(CF_RECEIPTS, format!("no receipts for block {}", location.height)))?;
        let hashes: Vec<Digest> = receipts.iter().map(|receipt| receipt.tx_hash).collect();
        let index = u64::from(location.index);
        let Some(receipt) = receipts.get(location.index as usize).cloned() else {
            return Err(corrupt(CF_TX_INDEX, format!("index {} out of block", location.index)));
        };
        let tx = block
            .tx(&receipt.tx_hash)
            .map_err(|error| corrupt(CF_BLOCKS, error.to_string()))?
            .ok_or_else(|| {
                corrupt(
                    CF_BLOCKS,
                    format!("transaction {} not in block {}", receipt.tx_hash, location.height),
                )
            })?;
        let tx_proof = crate::block::prove_tx(&hashes, index)
            .ok_or_else(|| corrupt(CF_TX_INDEX, format!("index {} out of block", location.index)))?;
        let receipt_proof = crate::block::prove_receipt(&receipts, index)
            .ok_or_else(|| corrupt(CF_RECEIPTS, format!("receipt {} out of block", location.index)))?;
        Ok(Some(TxInBlock { tx, receipt, header: block.header, tx_proof, receipt_proof }))
    }

    pub fn genesis_header(&self) -> Result<Header, StorageError> {
        self.get(CF_META, META_GENESIS_HEADER)?
            .ok_or(StorageError::NotInitialized { path: self.path.clone() })
    }

    /// The header at `height` (the genesis header at 0).
    pub fn header(&self, height: Height) -> Result<Option<Header>, StorageError> {
        if height == Height::GENESIS {
            return self.genesis_header().map(Some);
        }
        // A block record is the header's encoding followed by the batch's: decode the header
        // alone from the pinned value (no copy, no decoding of a batch of up to 16 MiB).
        let pinned =
            self.db.get_pinned_cf(self.cf(CF_BLOCKS), be(height)).map_err(|source| self.rocks(source))?;
        let Some(bytes) = pinned else { return Ok(None) };
        let header = Header::deserialize(&mut &bytes[..])
            .map_err(|error| StorageError::Corrupt { cf: CF_BLOCKS, detail: error.to_string() })?;
        Ok(Some(header))
    }

    /// The checkpoint interval of the chain (without copying the registry).
    pub fn checkpoint_interval(&self) -> u64 {
        self.read_head().registry.checkpoint_interval.max(1)
    }

    pub fn block(&self, height: Height) -> Result<Option<Block>, StorageError> {
        let Some((header, batch)) = self.get::<(Header, Batch)>(CF_BLOCKS, &be(height))? else {
            return Ok(None);
        };
        let certificate: CommitCertificate =
            self.get(CF_CERTIFICATES, &be(height))?.ok_or_else(|| StorageError::Corrupt {
                cf: CF_CERTIFICATES,
                detail: format!("block {height} has no certificate"),
            })?;
        Ok(Some(Block { header, batch, certificate }))
    }

    /// The commit certificate of the block at `height` (without reading the block).
    pub fn certificate(&self, height: Height) -> Result<Option<CommitCertificate>, StorageError> {
        self.get(CF_CERTIFICATES, &be(height))
    }

    pub fn height_of(&self, block_hash: &Digest) -> Result<Option<Height>, StorageError> {
        match self.get_raw(CF_BLOCK_HASHES, &block_hash.0)? {
            Some(bytes) => {
                let array: [u8; 8] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt { cf: CF_BLOCK_HASHES, detail: "height".into() })?;
                Ok(Some(Height(u64::from_be_bytes(array))))
            }
            None => Ok(None),
        }
    }

    pub fn block_by_hash(&self, block_hash: &Digest) -> Result<Option<Block>, StorageError> {
        match self.height_of(block_hash)? {
            Some(height) => self.block(height),
            None => Ok(None),
        }
    }

    /// A committed transaction with its receipt.
    pub fn tx(&self, tx_hash: &Digest) -> Result<Option<(Tx, Receipt)>, StorageError> {
        let Some(location) = self.get::<TxLocation>(CF_TX_INDEX, &tx_hash.0)? else {
            return Ok(None);
        };
        let receipts: Vec<Receipt> =
            self.get(CF_RECEIPTS, &be(location.height))?.ok_or_else(|| StorageError::Corrupt {
                cf: CF_RECEIPTS,
                detail: format!("no receipts for block {}", location.height),
            })?;
        let receipt =
            receipts.into_iter().nth(location.index as usize).ok_or_else(|| StorageError::Corrupt {
                cf: CF_RECEIPTS,
                detail: format!("no receipt {} in block {}", location.index, location.height),
            })?;
        let block = self.block(location.height)?.ok_or_else(|| StorageError::Corrupt {
            cf: CF_TX_INDEX,
            detail: format!("block {} missing", location.height),
        })?;
        let corrupt = |detail: String| StorageError::Corrupt { cf: CF_BLOCKS, detail };
        let tx =
            block.tx(&receipt.tx_hash).map_err(|error| corrupt(error.to_string()))?.ok_or_else(|| {
                corrupt(format!("transaction {} not in block {}", receipt.tx_hash, location.height))
            })?;
        Ok(Some((tx, receipt)))
    }

    /// The account at the head (from memory).
    pub fn account(&self, address: &Address) -> Result<Option<Account>, StorageError> {
        Ok(self.read_head().accounts.get(address).copied())
    }

    /// The receipts of the block at `height`, in block order.
    pub fn receipts(&self, height: Height) -> Result<Option<Vec<Receipt>>, StorageError> {
        self.get(CF_RECEIPTS, &be(height))
    }

    /// The account with a proof against the head's state root (which is returned with it).
    pub fn prove_account(&self, address: &Address) -> Result<Option<(AccountProof, Header)>, StorageError> {
        let head = self.read_head();
        let Some(account) = head.accounts.get(address).copied() else {
            return Ok(None);
        };
        let proof = head.tree.prove(account.slot).ok_or_else(|| StorageError::Corrupt {
            cf: CF_ACCOUNTS,
            detail: format!("slot {} not in tree", account.slot),
        })?;
        Ok(Some((AccountProof { address: *address, account, proof }, head.header.clone())))
    }

    /// Records a stable checkpoint certificate (synced).
    pub fn put_checkpoint(&self, certificate: &CheckpointCertificate) -> Result<(), StorageError> {
        let mut write = WriteOptions::default();
        write.set_sync(self.sync_writes);
        self.db
            .put_cf_opt(
                self.cf(CF_CHECKPOINTS),
                be(certificate.statement.height),
                encode(certificate),
                &write,
            )
            .map_err(|source| self.rocks(source))
    }

    pub fn checkpoint(&self, height: Height) -> Result<Option<CheckpointCertificate>, StorageError> {
        self.get(CF_CHECKPOINTS, &be(height))
    }

    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointCertificate>, StorageError> {
        match self.db.iterator_cf(self.cf(CF_CHECKPOINTS), IteratorMode::End).next() {
            Some(entry) => {
                let (_, value) = entry.map_err(|source| self.rocks(source))?;
                decode(CF_CHECKPOINTS, &value).map(Some)
            }
            None => Ok(None),
        }
    }
}

/// The state at the head, as read by `execute`.
pub struct StoreState<'a> {
    head: &'a Head,
}

impl StateReader for StoreState<'_> {
    type Error = StorageError;

    fn account(&self, address: &Address) -> Result<Option<Account>, StorageError> {
        Ok(self.head.accounts.get(address).copied())
    }

    fn tree(&self) -> &StateTree {
        &self.head.tree
    }

    fn addresses(&self) -> &AddressTree {
        &self.head.addresses
    }

    fn registry(&self) -> &ValidatorRegistry {
        &self.head.registry
    }
}

fn genesis_placeholder() -> Header {
    Header {
        chain_id: String::new(),
        height: Height::GENESIS,
        parent_hash: Digest::ZERO,
        batch_digest: Digest::ZERO,
        tx_root: Digest::ZERO,
        tx_count: 0,
        state_root: Digest::ZERO,
        receipts_root: Digest::ZERO,
        address_root: Digest::ZERO,
        validators_hash: Digest::ZERO,
        view: Default::default(),
        proposer: Default::default(),
        timestamp_ms: 0,
    }
}
