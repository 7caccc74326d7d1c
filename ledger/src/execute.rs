//! The deterministic state machine: `execute(state, parent, batch, txs) -> Execution`.
//!
//! Execution is a pure function of the state it reads and the batch: no clock, no randomness, no
//! hash-map iteration order reaches the result. Signatures and other static checks are *not*
//! repeated here; they were checked at admission and before the pre-prepare was accepted (or the
//! block came with a commit certificate). Dynamic checks (nonce, balance, overflow) are made
//! here. A transaction whose nonce is wrong never executes: nothing changes, and the block does
//! not list it (no receipt, not in the tx root; the stored batch still holds it). One whose nonce is right but that fails a dynamic check is executed all the same:
//! a failed receipt, and nothing changes but its sender's nonce, which it uses up (the same
//! signed bytes can never execute later, whatever the sender's balance becomes; DESIGN.md,
//! Ledger). A key rotation's proof of possession is checked here too (it depends on the
//! validator registry), so a bad one is a failed receipt with its reason.

use std::collections::BTreeMap;

use tetrad_consensus::{Batch, Digest, Height};

use crate::address_tree::AddressTree;
use crate::block::{Account, ExecutionError, Header, Outcome, Receipt, receipts_root, tx_root};
use crate::state_tree::{StateTree, TreeUpdate};
use crate::tx::{Address, Tx, TxKind};
use crate::validators::ValidatorRegistry;

/// Read access to the state a block executes on.
pub trait StateReader {
    type Error;
    fn account(&self, address: &Address) -> Result<Option<Account>, Self::Error>;
    fn tree(&self) -> &StateTree;
    fn addresses(&self) -> &AddressTree;
    fn registry(&self) -> &ValidatorRegistry;
}

/// The result of executing one batch on one state: apply it with the store's `commit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    pub header: Header,
    /// Every account the block changed, with its new state (sorted by address).
    pub changes: BTreeMap<Address, Account>,
    /// One per transaction in the block, in block order.
    pub receipts: Vec<Receipt>,
    pub tx_hashes: Vec<Digest>,
    /// Each block transaction's position in the batch. A transaction whose nonce was wrong
    /// never executed and changed nothing, so the block leaves it out (no hash in the tx
    /// root, no receipt): PBFT may order one transaction twice (an older view's batch that a
    /// new view missed can come back above a newer view's copy), and a Byzantine primary may
    /// propose a copy of one that executed; neither puts it in the chain twice. The batch, which
    /// the certificate signs, is stored whole.
    pub positions: Vec<u32>,
    pub tree_update: TreeUpdate,
    /// The accounts this block created: (address, slot), for the address tree.
    pub created: Vec<(Address, u64)>,
    /// The validator registry after this block, if a rotation changed it.
    pub registry: Option<ValidatorRegistry>,
}

/// Accounts touched so far in this block, over the state underneath.
struct Overlay<'a, S: StateReader> {
    state: &'a S,
    changes: BTreeMap<Address, Account>,
    next_slot: u64,
    height: Height,
    /// A copy of the registry once a rotation in this block changed it.
    registry: Option<ValidatorRegistry>,
}

impl<S: StateReader> Overlay<'_, S> {
    fn get(&self, address: &Address) -> Result<Option<Account>, S::Error> {
        match self.changes.get(address) {
            Some(account) => Ok(Some(*account)),
            None => self.state.account(address),
        }
    }

    /// The account, or a new empty one in the next free slot (not yet recorded).
    fn get_or_new(&self, address: &Address) -> Result<(Account, bool), S::Error> {
        Ok(match self.get(address)? {
            Some(account) => (account, false),
            None => (Account { balance: 0, nonce: 0, slot: self.next_slot }, true),
        })
    }

    fn apply(&mut self, tx: &Tx) -> Result<Result<(), ExecutionError>, S::Error> {
        let from = tx.body.from;
        let existing = self.get(&from)?;
        let expected = existing.map(|account| account.nonce).unwrap_or(0);
        if tx.body.nonce != expected {
            return Ok(Err(ExecutionError::BadNonce { expected, found: tx.body.nonce }));
        }
        // A nonce that reached u64::MAX would wrap and reopen every old one: refused.
        let Some(nonce_after) = expected.checked_add(1) else {
            return Ok(Err(ExecutionError::BadNonce { expected, found: tx.body.nonce }));
        };
        let outcome = match &tx.body.kind {
            TxKind::Transfer { to, amount } => match existing {
                Some(sender) => self.transfer(from, sender, nonce_after, to, *amount)?,
                // An account that does not exist has nothing to send.
                None => Err(ExecutionError::InsufficientBalance { balance: 0, amount: *amount }),
            },
            TxKind::RotateValidatorKey { validator, new_key, proof_of_possession } => {
                // The sender (the validator's consensus key) pays nothing.
                self.rotate(from, *validator, new_key, proof_of_possession)
            }
        };
        match outcome {
            // A transfer wrote its sender's new nonce with its balance.
            Ok(()) if matches!(tx.body.kind, TxKind::Transfer { .. }) => {}
            // Anything else that executed uses up its nonce here, failed or not. The sender's
            // account exists from then on (an empty one if it had none), so the nonce rule
            // protects these signed bytes from replay for good.
            _ => self.use_nonce(from, nonce_after)?,
        }
        Ok(outcome)
    }

    /// Sets the sender's nonce to `nonce_after`, creating its (empty) account if needed.
    fn use_nonce(&mut self, from: Address, nonce_after: u64) -> Result<(), S::Error> {
        let (account, created) = self.get_or_new(&from)?;
        self.changes.insert(from, Account { nonce: nonce_after, ..account });
        if created {
            self.next_slot += 1;
        }
        Ok(())
    }

    fn transfer(
        &mut self,
        from: Address,
        sender: Account,
        nonce_after: u64,
        to: &Address,
        amount: u64,
    ) -> Result<Result<(), ExecutionError>, S::Error> {
        let Some(balance_after) = sender.balance.checked_sub(amount) else {
            return Ok(Err(ExecutionError::InsufficientBalance { balance: sender.balance, amount }));
        };
        if *to == from {
            self.changes.insert(from, Account { nonce: nonce_after, ..sender });
            return Ok(Ok(()));
        }
        let (recipient, created) = self.get_or_new(to)?;
        let Some(recipient_balance) = recipient.balance.checked_add(amount) else {
            return Ok(Err(ExecutionError::BalanceOverflow { balance: recipient.balance, amount }));
        };
        self.changes.insert(from, Account { balance: balance_after, nonce: nonce_after, ..sender });
        self.changes.insert(*to, Account { balance: recipient_balance, ..recipient });
        if created {
            self.next_slot += 1;
        }
        Ok(Ok(()))
    }

    /// Checks a key rotation against the registry and schedules it.
    fn rotate(
        &mut self,
        from: Address,
        validator: tetrad_consensus::ValidatorIndex,
        new_key: &tetrad_consensus::PublicKey,
        proof: &tetrad_consensus::Signature,
    ) -> Result<(), ExecutionError> {
        let registry = self.registry.as_ref().unwrap_or_else(|| self.state.registry());
        let index = validator.as_usize();
        let Some(current) = registry.keys_at(self.height).get(index).copied() else {
            return Err(ExecutionError::UnknownValidator { validator: validator.0 });
        };
        if from != current {
            return Err(ExecutionError::NotCurrentKey { validator: validator.0 });
        }
        if let Some(activation) = registry.pending(validator, self.height) {
            return Err(ExecutionError::RotationPending { validator: validator.0, activation: activation.0 });
        }
        if registry.used.contains(new_key) {
            return Err(ExecutionError::KeyAlreadyUsed { key: *new_key });
        }
        if !registry.check_possession(validator, &current, new_key, proof) {
            return Err(ExecutionError::InvalidProofOfPossession);
        }
        let mut updated = registry.clone();
        let first = updated.activation(self.height);
        updated.rotate(first, validator, *new_key);
        self.registry = Some(updated);
        Ok(())
    }
}

/// Executes `txs` (decoded from `batch.payload`) on `state`, whose last block is `parent`.
pub fn execute<S: StateReader>(
    state: &S,
    parent: &Header,
    batch: &Batch,
    txs: &[Tx],
) -> Result<Execution, S::Error> {
    let height = parent.height.next();
    let mut overlay =
        Overlay { state, changes: BTreeMap::new(), next_slot: state.tree().count(), height, registry: None };
    let mut receipts = Vec::with_capacity(txs.len());
    let mut tx_hashes = Vec::with_capacity(txs.len());
    let mut positions = Vec::with_capacity(txs.len());
    for (position, tx) in txs.iter().enumerate() {
        let outcome = match overlay.apply(tx)? {
            Ok(()) => Outcome::Success,
            // Not executed, nothing changed: not in the block (see `Execution::positions`).
            Err(ExecutionError::BadNonce { .. }) => continue,
            Err(error) => Outcome::Failed { error },
        };
        let tx_hash = tx.hash();
        receipts.push(Receipt { tx_hash, height, index: tx_hashes.len() as u32, outcome });
        tx_hashes.push(tx_hash);
        positions.push(position as u32);
    }
    let leaves: BTreeMap<u64, Digest> =
        overlay.changes.iter().map(|(address, account)| (account.slot, account.leaf(address))).collect();
    let tree_update = state.tree().update(&leaves);
    // New accounts take the slots after the tree's count.
    let created: Vec<(Address, u64)> = overlay
        .changes
        .iter()
        .filter(|(_, account)| account.slot >= state.tree().count())
        .map(|(address, account)| (*address, account.slot))
        .collect();
    let address_root = state.addresses().root_with(&created);
    let header = Header {
        chain_id: parent.chain_id.clone(),
        height,
        parent_hash: parent.hash(),
        batch_digest: batch.digest(),
        tx_root: tx_root(&tx_hashes),
        tx_count: tx_hashes.len() as u32,
        state_root: tree_update.root,
        receipts_root: receipts_root(&receipts),
        address_root,
        validators_hash: overlay
            .registry
            .as_ref()
            .map(ValidatorRegistry::hash)
            .unwrap_or(parent.validators_hash),
        view: batch.view,
        proposer: batch.proposer,
        timestamp_ms: batch.timestamp_ms.max(parent.timestamp_ms),
    };
    Ok(Execution {
        header,
        changes: overlay.changes,
        receipts,
        tx_hashes,
        positions,
        tree_update,
        created,
        registry: overlay.registry,
    })
}

/// The genesis state: accounts in address order get slots 0.., and the header of height 0.
pub fn genesis_state(
    chain_id: &str,
    genesis_time_ms: u64,
    balances: &[(Address, u64)],
    registry: &ValidatorRegistry,
) -> (Header, BTreeMap<Address, Account>, StateTree) {
    let mut sorted: Vec<(Address, u64)> = balances.to_vec();
    sorted.sort_by_key(|(address, _)| *address);
    let accounts: BTreeMap<Address, Account> = sorted
        .iter()
        .enumerate()
        .map(|(slot, (address, balance))| {
            (*address, Account { balance: *balance, nonce: 0, slot: slot as u64 })
        })
        .collect();
    let mut leaves = vec![Digest::ZERO; accounts.len()];
    for (address, account) in &accounts {
        leaves[account.slot as usize] = account.leaf(address);
    }
    let tree = StateTree::from_leaves(leaves);
    let header = Header {
        chain_id: chain_id.to_string(),
        height: Height::GENESIS,
        parent_hash: Digest::ZERO,
        batch_digest: Digest::ZERO,
        tx_root: tx_root(&[]),
        tx_count: 0,
        state_root: tree.root(),
        receipts_root: receipts_root(&[]),
        address_root: AddressTree::build(accounts.iter().map(|(address, account)| (*address, account.slot)))
            .root(),
        validators_hash: registry.hash(),
        view: Default::default(),
        proposer: Default::default(),
        timestamp_ms: genesis_time_ms,
    };
    (header, accounts, tree)
}
