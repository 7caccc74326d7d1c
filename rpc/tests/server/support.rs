//! An in-memory fake of the node behind `NodeApi`, a small real chain to fill it with, and helpers
//! that send requests to the router without sockets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::{Value, json};
use tetrad_consensus::{Batch, Certificate, Checkpoint, Digest, Height, Signed, ValidatorIndex, View};
use tetrad_ledger::light::{AccountStateProof, HeaderProof, TxProof, ValidatorsProof};
use tetrad_ledger::prover::{Prove, Refusal};
use tetrad_ledger::testkit::{MemoryState, TestChain};
use tetrad_ledger::tx::encode_payload;
use tetrad_ledger::{AccountProof, Address, Tx, execute};
use tetrad_rpc::api::{
    AccountView, BlockEvent, BlockRef, BlockView, CheckpointView, Health, HealthView, InternalError, NodeApi,
    StatusView, SubmitError, TxStatus, TxView, ValidatorView, ValidatorsView,
};
use tetrad_rpc::{Limits, router};
use tokio::sync::broadcast;
use tower::ServiceExt;

/// Capacity of the fake's block broadcast: small, so that tests can make a reader lag.
pub const EVENTS_CAPACITY: usize = 4;

/// A chain of two blocks (genesis and one with two transfers) and every view of it.
pub struct Fixture {
    pub genesis: BlockView,
    pub block: BlockView,
    pub txs: Vec<TxView>,
    pub accounts: Vec<AccountView>,
    pub checkpoint: CheckpointView,
    pub validators: ValidatorsView,
    pub status: StatusView,
    /// A valid transaction that is not in the chain.
    pub fresh_tx: Tx,
}

impl Fixture {
    pub fn new() -> Fixture {
        let chain = TestChain::new(4, 3, 1000);
        let mut state = MemoryState::from_genesis(&chain.genesis);
        let parent = chain.genesis.header.clone();
        let txs = vec![chain.transfer(0, 0, 1, 5), chain.transfer(1, 0, 2, 7)];
        let batch = Batch {
            view: View(0),
            proposer: ValidatorIndex(0),
            timestamp_ms: parent.timestamp_ms + 1,
            payload: encode_payload(&txs),
        };
        let execution = execute(&state, &parent, &batch, &txs).unwrap_or_else(|never| match never {});
        state.apply(&execution);
        let header = execution.header.clone();
        let block = BlockView {
            hash: header.hash(),
            header: header.clone(),
            txs: execution.tx_hashes.clone(),
            certificate: Some(chain.certify(View(0), Height(1), batch.digest())),
            batch_timestamp_ms: Some(batch.timestamp_ms),
            batch_txs: None,
        };
        let genesis = BlockView {
            hash: parent.hash(),
            header: parent.clone(),
            txs: Vec::new(),
            certificate: None,
            batch_timestamp_ms: None,
            batch_txs: None,
        };
        let tx_views = txs
            .iter()
            .zip(&execution.receipts)
            .map(|(tx, receipt)| TxView {
                hash: tx.hash(),
                status: TxStatus::Committed,
                tx: tx.clone(),
                height: Some(Height(1)),
                index: Some(receipt.index),
                receipt: Some(receipt.clone()),
            })
            .collect();
        let accounts = chain
            .addresses
            .iter()
            .map(|address| {
                let account = *state.accounts.get(address).expect("test account exists");
                let proof = state.tree.prove(account.slot).expect("slot is in the tree");
                AccountView {
                    address: *address,
                    balance: account.balance,
                    nonce: account.nonce,
                    height: Height(1),
                    state_root: header.state_root,
                    proof: AccountProof { address: *address, account, proof },
                }
            })
            .collect();
        let statement =
            Checkpoint { height: Height(1), header_hash: block.hash, state_root: header.state_root };
        let votes: Vec<Signed<Checkpoint>> = (0..chain.validator_set.quorum())
            .map(|index| {
                let signer = ValidatorIndex(u16::try_from(index).expect("few validators"));
                Signed::sign(statement.clone(), signer, &chain.validator_keys[index], &chain.validator_set)
            })
            .collect();
        let checkpoint = CheckpointView {
            height: Height(1),
            header_hash: block.hash,
            state_root: header.state_root,
            certificate: Certificate::from_votes(statement, &votes),
        };
        let validators = ValidatorsView {
            height: Height(2),
            n: 4,
            f: 1,
            quorum: 3,
            validators: chain
                .validator_set
                .keys()
                .iter()
                .enumerate()
                .map(|(index, key)| ValidatorView {
                    index: ValidatorIndex(u16::try_from(index).expect("few validators")),
                    name: format!("validator-{index}"),
                    consensus_key: *key,
                    peer_id: format!("12D3KooWfake{index}"),
                    p2p_address: format!("/ip4/127.0.0.1/tcp/{}", 26_000 + index),
                })
                .collect(),
        };
        let status = StatusView {
            chain_id: header.chain_id.clone(),
            genesis_hash: chain.genesis_hash,
            node: "validator-0".to_owned(),
            validator: Some(ValidatorIndex(0)),
            validating: true,
            height: Height(1),
            latest_block_hash: block.hash,
            latest_block_time_ms: header.timestamp_ms,
            view: View(0),
            view_active: true,
            primary: ValidatorIndex(0),
            stable_checkpoint: Height(1),
            peers: 3,
            mempool_txs: 0,
            mempool_bytes: 0,
            syncing: false,
        };
        let fresh_tx = chain.transfer(0, 1, 2, 3);
        Fixture { genesis, block, txs: tx_views, accounts, checkpoint, validators, status, fresh_tx }
    }

    pub fn event(&self, height: u64) -> BlockEvent {
        BlockEvent {
            height: Height(height),
            hash: Digest::of(&height.to_le_bytes()),
            tx_count: 2,
            timestamp_ms: 1_700_000_000_000 + height,
            view: View(0),
            proposer: ValidatorIndex(1),
        }
    }
}

/// What the fake node holds and how it behaves.
pub struct FakeState {
    pub status: StatusView,
    pub blocks: Vec<BlockView>,
    pub txs: HashMap<Digest, TxView>,
    pub accounts: HashMap<Address, AccountView>,
    pub checkpoints: BTreeMap<Height, CheckpointView>,
    pub validators: ValidatorsView,
    /// Every submission is refused with this, when set.
    pub refuse_with: Option<SubmitError>,
    /// Every query fails with this, when set.
    pub fail_queries: Option<String>,
    /// Whether `wait_committed` finds the transaction committed (else it times out).
    pub commit_on_wait: bool,
    /// How long `wait_committed` takes (whatever its timeout).
    pub wait_delay: Duration,
    pub submitted: Vec<Tx>,
    pub waits: Vec<Duration>,
    /// What `health` answers.
    pub health: HealthView,
}

pub struct Shared {
    pub state: Mutex<FakeState>,
    pub blocks: broadcast::Sender<BlockEvent>,
    pub records: Mutex<Vec<(String, String)>>,
}

#[derive(Clone)]
pub struct FakeNode {
    pub shared: Arc<Shared>,
}

impl FakeNode {
    pub fn new(fixture: &Fixture) -> FakeNode {
        let state = FakeState {
            status: fixture.status.clone(),
            blocks: vec![fixture.genesis.clone(), fixture.block.clone()],
            txs: fixture.txs.iter().map(|view| (view.hash, view.clone())).collect(),
            accounts: fixture.accounts.iter().map(|view| (view.address, view.clone())).collect(),
            checkpoints: BTreeMap::from([(fixture.checkpoint.height, fixture.checkpoint.clone())]),
            validators: fixture.validators.clone(),
            refuse_with: None,
            fail_queries: None,
            commit_on_wait: true,
            wait_delay: Duration::ZERO,
            submitted: Vec::new(),
            waits: Vec::new(),
            health: HealthView {
                status: Health::Idle,
                reason: "nothing to do".to_owned(),
                height: fixture.status.height,
                last_progress_ms: 0,
                pending_work: false,
                stall_after_ms: 6_000,
            },
        };
        let (blocks, _) = broadcast::channel(EVENTS_CAPACITY);
        FakeNode {
            shared: Arc::new(Shared { state: Mutex::new(state), blocks, records: Mutex::new(Vec::new()) }),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.shared.state.lock().expect("fake state lock")
    }

    pub fn records(&self) -> Vec<(String, String)> {
        self.shared.records.lock().expect("records lock").clone()
    }

    fn query<T>(&self, read: impl FnOnce(&FakeState) -> Option<T>) -> Result<Option<T>, InternalError> {
        let state = self.state();
        if let Some(error) = &state.fail_queries {
            return Err(InternalError(error.clone()));
        }
        Ok(read(&state))
    }
}

impl NodeApi for FakeNode {
    fn status(&self) -> StatusView {
        self.state().status.clone()
    }

    fn health(&self) -> HealthView {
        self.state().health.clone()
    }

    async fn submit(&self, tx: Tx) -> Result<Digest, SubmitError> {
        let mut state = self.state();
        if let Some(error) = &state.refuse_with {
            return Err(error.clone());
        }
        let hash = tx.hash();
        state.submitted.push(tx);
        Ok(hash)
    }

    fn wait_committed(&self, hash: Digest, timeout: Duration) -> impl Future<Output = Option<TxView>> + Send {
        let node = self.clone();
        async move {
            let (delay, committed) = {
                let mut state = node.state();
                state.waits.push(timeout);
                let tx = state.submitted.iter().find(|tx| tx.hash() == hash).cloned();
                let committed = tx.filter(|_| state.commit_on_wait).map(|tx| TxView {
                    hash,
                    status: TxStatus::Committed,
                    tx,
                    height: Some(Height(2)),
                    index: Some(0),
                    receipt: None,
                });
                (state.wait_delay, committed)
            };
            tokio::time::sleep(delay).await;
            committed
        }
    }

    fn block(&self, at: BlockRef) -> Result<Option<BlockView>, InternalError> {
        self.query(|state| match at {
            BlockRef::Latest => state.blocks.last().cloned(),
            BlockRef::Height(height) => {
                usize::try_from(height.0).ok().and_then(|index| state.blocks.get(index)).cloned()
            }
            BlockRef::Hash(hash) => state.blocks.iter().find(|block| block.hash == hash).cloned(),
        })
    }

    fn tx(&self, hash: &Digest) -> Result<Option<TxView>, InternalError> {
        self.query(|state| state.txs.get(hash).cloned())
    }

    fn account(&self, address: &Address) -> Result<Option<AccountView>, InternalError> {
        self.query(|state| state.accounts.get(address).cloned())
    }

    fn checkpoint(&self, height: Option<Height>) -> Result<Option<CheckpointView>, InternalError> {
        self.query(|state| match height {
            Some(height) => state.checkpoints.get(&height).cloned(),
            None => state.checkpoints.values().next_back().cloned(),
        })
    }

    fn validators(&self, height: Option<Height>) -> Result<Option<ValidatorsView>, InternalError> {
        self.query(|state| {
            let next = state.status.height.next();
            let height = height.unwrap_or(next);
            (height <= next).then(|| ValidatorsView { height, ..state.validators.clone() })
        })
    }

    // The fake node holds no checkpoints: it proves nothing, and says why as a real node would
    // (the proofs themselves are tested in ledger/tests/light.rs and node/tests/verify.rs).
    fn prove_tx(&self, hash: &Digest) -> Result<Prove<TxProof>, InternalError> {
        self.query(|state| {
            Some(match state.txs.get(hash).and_then(|tx| tx.height) {
                Some(height) => Err(Refusal::NotFinal { height, stable: None }),
                None => Err(Refusal::Unknown { height: None }),
            })
        })
        .map(|answer| answer.unwrap_or(Err(Refusal::Unknown { height: None })))
    }

    fn prove_block(&self, height: Height) -> Result<Prove<HeaderProof>, InternalError> {
        self.query(|state| {
            Some(if height <= state.status.height {
                Err(Refusal::NotFinal { height, stable: None })
            } else {
                Err(Refusal::Unknown { height: Some(height) })
            })
        })
        .map(|answer| answer.unwrap_or(Err(Refusal::Unknown { height: Some(height) })))
    }

    fn prove_account(&self, _: &Address) -> Result<Prove<AccountStateProof>, InternalError> {
        self.query(|_| Some(Err(Refusal::Unavailable("the fake node keeps no state snapshots".into()))))
            .map(|answer| answer.unwrap_or(Err(Refusal::Unknown { height: None })))
    }

    fn prove_validators(
        &self,
        _: Option<Height>,
        _: Option<Height>,
    ) -> Result<Prove<ValidatorsProof>, InternalError> {
        let empty = || ValidatorsProof { links: Vec::new(), more: false };
        self.query(|_| Some(Ok(empty()))).map(|answer| answer.unwrap_or(Ok(empty())))
    }

    fn subscribe_blocks(&self) -> broadcast::Receiver<BlockEvent> {
        self.shared.blocks.subscribe()
    }

    fn metrics(&self) -> String {
        "# TYPE tetrad_height gauge\ntetrad_height 1\n".to_owned()
    }

    fn record_request(&self, method: &str, outcome: &str) {
        self.shared.records.lock().expect("records lock").push((method.to_owned(), outcome.to_owned()));
    }
}

/// A fake node over the fixture, and the router in front of it.
pub fn setup(limits: Limits) -> (Fixture, FakeNode, Router) {
    let fixture = Fixture::new();
    let node = FakeNode::new(&fixture);
    let app = router(node.clone(), limits);
    (fixture, node, app)
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!("body is not JSON ({error}): {:?}", String::from_utf8_lossy(&self.body))
        })
    }

    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|value| value.to_str().ok()).unwrap_or("")
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.expect("the router never fails");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("read the body");
    Answer { status, headers, body }
}

pub async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).expect("request")).await
}

pub async fn post(app: &Router, uri: &str, body: impl Into<Body>) -> Answer {
    let request = Request::post(uri).header("content-type", "application/json").body(body.into());
    send(app, request.expect("request")).await
}

/// Posts a JSON-RPC body and returns the JSON answer, which must be HTTP 200.
pub async fn rpc(app: &Router, body: Value) -> Value {
    let answer = post(app, "/", body.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK, "body {:?}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.content_type(), "application/json");
    answer.json()
}

/// Calls `method` with `params` (id 1) and returns the whole response object.
pub async fn call(app: &Router, method: &str, params: Value) -> Value {
    let response = rpc(app, json!({ "jsonrpc": "2.0", "method": method, "params": params, "id": 1 })).await;
    assert_eq!(response["jsonrpc"], "2.0");
    assert_eq!(response["id"], 1);
    response
}

/// The `result` of a call that must succeed.
pub async fn result(app: &Router, method: &str, params: Value) -> Value {
    let response = call(app, method, params).await;
    assert!(response.get("error").is_none(), "{method} failed: {response}");
    response["result"].clone()
}

/// Asserts that `error` (an `{"code", "message"}` object) has `code` and a message containing
/// `message_part`.
pub fn assert_error(error: &Value, code: i64, message_part: &str) {
    assert_eq!(error["code"], code, "error {error}");
    let message = error["message"].as_str().unwrap_or_else(|| panic!("no message in {error}"));
    assert!(message.contains(message_part), "message {message:?} does not contain {message_part:?}");
}

pub fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("views serialize")
}

pub fn hex64(byte: u8) -> String {
    hex::encode([byte; 32])
}
