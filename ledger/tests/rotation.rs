//! Key rotation in the ledger: the transaction, its rules, each refusal with its receipt reason,
//! activation at the boundary, and the registry across a reopened store.

use tetrad_consensus::{Batch, Height, PublicKey, SecretKey, ValidatorIndex, View};
use tetrad_ledger::block::{ExecutionError, Outcome};
use tetrad_ledger::execute::execute;
use tetrad_ledger::scratch::ScratchDir;
use tetrad_ledger::testkit::{MemoryState, TestChain, validator_key};
use tetrad_ledger::tx::{Tx, TxBody, TxKind, chain_tag, encode_payload};
use tetrad_ledger::validators::possession_digest;
use tetrad_ledger::{Execution, Header, Store};

fn rotation(
    chain: &TestChain,
    signer: &SecretKey,
    nonce: u64,
    validator: u16,
    new: &SecretKey,
    possessor: &SecretKey,
) -> Tx {
    let validator = ValidatorIndex(validator);
    let digest = possession_digest(&chain.genesis_hash, validator, &signer.public_key(), &new.public_key());
    let body = TxBody {
        chain: chain_tag(&chain.genesis_hash),
        from: signer.public_key(),
        nonce,
        kind: TxKind::RotateValidatorKey {
            validator,
            new_key: new.public_key(),
            proof_of_possession: possessor.sign_digest(&digest),
        },
    };
    Tx::sign(body, signer, &chain.genesis_hash)
}

struct Ledger {
    chain: TestChain,
    state: MemoryState,
    parent: Header,
}

impl Ledger {
    fn new() -> Ledger {
        let chain = TestChain::new(4, 4, 1000);
        let state = MemoryState::from_genesis(&chain.genesis);
        let parent = chain.genesis.header.clone();
        Ledger { chain, state, parent }
    }

    fn block(&mut self, txs: &[Tx]) -> Execution {
        let batch = Batch {
            view: View(0),
            proposer: ValidatorIndex(0),
            timestamp_ms: 1,
            payload: encode_payload(txs),
        };
        let execution =
            execute(&self.state, &self.parent, &batch, txs).unwrap_or_else(|never| match never {});
        self.state.apply(&execution);
        self.parent = execution.header.clone();
        execution
    }

    fn outcome(&mut self, tx: Tx) -> Outcome {
        self.block(&[tx]).receipts[0].outcome.clone()
    }

    /// Whether a block left `tx` out: its nonce was wrong, it never executed.
    fn left_out(&mut self, tx: Tx) -> bool {
        self.block(&[tx]).receipts.is_empty()
    }
}

fn failed(error: ExecutionError) -> Outcome {
    Outcome::Failed { error }
}

fn new_key(byte: u8) -> SecretKey {
    SecretKey::from_seed([byte; 32])
}

#[test]
fn a_rotation_takes_effect_after_the_next_checkpoint() {
    let mut ledger = Ledger::new();
    let old = validator_key(1);
    let new = new_key(201);
    let hash_before = ledger.parent.validators_hash;
    // Committed at height 1 with K = 4: the next checkpoint is 4, so the new key signs from 5.
    let execution = ledger.block(&[rotation(&ledger.chain, &old, 0, 1, &new, &new)]);
    assert_eq!(execution.receipts[0].outcome, Outcome::Success);
    assert_ne!(execution.header.validators_hash, hash_before);
    let registry = &ledger.state.registry;
    assert_eq!(registry.pending(ValidatorIndex(1), Height(1)), Some(Height(5)));
    assert_eq!(registry.keys_at(Height(4))[1], old.public_key());
    assert_eq!(registry.keys_at(Height(5))[1], new.public_key());
    let schedule = registry.schedule(Height(1)).expect("schedule");
    assert_eq!(schedule.at(Height(5)).key(ValidatorIndex(1)), Some(&new.public_key()));
    assert_eq!(schedule.at(Height(4)).key(ValidatorIndex(1)), Some(&old.public_key()));
    // A second rotation before the first took effect.
    let newer = new_key(202);
    assert_eq!(
        ledger.outcome(rotation(&ledger.chain, &old, 1, 1, &newer, &newer)),
        failed(ExecutionError::RotationPending { validator: 1, activation: 5 })
    );
    // Replaying the first rotation: the nonce was used (and the refused second one used its
    // nonce too).
    assert!(ledger.left_out(rotation(&ledger.chain, &old, 0, 1, &new, &new)));
    // After activation the old key is no longer the validator's current key…
    while ledger.parent.height < Height(5) {
        ledger.block(&[]);
    }
    assert_eq!(
        ledger.outcome(rotation(&ledger.chain, &old, 2, 1, &newer, &newer)),
        failed(ExecutionError::NotCurrentKey { validator: 1 })
    );
    // …and the new key can rotate again.
    assert_eq!(ledger.outcome(rotation(&ledger.chain, &new, 0, 1, &newer, &newer)), Outcome::Success);
}

#[test]
fn each_refusal_has_its_receipt_reason_and_changes_nothing_but_the_senders_nonce() {
    let mut ledger = Ledger::new();
    let (v1, v2) = (validator_key(1), validator_key(2));
    let new = new_key(210);
    let before = ledger.state.registry.clone();
    // A proof of possession signed by another key.
    let bad_proof = rotation(&ledger.chain, &v1, 0, 1, &new, &new_key(211));
    assert_eq!(ledger.outcome(bad_proof.clone()), failed(ExecutionError::InvalidProofOfPossession));
    // Each refusal used up its nonce: the same signed bytes never execute again.
    assert_eq!(ledger.state.accounts.get(&v1.public_key()).map(|account| account.nonce), Some(1));
    assert!(ledger.left_out(bad_proof));
    // A key some validator already has (validator 2's), and the validator's own current key.
    let outcome = ledger.outcome(rotation(&ledger.chain, &v1, 1, 1, &v2, &v2));
    assert_eq!(outcome, failed(ExecutionError::KeyAlreadyUsed { key: v2.public_key() }));
    let outcome = ledger.outcome(rotation(&ledger.chain, &v1, 2, 1, &v1, &v1));
    assert_eq!(outcome, failed(ExecutionError::KeyAlreadyUsed { key: v1.public_key() }));
    // Signed by a key that is not the validator's current one.
    assert_eq!(
        ledger.outcome(rotation(&ledger.chain, &v2, 0, 1, &new, &new)),
        failed(ExecutionError::NotCurrentKey { validator: 1 })
    );
    // A validator that does not exist.
    assert_eq!(
        ledger.outcome(rotation(&ledger.chain, &v1, 3, 9, &new, &new)),
        failed(ExecutionError::UnknownValidator { validator: 9 })
    );
    assert_eq!(ledger.state.registry, before, "a refused rotation changed the registry");
    // A key used before (even if no longer current) is refused too.
    assert_eq!(ledger.outcome(rotation(&ledger.chain, &v1, 4, 1, &new, &new)), Outcome::Success);
    while ledger.parent.height
        < ledger.state.registry.pending(ValidatorIndex(1), Height(0)).unwrap_or(Height(0))
    {
        ledger.block(&[]);
    }
    let outcome = ledger.outcome(rotation(&ledger.chain, &new, 0, 1, &v1, &v1));
    assert_eq!(outcome, failed(ExecutionError::KeyAlreadyUsed { key: v1.public_key() }));
}

#[test]
fn two_validators_rotating_in_one_block_share_an_epoch() {
    let mut ledger = Ledger::new();
    let (a, b) = (new_key(220), new_key(221));
    let execution = ledger.block(&[
        rotation(&ledger.chain, &validator_key(0), 0, 0, &a, &a),
        rotation(&ledger.chain, &validator_key(3), 0, 3, &b, &b),
    ]);
    assert!(execution.receipts.iter().all(|receipt| receipt.outcome == Outcome::Success));
    let registry = &ledger.state.registry;
    assert_eq!(registry.epochs.len(), 2);
    let keys: Vec<PublicKey> = registry.keys_at(Height(5)).to_vec();
    assert_eq!((keys[0], keys[3]), (a.public_key(), b.public_key()));
}

#[test]
fn the_registry_survives_a_reopened_store() {
    let chain = TestChain::new(4, 4, 1000);
    let dir = ScratchDir::new("rotation-store").expect("scratch");
    let path = dir.join("db");
    let new = new_key(230);
    {
        let store = Store::open_or_init(&path, &chain.genesis).expect("open");
        chain.commit(&store, &[rotation(&chain, &validator_key(2), 0, 2, &new, &new)]).expect("commit");
        assert_eq!(store.registry().pending(ValidatorIndex(2), Height(1)), Some(Height(5)));
    }
    let store = Store::open(&path).expect("reopen");
    let registry = store.registry();
    assert_eq!(registry.keys_at(Height(5))[2], new.public_key());
    assert_eq!(registry.hash(), store.head().validators_hash);
}
