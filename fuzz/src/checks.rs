//! What each fuzz target does with its bytes: every decoder that reads bytes from a peer or a
//! client, and the properties that must hold (no panic; a value that decodes encodes back to
//! the same bytes; nothing larger than the frame it came in).
//!
//! Shared, as this very file, by the cargo-fuzz targets (`fuzz/fuzz_targets/`, libFuzzer) and
//! by the fuzz run of the test suite (`node/src/daemon/fuzzing.rs`, stable toolchain).

use std::sync::OnceLock;

use tetrad_consensus::certificate::{Certificate, Signed};
use tetrad_consensus::view_messages::{NewView, PreparedCertificate, ViewChange};
use tetrad_consensus::wire::{Message, Status};
use tetrad_consensus::{
    Batch, Checkpoint, Commit, Digest, Height, PrePrepare, Prepare, SecretKey, ValidatorIndex, View,
};
use tetrad_ledger::testkit::TestChain;
use tetrad_ledger::tx::{Tx, TxBody, TxKind, chain_tag, decode_payload, encode_payload};
use tetrad_ledger::validators::possession_digest;

use super::wire::{self, FrameLimits, SyncBlock, SyncRequest};

/// A target: a name (the corpus directory) and what it does with one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 8] = [
    ("consensus_message", consensus_message),
    ("frame", frame),
    ("sync_request", sync_request),
    ("sync_response", sync_response),
    ("gossip_batch", gossip_batch),
    ("transaction", transaction),
    ("jsonrpc_body", jsonrpc_body),
    ("rest_body", rest_body),
];

/// The limits of the default genesis (4 validators, a window of 64, 1 MiB batches).
fn limits() -> &'static FrameLimits {
    static LIMITS: OnceLock<FrameLimits> = OnceLock::new();
    LIMITS.get_or_init(|| FrameLimits::from_genesis(4, 64, 1 << 20))
}

/// The chain the seeds are signed for.
fn chain() -> &'static TestChain {
    static CHAIN: OnceLock<TestChain> = OnceLock::new();
    CHAIN.get_or_init(|| TestChain::new(4, 3, 1000))
}

/// Decoding is canonical: what decodes encodes back to the same bytes.
fn assert_round_trip<T: borsh::BorshSerialize>(value: &T, bytes: &[u8]) {
    let encoded = borsh::to_vec(value).unwrap_or_default();
    assert!(
        encoded == bytes,
        "decodes but encodes to {} other bytes (input {} bytes)",
        encoded.len(),
        bytes.len()
    );
}

/// A consensus message as the driver decodes it.
pub fn consensus_message(bytes: &[u8]) {
    if let Ok(message) = Message::decode(bytes) {
        assert_round_trip(&message, bytes);
        let _ = message.kind();
    }
}

/// A length-prefixed frame as the network reads it (limit: a small frame), then its body as
/// each kind of message.
pub fn frame(bytes: &[u8]) {
    const MAX: usize = 4096;
    let mut cursor = futures::io::Cursor::new(bytes);
    if let Ok(body) = futures::executor::block_on(wire::read_frame(&mut cursor, MAX)) {
        assert!(body.len() <= MAX, "a frame of {} bytes passed a limit of {MAX}", body.len());
        consensus_message(&body);
        sync_request(&body);
    }
    // With no limit at all, what the reader allocates follows the bytes that arrive, not the
    // length prefix (libFuzzer's -malloc_limit_mb catches one large allocation).
    let mut cursor = futures::io::Cursor::new(bytes);
    if let Ok(body) = futures::executor::block_on(wire::read_frame(&mut cursor, u32::MAX as usize)) {
        assert!(
            body.len() + 4 <= bytes.len(),
            "a frame of {} bytes from {} input bytes",
            body.len(),
            bytes.len()
        );
    }
}

pub fn sync_request(bytes: &[u8]) {
    if bytes.len() > wire::SYNC_REQUEST_BYTES_MAX {
        return;
    }
    if let Ok(request) = wire::decode::<SyncRequest>(bytes) {
        assert_round_trip(&request, bytes);
    }
}

pub fn sync_response(bytes: &[u8]) {
    if bytes.len() > limits().sync_response_bytes_max {
        return;
    }
    if let Ok(blocks) = wire::decode::<Vec<SyncBlock>>(bytes) {
        assert_round_trip(&blocks, bytes);
        for block in &blocks {
            let _ = block.batch.digest();
            let _ = decode_payload(&block.batch.payload);
        }
    }
}

/// A gossip message of transactions, decoded and statically checked as the gossip validator
/// does.
pub fn gossip_batch(bytes: &[u8]) {
    if bytes.len() > limits().gossip_bytes_max {
        return;
    }
    if let Ok(message) = borsh::from_slice::<wire::GossipMessage>(bytes) {
        assert_round_trip(&message, bytes);
        if let Some(txs) = wire::GossipMessage::decode_txs(bytes) {
            let results = tetrad_ledger::tx::check_all(&txs, &chain().genesis_hash);
            assert_eq!(results.len(), txs.len());
        }
    }
}

/// A transaction: borsh (one, and a batch payload) and JSON.
pub fn transaction(bytes: &[u8]) {
    if let Ok(tx) = Tx::decode(bytes) {
        assert_round_trip(&tx, bytes);
        let _ = tx.check(&chain().genesis_hash);
    }
    // An empty payload is the empty batch (no length prefix at all).
    if let Ok(txs) = decode_payload(bytes)
        && !bytes.is_empty()
    {
        assert_eq!(encode_payload(&txs), bytes, "a payload decodes but encodes to other bytes");
    }
    if let Ok(tx) = serde_json::from_slice::<Tx>(bytes) {
        let json = serde_json::to_vec(&tx).unwrap_or_default();
        let again: Tx =
            serde_json::from_slice(&json).unwrap_or_else(|error| panic!("re-encoded JSON: {error}"));
        assert_eq!(again, tx);
    }
}

pub fn jsonrpc_body(bytes: &[u8]) {
    tetrad_rpc::fuzzing::jsonrpc_body(bytes);
}

pub fn rest_body(bytes: &[u8]) {
    tetrad_rpc::fuzzing::rest_body(bytes);
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

fn signed<T: tetrad_consensus::certificate::Statement>(body: T) -> Signed<T> {
    signed_by(1, body)
}

fn signed_by<T: tetrad_consensus::certificate::Statement>(signer: usize, body: T) -> Signed<T> {
    let chain = chain();
    Signed::sign(body, ValidatorIndex(signer as u16), &chain.validator_keys[signer], &chain.validator_set)
}

/// A key rotation by validator 1 (the other kind of transaction), signed as the node expects.
fn rotation(nonce: u64) -> Tx {
    let chain = chain();
    let signer = &chain.validator_keys[1];
    let new = SecretKey::from_seed([0x5a; 32]);
    let validator = ValidatorIndex(1);
    let digest = possession_digest(&chain.genesis_hash, validator, &signer.public_key(), &new.public_key());
    let body = TxBody {
        chain: chain_tag(&chain.genesis_hash),
        from: signer.public_key(),
        nonce,
        kind: TxKind::RotateValidatorKey {
            validator,
            new_key: new.public_key(),
            proof_of_possession: new.sign_digest(&digest),
        },
    };
    Tx::sign(body, signer, &chain.genesis_hash)
}

/// A view change to view 3 with a stable checkpoint at 16 and a prepared certificate at 17.
fn view_change(signer: usize, digest: Digest) -> Signed<ViewChange> {
    let checkpoint = Checkpoint { height: Height(16), header_hash: digest, state_root: Digest::ZERO };
    let votes: Vec<Signed<Checkpoint>> = (0..3).map(|index| signed_by(index, checkpoint.clone())).collect();
    let pre_prepare = signed_by(2, PrePrepare { view: View(2), height: Height(17), digest });
    let prepare = Prepare { view: View(2), height: Height(17), digest };
    // Validator 2 is view 2's primary; two prepares by others make the quorum of 3.
    let prepares = [0, 3]
        .into_iter()
        .map(|index| {
            let vote = signed_by(index, prepare.clone());
            (vote.signer, vote.signature)
        })
        .collect();
    signed_by(
        signer,
        ViewChange {
            new_view: View(3),
            checkpoint: Some(Certificate::from_votes(checkpoint, &votes)),
            prepared: vec![PreparedCertificate { pre_prepare, prepares }],
        },
    )
}

/// Valid inputs of a target, to seed its corpus.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let chain = chain();
    let mut txs: Vec<Tx> = (0..3).map(|nonce| chain.transfer(0, nonce, 1, 5 + nonce)).collect();
    txs.push(rotation(0));
    let batch = Batch {
        view: View(2),
        proposer: ValidatorIndex(2),
        timestamp_ms: 1_700_000_000_000,
        payload: encode_payload(&txs),
    };
    let digest = batch.digest();
    let messages = [
        Message::PrePrepare {
            pre_prepare: signed(PrePrepare { view: View(2), height: Height(7), digest }),
            batch: std::sync::Arc::new(batch.clone()),
        },
        Message::Prepare(signed(Prepare { view: View(2), height: Height(7), digest })),
        Message::Commit(signed(Commit { view: View(2), height: Height(7), digest })),
        Message::Checkpoint(signed(Checkpoint {
            height: Height(16),
            header_hash: digest,
            state_root: Digest::ZERO,
        })),
        Message::ViewChange(view_change(1, digest)),
        Message::NewView(signed_by(
            3,
            NewView {
                view: View(3),
                view_changes: (1..4).map(|signer| view_change(signer, digest)).collect(),
                pre_prepares: vec![signed_by(3, PrePrepare { view: View(3), height: Height(17), digest })],
            },
        )),
        Message::Status(Status { view: View(2), view_active: true, committed: Height(6), stable: Height(0) }),
        Message::FetchBatch { height: Height(7), digest },
        Message::Batch { height: Height(7), batch: std::sync::Arc::new(batch.clone()) },
    ];
    let block = SyncBlock { batch, certificate: chain.certify(View(2), Height(7), digest) };
    let request = SyncRequest { from: Height(1), to: Height(64) };
    let tx_json = serde_json::to_vec(&txs[0]).unwrap_or_default();
    let rotation_json = serde_json::to_vec(&txs[3]).unwrap_or_default();
    let call = |method: &str, params: serde_json::Value| serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    match target {
        "consensus_message" => messages.iter().map(Message::encode).collect(),
        "frame" => messages
            .iter()
            .filter(|message| !matches!(message, Message::PrePrepare { .. } | Message::Batch { .. }))
            .map(|message| framed(&message.encode()))
            .chain([framed(&borsh::to_vec(&request).unwrap_or_default())])
            .collect(),
        "sync_request" => vec![borsh::to_vec(&request).unwrap_or_default()],
        "sync_response" => {
            vec![borsh::to_vec(&vec![block.clone(), block]).unwrap_or_default(), vec![0, 0, 0, 0]]
        }
        "gossip_batch" => vec![
            borsh::to_vec(&wire::GossipMessage { txs: txs.clone(), publish: 1 }).unwrap_or_default(),
            borsh::to_vec(&wire::GossipMessage { txs: Vec::new(), publish: u64::MAX }).unwrap_or_default(),
        ],
        "transaction" => vec![txs[0].encode(), txs[3].encode(), encode_payload(&txs), tx_json, rotation_json],
        "jsonrpc_body" => [
            call("submit_transaction", serde_json::json!({ "tx": txs[0], "wait": true, "timeout_ms": 100 })),
            call("submit_transactions", serde_json::json!({ "txs": txs })),
            call("get_block", serde_json::json!({ "height": 3 })),
            call("get_block", serde_json::json!({ "hash": digest })),
            call("get_transaction", serde_json::json!({ "hash": digest })),
            call("get_checkpoint", serde_json::json!({ "height": 16 })),
            call("get_validators", serde_json::json!({})),
            serde_json::json!([
                call("get_status", serde_json::json!({})),
                call("get_account", serde_json::json!({ "address": txs[0].body.from }))
            ]),
        ]
        .iter()
        .map(|value| value.to_string().into_bytes())
        .collect(),
        "rest_body" => vec![
            tx_json,
            rotation_json,
            b"wait=true&timeout_ms=250".to_vec(),
            b"height=16".to_vec(),
            digest.to_hex().into_bytes(),
            b"1234".to_vec(),
        ],
        _ => Vec::new(),
    }
}
