//! `tetrad tx …` and `tetrad query …`: clients of a node's RPC.
//!
//! `tx transfer` signs locally (the key never leaves the machine) and, with `--wait`, checks
//! the commit certificate of the block that holds the transaction against the validator set
//! from the genesis file, so a lying RPC node cannot fake a commit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use tetrad_consensus::{CommitCertificate, Digest, Height, PublicKey};
use tetrad_genesis::{Genesis, KeyFile};
use tetrad_ledger::block::tx_root;
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
        /// Wait for the commit and verify its certificate.
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
    let height = Height(answer["height"].as_u64().context("the node's answer has no height")?);
    let (certificate, source) = verify_inclusion(&rpc.rpc, &genesis, height, &hash)?;
    if rpc.json {
        println!("{answer}");
        return Ok(());
    }
    let signers: Vec<String> = certificate.signers().map(|signer| signer.to_string()).collect();
    match answer["status"].as_str() {
        Some("committed") => println!("committed at height {height}"),
        Some("failed") => {
            let reason = &answer["receipt"]["outcome"]["error"];
            println!("committed at height {height}, but execution refused it: {reason}");
        }
        other => bail!("unexpected status {other:?} for {hash}"),
    }
    println!("tx {hash}");
    println!(
        "certificate: {} of {} validators signed (validators {}), checked against {source}",
        signers.len(),
        genesis.validators.len(),
        signers.join(", ")
    );
    Ok(())
}

/// `tetrad keys rotate`: a new consensus key for the validator of `home`, generated into the
/// home as the next key (0600; an existing one is reused, so a retry resubmits the same key),
/// a `RotateValidatorKey` transaction signed by the current key with the new key's proof of
/// possession, submitted and waited for. Reports the activation height.
pub fn rotate(home: &Path, rpc: Option<String>, timeout_ms: u64) -> Result<()> {
    let home = crate::config::Home::new(home);
    let config = crate::config::Config::load(&home.config())?;
    let rpc = rpc.unwrap_or_else(|| format!("http://{}", config.rpc_listen));
    let genesis = Genesis::load(&home.genesis())?;
    let genesis_hash = genesis.hash();
    let current = KeyFile::read(&home.consensus_key())?;
    let validators = get(&rpc, "/validators")?;
    let index = validators["validators"]
        .as_array()
        .context("no validators")?
        .iter()
        .find(|validator| validator["consensus_key"].as_str() == Some(current.public_key().to_hex().as_str()))
        .and_then(|validator| validator["index"].as_u64())
        .with_context(|| {
            format!(
                "{}: its key {} is not a validator's current consensus key (a rotation may be in progress; see /validators)",
                home.consensus_key().display(),
                current.public_key()
            )
        })?;
    let validator = tetrad_consensus::ValidatorIndex(index as u16);
    let next_path = home.next_consensus_key();
    let next = if next_path.exists() {
        println!("reusing the next key in {}", next_path.display());
        KeyFile::read(&next_path)?
    } else {
        let key = KeyFile::generate()?;
        key.write_new(&next_path)?;
        println!("wrote the next consensus key to {} (mode 0600)", next_path.display());
        key
    };
    let from = current.public_key();
    let nonce = match get(&rpc, &format!("/accounts/{from}")) {
        Ok(account) => account["nonce"].as_u64().context("account has no nonce")?,
        Err(error) if error.to_string().contains(" 404 ") => 0,
        Err(error) => return Err(error),
    };
    let digest =
        tetrad_ledger::validators::possession_digest(&genesis_hash, validator, &from, &next.public_key());
    let kind = TxKind::RotateValidatorKey {
        validator,
        new_key: next.public_key(),
        proof_of_possession: next.secret.sign_digest(&digest),
    };
    let tx = Tx::sign(
        TxBody { chain: chain_tag(&genesis_hash), from, nonce, kind },
        &current.secret,
        &genesis_hash,
    );
    let hash = tx.hash();
    let path = format!("/txs?wait=true&timeout_ms={timeout_ms}");
    let timeout = Duration::from_millis(timeout_ms) + Duration::from_secs(10);
    let answer = post(&rpc, &path, &serde_json::to_value(&tx)?, timeout)?;
    let height = Height(answer["height"].as_u64().context("the node's answer has no height")?);
    if answer["status"].as_str() != Some("committed") {
        let reason = answer["receipt"]["outcome"]["error"].clone();
        // Never scheduled: the next key is of no use.
        let _ = std::fs::remove_file(&next_path);
        bail!("the rotation was committed at height {height} but refused: {reason}");
    }
    let (_, source) = verify_inclusion(&rpc, &genesis, height, &hash)?;
    let activation =
        tetrad_consensus::validators::activation_boundary(height, genesis.consensus.checkpoint_interval)
            .next();
    println!(
        "rotation of validator {validator} committed at height {height} (certificate checked against {source})"
    );
    println!("new consensus key {} signs heights from {activation} on", next.public_key());
    println!(
        "the node switches keys at height {activation}, then erases the old key from {}",
        home.consensus_key().display()
    );
    Ok(())
}

/// Fetches the block at `height`, checks its commit certificate against the genesis validator
/// set, that it certifies this block's batch, and that the block holds `hash`.
///
/// The validator set of `height` is the genesis set until a key rotation takes effect; after
/// that it is the set the node reports for that height, and the output says so (following the
/// rotations back to genesis is a light client's job, not yet this one's).
fn verify_inclusion(
    rpc: &str,
    genesis: &Genesis,
    height: Height,
    hash: &Digest,
) -> Result<(CommitCertificate, String)> {
    let block = get(rpc, &format!("/blocks/{height}"))?;
    let certificate: CommitCertificate =
        serde_json::from_value(block["certificate"].clone()).context("block has no commit certificate")?;
    let genesis_set = genesis.validator_set()?;
    let reported = get(rpc, &format!("/validators?height={height}"))?;
    let keys: Vec<PublicKey> = reported["validators"]
        .as_array()
        .context("no validators")?
        .iter()
        .map(|validator| serde_json::from_value(validator["consensus_key"].clone()))
        .collect::<Result<_, _>>()
        .context("validator keys")?;
    let (set, source) = if keys == genesis_set.keys() {
        (genesis_set, "the genesis validators".to_string())
    } else {
        let set = tetrad_consensus::ValidatorSet::new(genesis.hash(), keys)?;
        (set, format!("the validator set the node reports for height {height} (keys rotated since genesis)"))
    };
    certificate.verify(&set).with_context(|| {
        format!("the commit certificate of block {height} does not verify against {source}")
    })?;
    let batch_digest =
        Digest::from_hex(block["header"]["batch_digest"].as_str().context("no batch digest")?)?;
    if certificate.statement.height != height || certificate.statement.digest != batch_digest {
        bail!("the commit certificate of block {height} certifies another batch");
    }
    let txs: Vec<Digest> = serde_json::from_value(block["txs"].clone()).context("block has no tx list")?;
    let root = Digest::from_hex(block["header"]["tx_root"].as_str().context("no tx root")?)?;
    if tx_root(&txs) != root {
        bail!("block {height}: the tx list does not match the header's tx root");
    }
    if !txs.contains(hash) {
        bail!("block {height} does not hold {hash}");
    }
    Ok((certificate, source))
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
