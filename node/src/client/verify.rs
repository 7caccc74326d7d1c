//! `tetrad verify …`: proves what an untrusted node says, from the genesis file alone (or from a
//! header the user trusts), with [`tetrad_ledger::light::LightClient`].
//!
//! Every command first follows the validator chain from genesis (`/proofs/validators`: one
//! link per key rotation, each signed by the epoch before it), then checks the proof it asked
//! for. Nothing is printed as proven unless it was; a lie exits non-zero and names what did not
//! verify. `tx transfer --wait` and `keys rotate` use [`Verifier::tx`] too.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tetrad_consensus::{Digest, Height, PublicKey};
use tetrad_genesis::Genesis;
use tetrad_ledger::light::{
    AccountStateProof, HeaderProof, LightClient, Proven, ProvenTx, TxProof, ValidatorsProof,
};
use tetrad_ledger::{Account, Address, Outcome};

use super::{DEFAULT_RPC, address_arg};

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// The chain's genesis file: the only thing trusted (with --trust, if given).
    #[arg(long, env = "TETRAD_GENESIS", global = true)]
    genesis: Option<PathBuf>,
    /// A finalized header learned out of band, HEIGHT:HASH (HEIGHT a checkpoint height). Proofs
    /// start from it instead of genesis, and nothing below it is accepted: the guard against a
    /// history forged with retired keys.
    #[arg(long, global = true)]
    trust: Option<String>,
    /// The node to ask; several comma-separated URLs are each checked, and any that cannot
    /// prove what the others prove is reported (and the command exits non-zero).
    #[arg(long, env = "TETRAD_RPC", default_value = DEFAULT_RPC, global = true)]
    rpc: String,
    /// Print what was proven as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for a committed block to be covered by a stable checkpoint.
    #[arg(long, default_value_t = 30_000, global = true)]
    timeout_ms: u64,
}

#[derive(Subcommand, Debug)]
pub enum VerifyCommand {
    /// A transaction is in a final block, and what execution did with it.
    Tx {
        hash: String,
        #[command(flatten)]
        args: VerifyArgs,
    },
    /// A block header is final.
    Block {
        height: u64,
        #[command(flatten)]
        args: VerifyArgs,
    },
    /// An account's balance and nonce at the latest stable checkpoint (address or key file).
    Account {
        address: String,
        #[command(flatten)]
        args: VerifyArgs,
    },
    /// The validator set of a height (default: above the latest stable checkpoint), followed
    /// from genesis through every key rotation.
    Validators {
        #[arg(long)]
        height: Option<u64>,
        #[command(flatten)]
        args: VerifyArgs,
    },
    /// The latest stable checkpoint (a finalized header).
    Checkpoint {
        #[command(flatten)]
        args: VerifyArgs,
    },
}

/// A light client bound to one node.
pub struct Verifier {
    pub client: LightClient,
    rpc: String,
    /// Where trust starts, in words.
    pub source: String,
    timeout: Duration,
}

/// An HTTP answer: the body of a 2xx answer, or the node's error (code and message).
enum Answer {
    Ok(String),
    Refused { status: u16, code: i64, message: String },
}

/// The error body of a refused request.
#[derive(serde::Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorFields,
}

#[derive(serde::Deserialize, Default)]
struct ErrorFields {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

fn fetch(rpc: &str, path: &str) -> Result<Answer> {
    let url = format!("{}{path}", rpc.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(&url).call().with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    // A proof is at most a few thousand headers; more than 64 MiB is not an answer.
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .with_context(|| format!("GET {url}: reading the answer"))?;
    if (200..300).contains(&status) {
        return Ok(Answer::Ok(body));
    }
    // Decoded into its two fields only (never a whole JSON tree of an answer of any size).
    let refused: ErrorBody = serde_json::from_str(&body)
        .with_context(|| format!("{url}: answered {status} with non-JSON: {}", clip(&body)))?;
    let message =
        if refused.error.message.is_empty() { "(no message)".to_string() } else { refused.error.message };
    Ok(Answer::Refused { status, code: refused.error.code, message })
}

fn clip(text: &str) -> &str {
    let end = text.char_indices().nth(200).map_or(text.len(), |(index, _)| index);
    &text[..end]
}

/// The error code of a committed block that no stable checkpoint covers yet.
const NOT_FINAL: i64 = -32023;

/// GETs a proof from `rpc`, waiting (up to `timeout`) while the node says it is not final yet.
fn fetch_proof<T: DeserializeOwned>(rpc: &str, timeout: Duration, path: &str) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match fetch(rpc, path)? {
            Answer::Ok(body) => {
                return serde_json::from_str(&body)
                    .with_context(|| format!("{rpc}{path}: not a proof this client can read"));
            }
            Answer::Refused { code, .. } if code == NOT_FINAL && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Answer::Refused { status, code, message } => {
                bail!("{rpc}{path}: {status} error {code}: {message}")
            }
        }
    }
}

impl Verifier {
    /// A verifier that trusts `genesis` (and `trust`, if given) and asks `rpc`; follows the
    /// validator chain from there.
    pub fn new(rpc: &str, genesis: &Genesis, trust: Option<&str>, timeout: Duration) -> Result<Verifier> {
        let registry = genesis.registry();
        let (client, source) = match trust {
            None => (LightClient::from_genesis(registry), "the genesis file".to_string()),
            Some(trust) => {
                let (height, hash) = trust
                    .split_once(':')
                    .context("--trust: expected HEIGHT:HASH (a checkpoint height and its header hash)")?;
                let height = Height(height.parse().with_context(|| format!("--trust: height {height:?}"))?);
                let hash = Digest::from_hex(hash).map_err(|error| anyhow!("--trust: hash: {error}"))?;
                let proof: HeaderProof = fetch_proof(rpc, timeout, &format!("/proofs/blocks/{height}"))?;
                if proof.checkpoint.header.height != height {
                    bail!(
                        "--trust {height}: not a checkpoint height (the checkpoint interval is {}); \
                         trust the header of a checkpoint",
                        genesis.consensus.checkpoint_interval
                    );
                }
                let client =
                    LightClient::trust(&genesis.hash(), &hash, &proof.checkpoint.header, proof.registry)?;
                (client, format!("the trusted header {height}"))
            }
        };
        let mut verifier = Verifier { client, rpc: rpc.to_string(), source, timeout };
        // A page of links at a time; each page must move on, so a node cannot keep a client
        // asking forever.
        let mut after: Option<Height> =
            (verifier.client.trusted() > Height::GENESIS).then(|| verifier.client.trusted());
        loop {
            let followed = verifier.client.followed();
            let path = match after {
                Some(after) => format!("/proofs/validators?after={after}"),
                None => "/proofs/validators".to_string(),
            };
            let page: ValidatorsProof = verifier.proof(&path)?;
            verifier
                .client
                .follow(&page.links)
                .map_err(|error| anyhow!("{}: the validator chain does not verify: {error}", verifier.rpc))?;
            let last = page.links.last().map(|link| link.checkpoint.header.height);
            match (page.more, last) {
                (true, Some(last)) if verifier.client.followed() > followed => after = Some(last),
                (true, _) => bail!(
                    "{}: /proofs/validators says more links follow but its page moves nothing on",
                    verifier.rpc
                ),
                (false, _) => break,
            }
        }
        Ok(verifier)
    }

    /// GETs a proof, waiting (up to the timeout) while the node says it is not final yet.
    fn proof<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        fetch_proof(&self.rpc, self.timeout, path)
    }

    fn checked<T>(&self, what: &str, result: Result<T, tetrad_ledger::light::ProofError>) -> Result<T> {
        result.map_err(|error| anyhow!("{}: {what} does not verify: {error}", self.rpc))
    }

    /// Proves that `hash` is in a final block and what execution did with it.
    pub fn tx(&self, hash: &Digest) -> Result<ProvenTx> {
        let proof: TxProof = self.proof(&format!("/proofs/txs/{hash}"))?;
        self.checked(&format!("the proof of transaction {hash}"), self.client.tx(hash, &proof))
    }

    pub fn block(&self, height: Height) -> Result<Proven> {
        let proof: HeaderProof = self.proof(&format!("/proofs/blocks/{height}"))?;
        if proof.height != height {
            bail!("{}: asked for block {height}, the proof is for {}", self.rpc, proof.height);
        }
        self.checked(&format!("the proof of block {height}"), self.client.header(&proof))
    }

    /// The account of `address` at the latest stable checkpoint (`None`: proven absent).
    pub fn account(&self, address: &Address) -> Result<(Option<Account>, Proven)> {
        let proof: AccountStateProof = self.proof(&format!("/proofs/accounts/{address}"))?;
        self.checked(&format!("the proof of account {address}"), self.client.account(address, &proof))
    }

    /// The latest stable checkpoint, proven, and its registry followed (so that the validator
    /// set of the heights just above it is the one it certifies).
    pub fn learn_checkpoint(&mut self) -> Result<Proven> {
        let height = self.latest_checkpoint_height()?;
        let proof: HeaderProof = self.proof(&format!("/proofs/blocks/{height}"))?;
        if proof.checkpoint.header.height != height || proof.height != height {
            bail!("{}: asked for the checkpoint {height}, the proof is for another height", self.rpc);
        }
        let learned = self.client.learn(&proof.checkpoint, &proof.registry);
        self.checked(&format!("the checkpoint {height}"), learned)
    }

    fn latest_checkpoint_height(&self) -> Result<Height> {
        match fetch(&self.rpc, "/checkpoints/latest")? {
            Answer::Ok(body) => {
                let value: Value = serde_json::from_str(&body).context("/checkpoints/latest: not JSON")?;
                Ok(Height(value["height"].as_u64().context("/checkpoints/latest: no height")?))
            }
            Answer::Refused { status, code, message } => {
                bail!("{}/checkpoints/latest: {status} error {code}: {message}", self.rpc)
            }
        }
    }

    /// The latest stable checkpoint the node has, proven.
    pub fn checkpoint(&self) -> Result<Proven> {
        let height = self.latest_checkpoint_height()?;
        self.block(height)
    }

    /// How a header was proven, in words.
    pub fn how(&self, proven: &Proven) -> String {
        let rotations = self.client.registry().epochs.len() - 1;
        format!(
            "proven final by the checkpoint at height {} ({} of {} validators of the epoch starting at \
             {}), followed from {} through {}",
            proven.checkpoint,
            proven.signers,
            proven.n,
            proven.epoch,
            self.source,
            plural(rotations, "key rotation")
        )
    }
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{count} {noun}s") }
}

/// Whether a receipt is that of a replayed copy: the same signed transaction again, after its
/// nonce was used (by this transaction executed earlier, or by another with the same nonce).
/// Blocks leave such copies out since 2026-12-02 (`Execution::positions`); a chain built
/// before listed them, with receipts that are real but say nothing of the transaction's own
/// execution, so the client still reads them as such.
pub fn replayed(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Failed { error: tetrad_ledger::ExecutionError::BadNonce { expected, found } } if found < expected
    )
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Success => "success".to_string(),
        outcome if replayed(outcome) => format!(
            "a replayed copy ({}): its nonce was already used, by this transaction executed earlier or \
             by another; this proves nothing of its own execution",
            outcome_error(outcome)
        ),
        Outcome::Failed { error } => format!("failed: {error}"),
    }
}

fn outcome_error(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Success => String::new(),
        Outcome::Failed { error } => error.to_string(),
    }
}

fn proven_json(proven: &Proven) -> Value {
    json!({
        "height": proven.header.height,
        "hash": proven.header.hash(),
        "state_root": proven.header.state_root,
        "checkpoint": proven.checkpoint,
        "signers": proven.signers,
        "n": proven.n,
        "epoch": proven.epoch,
    })
}

/// What two honest nodes must agree on, from what a command proved: everything but how it was
/// proven (which checkpoint, which signers). Accounts, checkpoints and validator sets are at the
/// node's latest checkpoint, so they are compared only between answers of the same height.
fn fact(value: &Value) -> (Option<u64>, Value) {
    let mut fact = value.clone();
    let height = fact["block"]["height"].as_u64().or(fact["checkpoint"]["height"].as_u64());
    for object in ["block", "checkpoint"] {
        if let Some(proof) = fact.get_mut(object).and_then(Value::as_object_mut) {
            proof.retain(|key, _| key == "height" || key == "hash" || key == "state_root");
        }
    }
    // A transaction or a block is the same whatever checkpoint proved it: always compared.
    let always = value.get("tx").is_some() || (value.get("block").is_some() && value.get("header").is_some());
    let by_height = !always;
    (if by_height { height } else { None }, fact)
}

/// Runs one verify command against one node: `(json, human lines)`.
fn run_one(
    command: &VerifyCommand,
    rpc: &str,
    genesis: &Genesis,
    args: &VerifyArgs,
) -> Result<(Value, Vec<String>)> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut verifier = Verifier::new(rpc, genesis, args.trust.as_deref(), timeout)?;
    match command {
        VerifyCommand::Tx { hash, .. } => {
            let hash =
                Digest::from_hex(hash).map_err(|error| anyhow!("transaction hash {hash:?}: {error}"))?;
            let proven = verifier.tx(&hash)?;
            let block = &proven.block;
            Ok((
                json!({
                    "tx": hash,
                    "index": proven.receipt.index,
                    "outcome": proven.receipt.outcome,
                    "block": proven_json(block),
                    "trust": verifier.source,
                }),
                vec![
                    format!(
                        "transaction {hash} is in block {} at position {}: {}",
                        block.header.height,
                        proven.receipt.index,
                        outcome_text(&proven.receipt.outcome)
                    ),
                    format!(
                        "block {} ({}) is {}",
                        block.header.height,
                        block.header.hash(),
                        verifier.how(block)
                    ),
                ],
            ))
        }
        VerifyCommand::Block { height, .. } => {
            let proven = verifier.block(Height(*height))?;
            let header = &proven.header;
            Ok((
                json!({ "block": proven_json(&proven), "header": header, "trust": verifier.source }),
                vec![
                    format!(
                        "block {} ({}): {}, state root {}",
                        header.height,
                        header.hash(),
                        plural(header.tx_count as usize, "transaction"),
                        header.state_root
                    ),
                    verifier.how(&proven),
                ],
            ))
        }
        VerifyCommand::Account { address, .. } => {
            let address = address_arg("address", address)?;
            let (account, proven) = verifier.account(&address)?;
            let height = proven.header.height;
            let first = match &account {
                Some(account) => format!(
                    "account {address} at height {height}: balance {}, nonce {}",
                    account.balance, account.nonce
                ),
                None => format!("address {address} has no account at height {height}"),
            };
            Ok((
                json!({
                    "address": address,
                    "exists": account.is_some(),
                    "balance": account.map(|account| account.balance),
                    "nonce": account.map(|account| account.nonce),
                    "block": proven_json(&proven),
                    "trust": verifier.source,
                }),
                vec![
                    first,
                    format!(
                        "against the address and state roots of block {height}, {}",
                        verifier.how(&proven)
                    ),
                ],
            ))
        }
        VerifyCommand::Validators { height, .. } => {
            let checkpoint = verifier.learn_checkpoint()?;
            let height = height.map_or(checkpoint.header.height.next(), Height);
            let registry = verifier.client.registry();
            // A set is only known up to the horizon of what was proven: one interval past the
            // latest checkpoint (a later rotation could still change it).
            let horizon = tetrad_consensus::validators::activation_boundary(
                checkpoint.header.height.next(),
                registry.checkpoint_interval,
            );
            if height > horizon {
                bail!(
                    "the validator set of {height} is not decided yet: the latest stable checkpoint is \
                     {} and a rotation committed after it could still change heights above {horizon}",
                    checkpoint.header.height
                );
            }
            let keys: Vec<PublicKey> = registry.keys_at(height).to_vec();
            let epochs: Vec<Height> = registry.epochs.iter().skip(1).map(|(first, _)| *first).collect();
            let mut lines = vec![format!(
                "the validator set of height {height} (epoch starting at {}), {} validators:",
                registry.epoch_start(height),
                keys.len()
            )];
            lines.extend(keys.iter().enumerate().map(|(index, key)| format!("  {index}: {key}")));
            lines.push(if epochs.is_empty() {
                format!("followed from {}: no key rotation so far", verifier.source)
            } else {
                format!(
                    "followed from {} through {} (epochs starting at {}), each certified by a \
                     checkpoint of the epoch before it; {}",
                    verifier.source,
                    plural(epochs.len(), "key rotation"),
                    epochs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                    verifier.how(&checkpoint)
                )
            });
            Ok((
                json!({
                    "height": height,
                    "epoch": registry.epoch_start(height),
                    "validators": keys,
                    "epochs": epochs,
                    "checkpoint": proven_json(&checkpoint),
                    "trust": verifier.source,
                }),
                lines,
            ))
        }
        VerifyCommand::Checkpoint { .. } => {
            let proven = verifier.checkpoint()?;
            Ok((
                json!({ "checkpoint": proven_json(&proven), "header": proven.header, "trust": verifier.source }),
                vec![
                    format!(
                        "checkpoint {} (header {}, state root {})",
                        proven.header.height,
                        proven.header.hash(),
                        proven.header.state_root
                    ),
                    verifier.how(&proven),
                ],
            ))
        }
    }
}

/// `tetrad verify …`.
pub fn verify(command: VerifyCommand) -> Result<()> {
    let args = match &command {
        VerifyCommand::Tx { args, .. }
        | VerifyCommand::Block { args, .. }
        | VerifyCommand::Account { args, .. }
        | VerifyCommand::Validators { args, .. }
        | VerifyCommand::Checkpoint { args } => args.clone(),
    };
    let genesis_path = args.genesis.clone().context("--genesis FILE (or TETRAD_GENESIS) is required")?;
    let genesis = Genesis::load(&genesis_path)?;
    let nodes: Vec<&str> = args.rpc.split(',').map(str::trim).filter(|url| !url.is_empty()).collect();
    if nodes.is_empty() {
        bail!("--rpc: no URL");
    }
    let mut proven: Option<(String, Value, Vec<String>)> = None;
    let mut failed: Vec<(String, anyhow::Error)> = Vec::new();
    for node in &nodes {
        match run_one(&command, node, &genesis, &args) {
            Ok((value, lines)) => match &proven {
                None => proven = Some((node.to_string(), value, lines)),
                Some((first, first_value, _)) => {
                    let ((height, this), (first_height, that)) = (fact(&value), fact(first_value));
                    // Two proofs of the same thing that differ: one of the two nodes lies (or
                    // the chain forked, which a quorum of honest validators never signs).
                    if height == first_height && this != that {
                        failed.push((
                            node.to_string(),
                            anyhow!("proved {this}, but {first} proved {that}: one of them lies"),
                        ));
                    }
                }
            },
            Err(error) => failed.push((node.to_string(), error)),
        }
    }
    let Some((node, value, lines)) = proven else {
        let (_, error) = failed.into_iter().next().context("no node")?;
        return Err(error);
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for line in &lines {
            println!("{line}");
        }
        if nodes.len() > 1 {
            println!(
                "(from {node}; {} of {} nodes proved the same)",
                nodes.len() - failed.len(),
                nodes.len()
            );
        }
    }
    if !failed.is_empty() {
        let report: Vec<String> = failed.iter().map(|(node, error)| format!("{node}: {error:#}")).collect();
        bail!("{} of {} nodes did not prove it:\n{}", failed.len(), nodes.len(), report.join("\n"));
    }
    Ok(())
}
