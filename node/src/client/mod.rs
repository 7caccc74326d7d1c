//! `tetrad tx …`, `tetrad query …` and `tetrad verify …`: clients of a node's RPC.
//!
//! `tx transfer` signs locally (the key never leaves the machine) and, with `--wait`, proves
//! the transaction and its outcome in a final block with the light client ([`verify`]), from
//! the genesis file alone, so a lying RPC node cannot fake a commit. `query` prints what the
//! node says, unchecked; `verify` proves it.

pub mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use tetrad_consensus::{Digest, Height, PublicKey};
use tetrad_genesis::{Genesis, KeyFile};
use tetrad_ledger::tx::{Tx, TxBody, TxKind, chain_tag};

/// The RPC URL used when neither `--rpc` nor `TETRAD_RPC` is given (validator v0 of
/// `scripts/testnet.sh`).
pub const DEFAULT_RPC: &str = "http://127.0.0.1:26601";

#[derive(Args, Debug, Clone)]
pub struct RpcArgs {
    /// The node to ask.
    #[arg(long, env = "TETRAD_RPC", default_value = DEFAULT_RPC, global = true)]
    rpc: String,
    /// Print the node's JSON instead of the human summary.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TxCommand {
    /// Sign a transfer locally and submit it.
    Transfer {
        /// The sender's key file.
        #[arg(long)]
        key: PathBuf,
        /// Recipient address (64 hex digits) or a key file.
        #[arg(long)]
        to: String,
        #[arg(long)]
        amount: u64,
        /// The chain's genesis file (its hash is signed; its validators check certificates).
        #[arg(long, env = "TETRAD_GENESIS")]
        genesis: PathBuf,
        /// Nonce to use (default: the account's next nonce, fetched from the node).
        #[arg(long)]
        nonce: Option<u64>,
        /// Wait for the commit, then prove the transaction and its outcome in a final block
        /// (from the genesis file; see `tetrad verify`).
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        #[command(flatten)]
        rpc: RpcArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum QueryCommand {
    /// Chain id, height, view, primary, peers, mempool.
    Status {
        #[command(flatten)]
        rpc: RpcArgs,
    },
    /// A block by height (default: latest) or by hash.
    Block {
        /// A height, or "latest".
        at: Option<String>,
        #[arg(long, conflicts_with = "at")]
        hash: Option<String>,
        #[command(flatten)]
        rpc: RpcArgs,
    },
    /// A transaction by hash, with its status and receipt.
    Tx {
        hash: String,
        #[command(flatten)]
        rpc: RpcArgs,
    },
    /// An account's balance and nonce (address or key file).
    Account {
        address: String,
        #[command(flatten)]
        rpc: RpcArgs,
    },
    /// A stable checkpoint (finalized header), by height or the latest.
    Checkpoint {
        at: Option<String>,
        #[command(flatten)]
        rpc: RpcArgs,
    },
    /// The validator set (of a height, default the next one).
    Validators {
        #[arg(long)]
        height: Option<u64>,
        #[command(flatten)]
        rpc: RpcArgs,
    },
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into()
}

/// GET `path`; a non-2xx answer becomes an error with the node's message.
fn get(rpc: &str, path: &str) -> Result<Value> {
    let url = format!("{}{path}", rpc.trim_end_matches('/'));
    let mut response =
        agent(Duration::from_secs(30)).get(&url).call().with_context(|| format!("GET {url}"))?;
    decode(&url, response.status().as_u16(), response.body_mut().read_to_string().unwrap_or_default())
}

fn post(rpc: &str, path: &str, body: &Value, timeout: Duration) -> Result<Value> {
    let url = format!("{}{path}", rpc.trim_end_matches('/'));
    let mut response = agent(timeout)
        .post(&url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .with_context(|| format!("POST {url}"))?;
    decode(&url, response.status().as_u16(), response.body_mut().read_to_string().unwrap_or_default())
}

fn decode(url: &str, status: u16, body: String) -> Result<Value> {
    let value: Value = serde_json::from_str(&body)
        .with_context(|| format!("{url}: answered {status} with non-JSON: {body}"))?;
    if !(200..300).contains(&status) {
        let message = value["error"]["message"].as_str().unwrap_or("(no message)");
        let code = value["error"]["code"].as_i64().unwrap_or(0);
        bail!("{url}: {status} error {code}: {message}");
    }
    Ok(value)
}

fn address_arg(flag: &str, value: &str) -> Result<PublicKey> {
    if Path::new(value).exists() {
        return Ok(KeyFile::read(Path::new(value))?.public_key());
    }
    PublicKey::from_hex(value)
        .map_err(|error| anyhow::anyhow!("{flag} {value:?}: not a key file, and not an address: {error}"))
}

pub fn tx(command: TxCommand) -> Result<()> {
    let TxCommand::Transfer { key, to, amount, genesis, nonce, wait, timeout_ms, rpc } = command;
    let key = KeyFile::read(&key)?;
    let to = address_arg("--to", &to)?;
    let genesis = Genesis::load(&genesis)?;
    let genesis_hash = genesis.hash();
    let from = key.public_key();
    let nonce = match nonce {
        Some(nonce) => nonce,
        None => match get(&rpc.rpc, &format!("/accounts/{from}")) {
            Ok(account) => account["nonce"].as_u64().context("account has no nonce")?,
            Err(error) if error.to_string().contains(" 404 ") => 0,
            Err(error) => return Err(error),
        },
    };
    let body = TxBody { chain: chain_tag(&genesis_hash), from, nonce, kind: TxKind::Transfer { to, amount } };
    let tx = Tx::sign(body, &key.secret, &genesis_hash);
    let hash = tx.hash();
    let path = if wait { format!("/txs?wait=true&timeout_ms={timeout_ms}") } else { "/txs".to_string() };
    let timeout = Duration::from_millis(timeout_ms) + Duration::from_secs(10);
    let answer = post(&rpc.rpc, &path, &serde_json::to_value(&tx)?, timeout)?;
    if !wait {
        if rpc.json {
            println!("{answer}");
        } else {
            println!("submitted {hash} (nonce {nonce}); pending");
        }
        return Ok(());
    }
    answer["height"].as_u64().context("the node's answer has no height")?;
    let verifier = verify::Verifier::new(&rpc.rpc, &genesis, None, Duration::from_millis(timeout_ms))?;
    let proven = verifier.tx(&hash)?;
    let height = proven.block.header.height;
    let outcome = executed(&proven.receipt, &hash, nonce);
    if rpc.json {
        println!("{answer}");
        return outcome;
    }
    match &outcome {
        Ok(()) => println!("committed at height {height}"),
        Err(_) => println!("in block {height} (a failed receipt: see below)"),
    }
    println!("tx {hash}");
    println!("block {height} is {}", verifier.how(&proven.block));
    outcome
}

/// What `--wait` ends with, given the proven receipt of a transaction in a final block: `Ok`
/// if it executed successfully; otherwise an error that says why (the command exits
/// non-zero). A failed transaction used up its nonce: the same signed bytes can never execute
/// later.
fn executed(receipt: &tetrad_ledger::Receipt, hash: &Digest, nonce: u64) -> Result<()> {
    match &receipt.outcome {
        tetrad_ledger::Outcome::Success => Ok(()),
        outcome if verify::replayed(outcome) => bail!(
            "the proof the node gave for transaction {hash} is of a replayed copy in block {}: nonce \
             {nonce} was already used, by this transaction executed earlier or by another. That \
             proves nothing of this transaction's own execution: do NOT sign it again before \
             `tetrad verify account` shows what the account did (ask another node with --rpc)",
            receipt.height
        ),
        tetrad_ledger::Outcome::Failed { error } => bail!(
            "transaction {hash} is in block {} but it failed: {error}. It used up nonce {nonce}: \
             sign a new transaction to try again",
            receipt.height
        ),
    }
}

/// Nonces of the validator's account searched back for an earlier submission of a rotation.
const ROTATION_LOOKBACK_NONCES: u64 = 64;

/// How often a pending rotation is asked about while `keys rotate` waits for it.
const ROTATION_POLL: Duration = Duration::from_millis(250);

/// `tetrad keys rotate`: rotates the consensus key of the validator of `home`, idempotently.
///
/// The validator is the one whose peer id the home's network key has (network keys never
/// rotate). A rotation is in progress while `consensus_key.next.json` exists; a retry of the
/// command (after a timeout, a crash, a lost answer) finds it and reports it:
///
/// - the next key is already the chain's key for the validator: the rotation is in effect;
/// - the chain holds the rotation transaction (found by its hash: signatures are
///   deterministic, so the same key and nonce make the same transaction): it is committed, and
///   its certificate is checked;
/// - otherwise the same transaction is submitted (again) and waited for.
///
/// A new next key is durable (file and directory synced) before its rotation is submitted. The
/// next key file is never deleted here: not on a refusal, not on a timeout (a retry reuses it).
/// The node erases the old key once everything it signed is final.
pub fn rotate(home: &Path, rpc: Option<String>, timeout_ms: u64) -> Result<()> {
    let home = crate::config::Home::new(home);
    let config = crate::config::Config::load(&home.config())?;
    let rpc = rpc.unwrap_or_else(|| format!("http://{}", config.rpc_listen));
    let genesis = Genesis::load(&home.genesis())?;
    let network_key = KeyFile::read(&home.network_key())?;
    let peer_id = crate::identity::peer_id(&network_key)?.to_string();
    let index =
        genesis.validators.iter().position(|validator| validator.peer_id == peer_id).with_context(|| {
            format!(
                "{}: peer id {peer_id} is no validator's in {} (not a validator home)",
                home.network_key().display(),
                home.genesis().display()
            )
        })?;
    let validator = tetrad_consensus::ValidatorIndex(index as u16);
    let current = KeyFile::read(&home.consensus_key())?;
    let next_path = home.next_consensus_key();
    let next = if next_path.exists() { Some(KeyFile::read(&next_path)?) } else { None };
    let chain_key = chain_key_of(&rpc, index)?;
    let proof_timeout = Duration::from_millis(timeout_ms);
    let rotation = Rotation { rpc: &rpc, genesis: &genesis, validator, current: &current, proof_timeout };
    match next {
        Some(next) if next.public_key() == chain_key => {
            println!(
                "the rotation of validator {validator} to {} is in effect (the chain's validator set holds it)",
                next.public_key()
            );
            println!(
                "the node erases the old key from {} once everything it signed is final",
                home.consensus_key().display()
            );
            Ok(())
        }
        Some(next) if current.public_key() == chain_key => {
            println!("reusing the next key in {} (a rotation in progress)", next_path.display());
            if let Some((tx, height, status)) = rotation.find_earlier(&next)? {
                return rotation.report(&home, &next, &tx, height, &status, "already committed");
            }
            rotation.submit(&home, &next, timeout_ms)
        }
        Some(next) => bail!(
            "the chain's consensus key for validator {validator} is {chain_key}, but {} holds {} and \
             {} holds {}: neither is it. Nothing was changed; see /validators and the node's log",
            home.consensus_key().display(),
            current.public_key(),
            next_path.display(),
            next.public_key()
        ),
        None if current.public_key() == chain_key => {
            let key = KeyFile::generate()?;
            // Durable (synced file and directory) before the rotation that names it is sent.
            key.write_new(&next_path)?;
            println!("wrote the next consensus key to {} (mode 0600)", next_path.display());
            rotation.submit(&home, &key, timeout_ms)
        }
        None => bail!(
            "{}: its key {} is not the chain's consensus key {chain_key} for validator {validator} \
             (a rotation may be in progress; see /validators); nothing was changed",
            home.consensus_key().display(),
            current.public_key()
        ),
    }
}

/// The chain's consensus key of validator `index` for the next height.
fn chain_key_of(rpc: &str, index: usize) -> Result<PublicKey> {
    let validators = get(rpc, "/validators")?;
    let entry = validators["validators"]
        .as_array()
        .context("no validators")?
        .iter()
        .find(|validator| validator["index"].as_u64() == Some(index as u64))
        .with_context(|| format!("/validators has no validator {index}"))?;
    serde_json::from_value(entry["consensus_key"].clone()).context("/validators: consensus_key")
}

/// A rotation of `validator`'s key, signed by `current`.
struct Rotation<'a> {
    rpc: &'a str,
    genesis: &'a Genesis,
    validator: tetrad_consensus::ValidatorIndex,
    current: &'a KeyFile,
    /// How long to wait for the rotation's block to be covered by a stable checkpoint.
    proof_timeout: Duration,
}

impl Rotation<'_> {
    /// The rotation to `next` with `nonce`: the same bytes every time.
    fn tx(&self, next: &KeyFile, nonce: u64) -> Tx {
        let genesis_hash = self.genesis.hash();
        let from = self.current.public_key();
        let digest = tetrad_ledger::validators::possession_digest(
            &genesis_hash,
            self.validator,
            &from,
            &next.public_key(),
        );
        let kind = TxKind::RotateValidatorKey {
            validator: self.validator,
            new_key: next.public_key(),
            proof_of_possession: next.secret.sign_digest(&digest),
        };
        Tx::sign(
            TxBody { chain: chain_tag(&genesis_hash), from, nonce, kind },
            &self.current.secret,
            &genesis_hash,
        )
    }

    /// The current key's account nonce (0 for an account the chain has not seen).
    fn nonce(&self) -> Result<u64> {
        match get(self.rpc, &format!("/accounts/{}", self.current.public_key())) {
            Ok(account) => account["nonce"].as_u64().context("account has no nonce"),
            Err(error) if error.to_string().contains(" 404 ") => Ok(0),
            Err(error) => Err(error),
        }
    }

    /// An earlier submission of the rotation to `next` that the chain committed: `(tx, height,
    /// status)`. Looks at the nonces this account used, newest first.
    fn find_earlier(&self, next: &KeyFile) -> Result<Option<(Tx, Height, String)>> {
        let nonce = self.nonce()?;
        for earlier in (nonce.saturating_sub(ROTATION_LOOKBACK_NONCES)..nonce).rev() {
            let tx = self.tx(next, earlier);
            if let Some(view) = find_tx(self.rpc, &tx.hash())?
                && let (Some(height), Some(status)) = (view["height"].as_u64(), view["status"].as_str())
                && status == "committed"
            {
                return Ok(Some((tx, Height(height), status.to_string())));
            }
        }
        Ok(None)
    }

    /// Submits the rotation to `next` (or waits for the same transaction if it is pending) and
    /// reports the outcome.
    fn submit(&self, home: &crate::config::Home, next: &KeyFile, timeout_ms: u64) -> Result<()> {
        let tx = self.tx(next, self.nonce()?);
        let hash = tx.hash();
        let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
        if find_tx(self.rpc, &hash)?.is_none() {
            let path = format!("/txs?wait=true&timeout_ms={timeout_ms}");
            let timeout = Duration::from_millis(timeout_ms) + Duration::from_secs(10);
            if let Err(error) = post(self.rpc, &path, &serde_json::to_value(&tx)?, timeout) {
                // Refused, timed out, or the answer was lost: what the chain holds decides.
                if find_tx(self.rpc, &hash).ok().flatten().is_none() {
                    return Err(error.context(format!(
                        "the rotation {hash} was not accepted; the next key stays in {} and the same \
                         command submits the same rotation again",
                        home.next_consensus_key().display()
                    )));
                }
            }
        }
        loop {
            if let Some(view) = find_tx(self.rpc, &hash)?
                && let (Some(height), Some(status)) = (view["height"].as_u64(), view["status"].as_str())
            {
                return self.report(home, next, &tx, Height(height), status, "committed");
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "the rotation {hash} was submitted but not committed within {timeout_ms} ms; the \
                     next key stays in {}; run the same command again: it finds the rotation or \
                     submits the same transaction again",
                    home.next_consensus_key().display()
                );
            }
            std::thread::sleep(ROTATION_POLL);
        }
    }

    /// Proves the transaction `tx` and its outcome in a final block (from the genesis file) and
    /// prints the outcome. `height` and `status` are the node's word, used only until proven.
    fn report(
        &self,
        home: &crate::config::Home,
        next: &KeyFile,
        tx: &Tx,
        height: Height,
        status: &str,
        what: &str,
    ) -> Result<()> {
        let validator = self.validator;
        let unproven = |error: anyhow::Error| {
            error.context(format!(
                "the rotation of validator {validator} is {what} at height {height} as the node says, \
                 but it is not proven final: the next key stays in {}; run the same command again to \
                 check it (it submits nothing new while the rotation is on the chain)",
                home.next_consensus_key().display()
            ))
        };
        let verifier =
            verify::Verifier::new(self.rpc, self.genesis, None, self.proof_timeout).map_err(unproven)?;
        let proven = verifier.tx(&tx.hash()).map_err(unproven)?;
        if proven.block.header.height != height {
            bail!(
                "the node said the rotation is in block {height}, its proof says {}",
                proven.block.header.height
            );
        }
        let how = verifier.how(&proven.block);
        if verify::replayed(&proven.receipt.outcome) {
            bail!(
                "the node proved only a replayed copy of the rotation of validator {validator} (block \
                 {height}); that says nothing of the rotation itself: ask another node with --rpc. \
                 The next key stays in {}",
                home.next_consensus_key().display()
            );
        }
        if let tetrad_ledger::Outcome::Failed { error } = &proven.receipt.outcome {
            bail!(
                "the rotation of validator {validator} is in block {height} ({how}) but the chain \
                 refused it: {error}. The next key stays in {}",
                home.next_consensus_key().display()
            );
        }
        if status != "committed" {
            bail!("the node says the rotation {status}, its proof says it succeeded: the node lies");
        }
        let activation = tetrad_consensus::validators::activation_boundary(
            height,
            self.genesis.consensus.checkpoint_interval,
        )
        .next();
        println!("rotation of validator {validator} {what} at height {height}");
        println!("block {height} is {how}");
        println!("new consensus key {} signs heights from {activation} on", next.public_key());
        println!(
            "the node switches keys at height {activation}, then erases the old key from {}",
            home.consensus_key().display()
        );
        Ok(())
    }
}

/// The node's view of a transaction (`None`: it knows no such transaction).
fn find_tx(rpc: &str, hash: &Digest) -> Result<Option<Value>> {
    match get(rpc, &format!("/txs/{hash}")) {
        Ok(view) => Ok(Some(view)),
        Err(error) if error.to_string().contains(" 404 ") => Ok(None),
        Err(error) => Err(error),
    }
}

pub fn query(command: QueryCommand) -> Result<()> {
    let (rpc, value) = match command {
        QueryCommand::Status { rpc } => {
            let value = get(&rpc.rpc, "/status")?;
            (rpc, value)
        }
        QueryCommand::Block { at, hash, rpc } => {
            let path = match (at.as_deref(), hash) {
                (_, Some(hash)) => format!("/blocks/hash/{hash}"),
                (None | Some("latest"), None) => "/blocks/latest".to_string(),
                (Some(height), None) => format!("/blocks/{height}"),
            };
            let value = get(&rpc.rpc, &path)?;
            (rpc, value)
        }
        QueryCommand::Tx { hash, rpc } => {
            let value = get(&rpc.rpc, &format!("/txs/{hash}"))?;
            (rpc, value)
        }
        QueryCommand::Account { address, rpc } => {
            let address = address_arg("address", &address)?;
            let value = get(&rpc.rpc, &format!("/accounts/{address}"))?;
            (rpc, value)
        }
        QueryCommand::Checkpoint { at, rpc } => {
            let path = match at.as_deref() {
                None | Some("latest") => "/checkpoints/latest".to_string(),
                Some(height) => format!("/checkpoints/{height}"),
            };
            let value = get(&rpc.rpc, &path)?;
            (rpc, value)
        }
        QueryCommand::Validators { height, rpc } => {
            let path = match height {
                Some(height) => format!("/validators?height={height}"),
                None => "/validators".to_string(),
            };
            let value = get(&rpc.rpc, &path)?;
            (rpc, value)
        }
    };
    if rpc.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_human(&value, "");
    }
    Ok(())
}

/// `tetrad health`: GET /health of the node at `rpc`, or of the node in `home`; an error unless
/// it answers 200.
pub fn health(rpc: Option<String>, home: Option<PathBuf>, timeout_ms: u64) -> Result<()> {
    let rpc = match (rpc, home) {
        (Some(rpc), _) => rpc,
        (None, Some(home)) => {
            let config = crate::config::Config::load(&crate::config::Home::new(&home).config())?;
            format!("http://{}", local_address(&config.rpc_listen))
        }
        (None, None) => bail!("give --rpc URL or --home DIR (or set TETRAD_HOME)"),
    };
    let url = format!("{}/health", rpc.trim_end_matches('/'));
    let mut response =
        agent(Duration::from_millis(timeout_ms)).get(&url).call().with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    let value: Value = serde_json::from_str(&body)
        .with_context(|| format!("{url}: answered {status} with non-JSON: {body}"))?;
    let health = value["status"].as_str().unwrap_or("(no status)");
    let reason = value["reason"].as_str().unwrap_or("");
    let height = scalar(&value["height"]);
    if status != 200 {
        bail!("{url}: {status} {health} at height {height}: {reason}");
    }
    println!("{health} at height {height}: {reason}");
    Ok(())
}

/// A listen address as a local client dials it: the unspecified address becomes loopback.
fn local_address(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.to_string(),
    }
}

/// Prints JSON as indented `key  value` lines.
fn print_human(value: &Value, indent: &str) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::Object(_) => {
                        println!("{indent}{key}:");
                        print_human(value, &format!("{indent}  "));
                    }
                    Value::Array(items) if items.iter().any(|item| item.is_object()) => {
                        println!("{indent}{key}:");
                        for item in items {
                            println!("{indent}  -");
                            print_human(item, &format!("{indent}    "));
                        }
                    }
                    Value::Array(items) => {
                        let shown: Vec<String> = items.iter().map(scalar).collect();
                        println!("{indent}{key:<20} [{}]", shown.join(", "));
                    }
                    _ => println!("{indent}{key:<20} {}", scalar(value)),
                }
            }
        }
        other => println!("{indent}{}", scalar(other)),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use tetrad_consensus::{Batch, ValidatorIndex, View};
    use tetrad_ledger::testkit::{MemoryState, TestChain};
    use tetrad_ledger::tx::encode_payload;

    use super::*;

    /// The receipt of `tx`, executed as the first block of a fresh test chain (whose accounts
    /// hold 1000 each).
    fn receipt_after_executing(chain: &TestChain, tx: &Tx) -> tetrad_ledger::Receipt {
        let state = MemoryState::from_genesis(&chain.genesis);
        let txs = std::slice::from_ref(tx);
        let batch = Batch {
            view: View(0),
            proposer: ValidatorIndex(0),
            timestamp_ms: 1,
            payload: encode_payload(txs),
        };
        let execution = tetrad_ledger::execute(&state, &chain.genesis.header, &batch, txs)
            .unwrap_or_else(|never| match never {});
        execution.receipts[0].clone()
    }

    /// `tx transfer --wait` used to print a failed receipt and exit 0.
    #[test]
    fn waiting_for_a_transfer_that_failed_is_an_error_that_says_why() {
        let chain = TestChain::new(4, 2, 1000);
        let fine = chain.transfer(0, 0, 1, 10);
        assert!(executed(&receipt_after_executing(&chain, &fine), &fine.hash(), 0).is_ok());
        let too_much = chain.transfer(0, 0, 1, 5000);
        let error = executed(&receipt_after_executing(&chain, &too_much), &too_much.hash(), 0)
            .expect_err("a failed receipt is an error");
        let message = error.to_string();
        assert!(message.contains("balance 1000 is less than the amount 5000"), "{message}");
        assert!(message.contains("used up nonce 0"), "{message}");
    }

    /// A replayed copy of a transaction (its nonce already used when the copy executed) has a
    /// real, provable failed receipt; it must not be reported as the transaction failing, which
    /// would make the user sign and pay again (found by review).
    #[test]
    fn a_replayed_copy_is_not_reported_as_a_failure_to_retry() {
        let chain = TestChain::new(4, 2, 1000);
        let tx = chain.transfer(0, 0, 1, 10);
        let mut receipt = receipt_after_executing(&chain, &tx);
        receipt.outcome = tetrad_ledger::Outcome::Failed {
            error: tetrad_ledger::ExecutionError::BadNonce { expected: 1, found: 0 },
        };
        let message = executed(&receipt, &tx.hash(), 0).expect_err("not a success").to_string();
        assert!(message.contains("replayed copy") && message.contains("do NOT sign it again"), "{message}");
        assert!(!message.contains("sign a new transaction to try again"), "{message}");
    }
}
