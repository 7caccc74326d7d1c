//! The light client against a real store: honest proofs verify, and every way a node can lie
//! about them is refused with the error that names the lie.

use tetrad_consensus::{Digest, Height, SecretKey};
use tetrad_ledger::light::{
    AccountStateProof, EpochLink, FinalizedHeader, HeaderProof, LightClient, ProofError, TxProof,
};
use tetrad_ledger::scratch::ScratchDir;
use tetrad_ledger::testkit::TestChain;
use tetrad_ledger::{AccountAt, Header, Store, Tx};

/// A chain of 4 validators, checkpoint interval 4, with a transfer in every block.
struct Fixture {
    chain: TestChain,
    store: Store,
    _dir: ScratchDir,
    /// Validator keys by epoch (genesis first).
    keys: Vec<Vec<SecretKey>>,
    txs: Vec<Tx>,
}

impl Fixture {
    fn new() -> Fixture {
        let chain = TestChain::new(4, 8, 1_000_000);
        let dir = ScratchDir::new("light").expect("scratch dir");
        let store = Store::open_or_init(&dir.join("db"), &chain.genesis).expect("store");
        let keys = vec![chain.validator_keys.clone()];
        Fixture { chain, store, _dir: dir, keys, txs: Vec::new() }
    }

    /// Commits blocks up to `height`, two transfers each (account 0 pays account 1, the one
    /// kept in `txs`; account 4 pays account 5).
    fn commit_to(&mut self, height: u64) {
        while self.store.head().height.0 < height {
            let nonce = self.txs.len() as u64;
            let tx = self.chain.transfer(0, nonce, 1, 1);
            let other = self.chain.transfer(4, nonce, 5, 1);
            self.chain.commit(&self.store, &[tx.clone(), other]).expect("commit");
            self.txs.push(tx);
        }
    }

    /// Rotates every validator's key in the next block (sent by the current keys).
    fn rotate_all(&mut self, seed: u8) {
        let current = self.keys.last().expect("keys").clone();
        let next: Vec<SecretKey> = (0..4u8).map(|index| SecretKey::from_seed([seed + index; 32])).collect();
        let rotations: Vec<Tx> = (0..4u16)
            .map(|index| self.chain.rotation(index, &current[index as usize], &next[index as usize], 0))
            .collect();
        self.chain.commit(&self.store, &rotations).expect("commit rotations");
        self.keys.push(next);
    }

    /// Rotates validator `validator`'s key in the next block (sent by its current key).
    fn rotate_one(&mut self, validator: u16, seed: u8) {
        let registry = self.store.registry();
        let head = self.store.head().height.next();
        let current_key = registry.keys_at(head)[validator as usize];
        let all: Vec<SecretKey> = self.keys.iter().flatten().cloned().collect();
        let current = all.iter().find(|key| key.public_key() == current_key).expect("known key").clone();
        let next = SecretKey::from_seed([seed; 32]);
        let rotation = self.chain.rotation(validator, &current, &next, 0);
        self.chain.commit(&self.store, &[rotation]).expect("commit rotation");
        self.keys.push(vec![next]);
    }

    fn header(&self, height: u64) -> Header {
        self.store.header(Height(height)).expect("read").expect("header")
    }

    /// The keys that sign `height`, by the store's registry.
    fn keys_at(&self, height: u64) -> Vec<SecretKey> {
        let registry = self.store.registry();
        let public = registry.keys_at(Height(height));
        let all: Vec<SecretKey> = self.keys.iter().flatten().cloned().collect();
        public
            .iter()
            .map(|key| all.iter().find(|secret| secret.public_key() == *key).expect("known key").clone())
            .collect()
    }

    fn finalized(&self, height: u64) -> FinalizedHeader {
        let header = self.header(height);
        let certificate = self.chain.certify_checkpoint(&header, &self.keys_at(height));
        FinalizedHeader { header, certificate }
    }

    fn header_proof(&self, height: u64, checkpoint: u64) -> HeaderProof {
        HeaderProof {
            height: Height(height),
            checkpoint: self.finalized(checkpoint),
            registry: self.store.registry_at(Height(checkpoint)).expect("read").expect("registry"),
            headers: (height..checkpoint).map(|h| self.header(h)).collect(),
        }
    }

    fn tx_proof(&self, tx: &Tx, checkpoint: u64) -> TxProof {
        let found = self.store.prove_tx(&tx.hash()).expect("read").expect("tx");
        TxProof {
            tx: found.tx,
            receipt: found.receipt.clone(),
            tx_proof: found.tx_proof,
            receipt_proof: found.receipt_proof,
            block: self.header_proof(found.receipt.height.0, checkpoint),
        }
    }

    /// Epoch links for every rotation the store's registry holds, up to `height`.
    fn links(&self, height: u64) -> Vec<EpochLink> {
        let registry = self.store.registry();
        registry
            .epochs
            .iter()
            .skip(1)
            .map(|(first, _)| first.0 - 1)
            .filter(|boundary| *boundary <= height)
            .map(|boundary| EpochLink {
                checkpoint: self.finalized(boundary),
                registry: self.store.registry_at(Height(boundary)).expect("read").expect("registry"),
            })
            .collect()
    }

    fn account_proof(&self, address: &tetrad_ledger::Address, height: u64) -> AccountStateProof {
        let (account, address_proof) =
            match self.store.prove_account_at(address, Height(height)).expect("read") {
                AccountAt::Found(found) => (Some(found.0), found.1),
                AccountAt::Absent(absent) => (None, absent.0),
                AccountAt::Unavailable => panic!("no state of {height}"),
            };
        AccountStateProof {
            address: *address,
            account,
            address_proof,
            block: self.header_proof(height, height),
        }
    }

    fn client(&self) -> LightClient {
        LightClient::from_genesis(self.chain.genesis.registry.clone())
    }
}

#[test]
fn honest_proofs_verify() {
    let mut fixture = Fixture::new();
    fixture.commit_to(8);
    let client = fixture.client();
    // A transaction of block 6, proven by the checkpoint at 8 and the headers 6 and 7.
    let tx = fixture.txs[5].clone();
    let proven = client.tx(&tx.hash(), &fixture.tx_proof(&tx, 8)).expect("tx proves");
    assert_eq!(proven.block.header.height, Height(6));
    assert_eq!(proven.block.checkpoint, Height(8));
    assert_eq!(proven.block.signers, 3);
    // A transaction of the checkpoint's own block.
    let last = fixture.txs[7].clone();
    client.tx(&last.hash(), &fixture.tx_proof(&last, 8)).expect("tx at the checkpoint proves");
    // The sender's account at the checkpoint (the head here).
    let address = fixture.chain.addresses[0];
    let proof = fixture.account_proof(&address, 8);
    let (account, proven) = client.account(&address, &proof).expect("account proves");
    assert_eq!(proven.header.height, Height(8));
    assert_eq!(account.expect("present").nonce, 8);
    // An address with no account: its absence proves too.
    let stranger = SecretKey::from_seed([99; 32]).public_key();
    let proof = fixture.account_proof(&stranger, 8);
    assert_eq!(client.account(&stranger, &proof).expect("absence proves").0, None);
}

#[test]
fn accounts_prove_at_a_boundary_after_the_head_moved_on() {
    let mut fixture = Fixture::new();
    fixture.commit_to(11);
    let address = fixture.chain.addresses[0];
    let proof = fixture.account_proof(&address, 8);
    let (account, proven) = fixture.client().account(&address, &proof).expect("account at 8 proves");
    assert_eq!((proven.header.height, account.expect("present").nonce), (Height(8), 8), "the state at 8");
    // Height 9 is neither the head nor a boundary: the store says so rather than guess.
    assert_eq!(fixture.store.prove_account_at(&address, Height(9)).expect("read"), AccountAt::Unavailable);
    // An account created after the boundary is absent at it, and proven so.
    let newcomer = SecretKey::from_seed([97; 32]).public_key();
    let tx = fixture.chain.transfer_to(2, 0, newcomer, 5);
    fixture.chain.commit(&fixture.store, std::slice::from_ref(&tx)).expect("commit");
    let proof = fixture.account_proof(&newcomer, 8);
    assert_eq!(fixture.client().account(&newcomer, &proof).expect("absent at 8").0, None);
    assert!(matches!(
        fixture.store.prove_account_at(&newcomer, Height(12)).expect("read"),
        AccountAt::Found(_)
    ));
}

#[test]
fn every_lie_about_a_transaction_is_refused() {
    let mut fixture = Fixture::new();
    fixture.commit_to(8);
    let client = fixture.client();
    let tx = fixture.txs[5].clone();
    let hash = tx.hash();
    let honest = fixture.tx_proof(&tx, 8);
    client.tx(&hash, &honest).expect("the truth verifies");

    // Another transaction presented as this one.
    let mut lie = honest.clone();
    lie.tx = fixture.txs[4].clone();
    assert!(matches!(client.tx(&hash, &lie), Err(ProofError::WrongTx { .. })));

    // A flipped sibling in the inclusion proof.
    let mut lie = honest.clone();
    lie.tx_proof.siblings[0].0[0] ^= 1;
    assert!(matches!(client.tx(&hash, &lie), Err(ProofError::TxNotInBlock { .. })));

    // A tx root recomputed over a swapped tx list: the header no longer chains to the checkpoint.
    let mut lie = honest.clone();
    let fake = fixture.chain.transfer(3, 0, 2, 5);
    lie.tx = fake.clone();
    lie.receipt.tx_hash = fake.hash();
    lie.block.headers[0].tx_root = tetrad_ledger::block::tx_root(&[fake.hash()]);
    assert!(matches!(client.tx(&fake.hash(), &lie), Err(ProofError::BrokenChain { .. })));

    // A failed outcome reported as success (or the reverse): the receipt is not in the root.
    let mut lie = honest.clone();
    lie.receipt.outcome = tetrad_ledger::Outcome::Failed {
        error: tetrad_ledger::ExecutionError::BadNonce { expected: 1, found: 0 },
    };
    assert!(matches!(client.tx(&hash, &lie), Err(ProofError::ReceiptNotInBlock { .. })));

    // The proof of another position.
    let mut lie = honest.clone();
    lie.receipt.index += 1;
    assert!(client.tx(&hash, &lie).is_err());

    // A header that does not chain to the checkpoint (a sibling block's header).
    let mut lie = honest.clone();
    lie.block.headers.swap(0, 1);
    assert!(matches!(client.tx(&hash, &lie), Err(ProofError::BrokenChain { .. })));

    // A stale checkpoint below the block.
    let mut lie = honest.clone();
    lie.block = fixture.header_proof(4, 4);
    lie.block.height = Height(6);
    assert!(client.tx(&hash, &lie).is_err());

    // A checkpoint certificate over another header (an uncertified root).
    let mut lie = honest.clone();
    lie.block.checkpoint.header.state_root = Digest::of(b"uncertified");
    assert!(matches!(client.tx(&hash, &lie), Err(ProofError::CheckpointStatement { .. })));

    // Too few signatures.
    let mut lie = honest.clone();
    lie.block.checkpoint.certificate.signatures.pop();
    assert!(matches!(client.tx(&hash, &lie), Err(ProofError::CheckpointSignatures { .. })));

    // A certificate signed by keys that are not the validators'.
    let mut lie = honest.clone();
    let strangers: Vec<SecretKey> = (0..4u8).map(|index| SecretKey::from_seed([200 + index; 32])).collect();
    lie.block.checkpoint.certificate =
        fixture.chain.certify_checkpoint(&lie.block.checkpoint.header, &strangers);
    assert!(matches!(client.tx(&hash, &lie), Err(ProofError::CheckpointSignatures { .. })));
}

#[test]
fn lies_about_an_account_are_refused() {
    let mut fixture = Fixture::new();
    fixture.commit_to(8);
    let client = fixture.client();
    let address = fixture.chain.addresses[0];
    let honest = fixture.account_proof(&address, 8);
    client.account(&address, &honest).expect("the truth verifies");

    let mut lie = honest.clone();
    lie.account.as_mut().expect("present").account.balance += 1_000;
    assert!(matches!(client.account(&address, &lie), Err(ProofError::AccountNotInState { .. })));
    let mut lie = honest.clone();
    lie.account.as_mut().expect("present").account.nonce = 0;
    assert!(matches!(client.account(&address, &lie), Err(ProofError::AccountNotInState { .. })));
    let mut lie = honest.clone();
    lie.account.as_mut().expect("present").proof.siblings[1].0[3] ^= 0x80;
    assert!(matches!(client.account(&address, &lie), Err(ProofError::AccountNotInState { .. })));
    // Another account's (true) proof.
    let other = fixture.chain.addresses[1];
    assert!(matches!(client.account(&other, &honest), Err(ProofError::WrongAccount { .. })));
    // "No such account" for an account that exists: without the account, or with another
    // address's (true) path in the address tree.
    let mut lie = honest.clone();
    lie.account = None;
    assert!(matches!(client.account(&address, &lie), Err(ProofError::AccountPresence { .. })));
    let mut lie = honest.clone();
    lie.account = None;
    lie.address_proof = fixture.account_proof(&SecretKey::from_seed([96; 32]).public_key(), 8).address_proof;
    assert!(matches!(client.account(&address, &lie), Err(ProofError::AddressNotInTree { .. })));
    // An account for an address that has none.
    let stranger = SecretKey::from_seed([95; 32]).public_key();
    let mut lie = fixture.account_proof(&stranger, 8);
    let mut borrowed = honest.account.clone().expect("present");
    borrowed.address = stranger;
    lie.account = Some(borrowed);
    assert!(client.account(&stranger, &lie).is_err());
}

#[test]
fn the_validator_set_is_followed_from_genesis_across_rotations() {
    let mut fixture = Fixture::new();
    fixture.commit_to(2);
    fixture.rotate_all(10); // block 3: the new keys sign from 5 (after the boundary 4)
    fixture.commit_to(9);
    fixture.rotate_all(20); // block 10: the next keys sign from 13
    fixture.commit_to(16);
    assert_eq!(fixture.store.registry().epochs.len(), 3);

    let tx = fixture.txs.last().expect("tx").clone();
    let proof = fixture.tx_proof(&tx, 16);

    // From genesis alone, without the links, the client cannot tell the signers of 16.
    let client = fixture.client();
    assert!(matches!(client.tx(&tx.hash(), &proof), Err(ProofError::RegistryHistory { .. })));

    // With the links, each signed by the epoch before it.
    let mut client = fixture.client();
    let learned = client.follow(&fixture.links(16)).expect("links verify");
    assert_eq!(learned, vec![Height(5), Height(13)]);
    let proven = client.tx(&tx.hash(), &proof).expect("tx proves after following the rotations");
    assert_eq!(proven.block.epoch, Height(13));
    assert_eq!(
        client.validator_set(Height(16)).expect("set").keys(),
        fixture.store.registry().keys_at(Height(16))
    );

    // A certificate made with retired keys (the genesis keys, which no longer sign 16).
    let mut retired = proof.clone();
    retired.block.checkpoint.certificate =
        fixture.chain.certify_checkpoint(&retired.block.checkpoint.header, &fixture.keys[0]);
    assert!(matches!(client.tx(&tx.hash(), &retired), Err(ProofError::CheckpointSignatures { .. })));

    // A link whose registry has a swapped key, or an extra key: its hash is not the header's.
    let links = fixture.links(16);
    let mut swapped = links.clone();
    swapped[0].registry.epochs[1].1[2] = SecretKey::from_seed([77; 32]).public_key();
    assert!(matches!(fixture.client().follow(&swapped), Err(ProofError::RegistryHash { .. })));
    let mut extra = links.clone();
    extra[1].registry.epochs[2].1.push(SecretKey::from_seed([78; 32]).public_key());
    assert!(matches!(fixture.client().follow(&extra), Err(ProofError::RegistryHash { .. })));
    // A link signed by the keys it introduces, rather than by the epoch before it.
    let mut self_signed = links.clone();
    self_signed[0].checkpoint.certificate =
        fixture.chain.certify_checkpoint(&self_signed[0].checkpoint.header, &fixture.keys[1]);
    assert!(matches!(fixture.client().follow(&self_signed), Err(ProofError::CheckpointSignatures { .. })));
    // A withheld rotation: following only the first link, the checkpoint at 16 is refused.
    let mut partial = fixture.client();
    partial.follow(&links[..1]).expect("first link");
    assert!(matches!(partial.tx(&tx.hash(), &proof), Err(ProofError::RegistryHistory { .. })));
    // Links out of order.
    let reversed: Vec<EpochLink> = links.iter().rev().cloned().collect();
    assert!(fixture.client().follow(&reversed).is_err());
}

#[test]
fn a_trusted_header_is_a_starting_point_and_a_floor() {
    let mut fixture = Fixture::new();
    fixture.commit_to(2);
    fixture.rotate_all(10);
    fixture.commit_to(12);
    let trusted = fixture.header(8);
    let registry = fixture.store.registry_at(Height(8)).expect("read").expect("registry");
    let genesis_hash = fixture.chain.genesis_hash;
    let wrong = Digest::of(b"not the header");
    assert!(matches!(
        LightClient::trust(&genesis_hash, &wrong, &trusted, registry.clone()),
        Err(ProofError::Trust(_))
    ));
    let client = LightClient::trust(&genesis_hash, &trusted.hash(), &trusted, registry).expect("trust");
    // Above the trusted header, no links are needed: the registry at 8 knows the keys of 12.
    let tx = fixture.txs.last().expect("tx").clone();
    client.tx(&tx.hash(), &fixture.tx_proof(&tx, 12)).expect("proves above the trusted header");
    // Below it, nothing is accepted, even a true proof.
    let old = fixture.txs[0].clone();
    assert!(matches!(client.tx(&old.hash(), &fixture.tx_proof(&old, 4)), Err(ProofError::BelowTrust { .. })));
}

#[test]
fn the_store_serves_proofs_the_client_accepts() {
    use tetrad_ledger::prover::Refusal;
    let mut fixture = Fixture::new();
    fixture.commit_to(2);
    fixture.rotate_all(10);
    fixture.commit_to(16);
    for boundary in [4, 8, 12, 16] {
        let certificate = fixture.finalized(boundary).certificate;
        fixture.store.put_checkpoint(&certificate).expect("checkpoint");
    }
    let store = &fixture.store;
    let mut client = fixture.client();
    let links = store.validators_proof(None, None).expect("read").expect("links");
    assert_eq!(links.links.len(), 1);
    assert_eq!(client.follow(&links.links).expect("follow"), vec![Height(5)]);

    let tx = fixture.txs[8].clone();
    let proof = store.tx_state_proof(&tx.hash()).expect("read").expect("tx proof");
    let proven = client.tx(&tx.hash(), &proof).expect("tx proves");
    assert_eq!(proven.block.checkpoint, Height(12), "the first checkpoint at or above the block");

    let header = store.header_proof(Height(10)).expect("read").expect("header proof");
    assert_eq!(client.header(&header).expect("header proves").header, fixture.header(10));

    let address = fixture.chain.addresses[1];
    let account = store.account_state_proof(&address).expect("read").expect("account proof");
    let (found, proven) = client.account(&address, &account).expect("account proves");
    assert_eq!(proven.header.height, Height(16));
    assert!(found.is_some());

    // A block above the last stable checkpoint is not final yet; an unknown tx is unknown.
    let next = fixture.chain.transfer(0, fixture.txs.len() as u64, 1, 1);
    fixture.chain.commit(&fixture.store, std::slice::from_ref(&next)).expect("commit");
    assert_eq!(
        fixture.store.tx_state_proof(&next.hash()).expect("read"),
        Err(Refusal::NotFinal { height: Height(17), stable: Some(Height(16)) })
    );
    assert_eq!(
        fixture.store.tx_state_proof(&Digest::of(b"no such tx")).expect("read"),
        Err(Refusal::Unknown { height: None })
    );
    let stranger = SecretKey::from_seed([98; 32]).public_key();
    let absent = fixture.store.account_state_proof(&stranger).expect("read").expect("absence proof");
    assert_eq!(client.account(&stranger, &absent).expect("absence proves").0, None);
}

#[test]
fn the_validator_chain_comes_in_pages() {
    use tetrad_ledger::light::LINKS_PER_ANSWER_MAX;
    let mut fixture = Fixture::new();
    let rotations = LINKS_PER_ANSWER_MAX + 3;
    for round in 0..rotations {
        // One rotation of every validator per checkpoint interval (K = 4).
        fixture.commit_to((round as u64) * 4 + 1);
        fixture.rotate_all(10 + 4 * round as u8);
    }
    fixture.commit_to((rotations as u64) * 4 + 8);
    let head = fixture.store.head().height.0;
    for boundary in (4..=head).step_by(4) {
        let certificate = fixture.finalized(boundary).certificate;
        fixture.store.put_checkpoint(&certificate).expect("checkpoint");
    }
    let mut client = fixture.client();
    let first = fixture.store.validators_proof(None, None).expect("read").expect("page");
    assert_eq!(first.links.len(), LINKS_PER_ANSWER_MAX);
    assert!(first.more);
    client.follow(&first.links).expect("first page");
    let after = first.links.last().map(|link| link.checkpoint.header.height);
    let second = fixture.store.validators_proof(None, after).expect("read").expect("page");
    assert_eq!(second.links.len(), rotations - LINKS_PER_ANSWER_MAX);
    assert!(!second.more);
    client.follow(&second.links).expect("second page");
    assert_eq!(client.registry().epochs.len(), rotations + 1);
    let tx = fixture.txs.last().expect("tx").clone();
    let checkpoint = head - head % 4;
    client.tx(&tx.hash(), &fixture.tx_proof(&tx, checkpoint)).expect("proves after every rotation");
}

/// A rotation committed exactly at a boundary B takes effect after the next one (B + K + 1), so
/// the registry of B already lists it, and the link at B + K teaches nothing new: an honest chain
/// that the client must follow all the same (found by review: it was refused as a useless link).
#[test]
fn a_rotation_committed_at_a_boundary_is_followed() {
    let mut fixture = Fixture::new();
    fixture.commit_to(1);
    fixture.rotate_one(1, 50); // block 2: signs from 5 (link at 4)
    fixture.commit_to(3);
    fixture.rotate_one(0, 51); // block 4, a boundary: signs from 9 (link at 8)
    fixture.commit_to(12);
    let registry = fixture.store.registry();
    assert_eq!(registry.epochs.iter().map(|(first, _)| first.0).collect::<Vec<_>>(), vec![0, 5, 9]);
    for boundary in [4, 8, 12] {
        let certificate = fixture.finalized(boundary).certificate;
        fixture.store.put_checkpoint(&certificate).expect("checkpoint");
    }
    let mut client = fixture.client();
    let links = fixture.store.validators_proof(None, None).expect("read").expect("links");
    assert_eq!(links.links.len(), 2);
    assert_eq!(client.follow(&links.links).expect("both links verify"), vec![Height(5), Height(9)]);
    let tx = fixture.txs.last().expect("tx").clone();
    client.tx(&tx.hash(), &fixture.tx_proof(&tx, 12)).expect("proves");
}

/// The validator set of the heights just above the latest checkpoint comes from that
/// checkpoint's own certified registry: a node that withholds the last link cannot make the
/// client name the set before the rotation (found by review).
#[test]
fn the_set_above_the_latest_checkpoint_is_the_one_it_certifies() {
    let mut fixture = Fixture::new();
    fixture.commit_to(2);
    fixture.rotate_all(10); // block 3: the new keys sign from 5; link at 4
    fixture.commit_to(4);
    fixture.store.put_checkpoint(&fixture.finalized(4).certificate).expect("checkpoint");
    // The node gives no link (withholds the one at 4) and proves the checkpoint at 4.
    let mut client = fixture.client();
    client.follow(&[]).expect("nothing to follow");
    assert_eq!(client.validator_set(Height(5)).expect("set").keys()[0], fixture.keys[0][0].public_key());
    let proof = fixture.store.header_proof(Height(4)).expect("read").expect("proof");
    client.learn(&proof.checkpoint, &proof.registry).expect("the checkpoint at 4 verifies");
    assert_eq!(
        client.validator_set(Height(5)).expect("set").keys()[0],
        fixture.keys[1][0].public_key(),
        "the rotated set, as the checkpoint at 4 certifies it"
    );
}
