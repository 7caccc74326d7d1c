use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tetrad_consensus::SecretKey;
use tetrad_ledger::scratch::ScratchDir;

use super::*;

const PEER_A: &str = "12D3KooWA1b2c3d4e5f6g7h8i9jAkBmCnDoEpFqGrHsJtKuLvMwNxPy";
const PEER_B: &str = "12D3KooWB1b2c3d4e5f6g7h8i9jAkBmCnDoEpFqGrHsJtKuLvMwNxPy";

fn valid() -> Genesis {
    let mut genesis = Genesis::new("tetrad-test", 1_700_000_000_000);
    for (index, peer) in [PEER_A, PEER_B].iter().enumerate() {
        genesis.validators.push(GenesisValidator {
            name: format!("v{index}"),
            consensus_key: SecretKey::from_seed([index as u8 + 1; 32]).public_key(),
            peer_id: peer.to_string(),
            p2p_address: format!("/ip4/127.0.0.1/tcp/{}", 26000 + index),
        });
    }
    genesis
        .accounts
        .push(GenesisAccount { address: SecretKey::from_seed([50; 32]).public_key(), balance: 1000 });
    genesis
}

fn problem(edit: impl FnOnce(&mut Genesis)) -> String {
    let mut genesis = valid();
    edit(&mut genesis);
    genesis.validate().expect_err("should be invalid").to_string()
}

#[test]
fn a_valid_genesis_validates_and_round_trips() {
    let genesis = valid();
    assert_eq!(genesis.validate(), Ok(()));
    let dir = ScratchDir::new("genesis").expect("scratch dir");
    let path = dir.join("genesis.json");
    genesis.save(&path).expect("save");
    let loaded = Genesis::load(&path).expect("load");
    assert_eq!(loaded, genesis);
    assert_eq!(loaded.hash(), genesis.hash());
    assert_eq!(genesis.validator_set().expect("set").n(), 2);
}

#[test]
fn hash_changes_with_any_field() {
    let base = valid().hash();
    let mut other = valid();
    other.chain_id = "tetrad-other".into();
    assert_ne!(other.hash(), base);
    let mut other = valid();
    other.consensus.checkpoint_interval = 8;
    assert_ne!(other.hash(), base);
    let mut other = valid();
    other.accounts[0].balance += 1;
    assert_ne!(other.hash(), base);
}

#[test]
fn each_rule_has_its_own_message() {
    assert_eq!(problem(|g| g.validators.clear()), "validators: the validator set is empty");
    assert_eq!(
        problem(|g| g.validators[1].consensus_key = g.validators[0].consensus_key),
        "validators[1].consensus_key: the same key as validators[0]"
    );
    assert_eq!(
        problem(|g| g.validators[1].peer_id = PEER_A.into()),
        "validators[1].peer_id: the same peer id as validators[0]"
    );
    assert_eq!(
        problem(|g| g.validators[1].name = "v0".into()),
        "validators[1].name: \"v0\" is also the name of validators[0]"
    );
    assert_eq!(
        problem(|g| g.accounts[0].balance = 0),
        "accounts: total supply is zero; fund at least one account"
    );
    assert_eq!(problem(|g| g.accounts.clear()), "accounts: total supply is zero; fund at least one account");
    assert_eq!(
        problem(|g| {
            let first = g.accounts[0].clone();
            g.accounts.push(first);
        }),
        "accounts[1].address: the same address as accounts[0]"
    );
    assert_eq!(
        problem(|g| {
            g.accounts[0].balance = u64::MAX;
            g.accounts
                .push(GenesisAccount { address: SecretKey::from_seed([51; 32]).public_key(), balance: 1 });
        }),
        "accounts[1].balance: total supply overflows u64"
    );
    assert!(
        problem(|g| g.validators[0].peer_id = "not-a-peer".into())
            .starts_with("validators[0].peer_id: expected a base58")
    );
    assert!(
        problem(|g| g.validators[0].p2p_address = "127.0.0.1:26000".into())
            .starts_with("validators[0].p2p_address: expected /ip4/<address>/tcp/<port>")
    );
    assert!(problem(|g| g.chain_id = "has space".into()).starts_with("chain_id: must be"));
    assert!(
        problem(|g| g.consensus.watermark_window = g.consensus.checkpoint_interval)
            .starts_with("consensus.watermark_window: must be at least twice checkpoint_interval")
    );
    assert!(problem(|g| g.consensus.checkpoint_interval = 0).starts_with("consensus.checkpoint_interval:"));
    // Hole 6: a window whose full view change cannot fit in one message.
    assert!(problem(|g| g.consensus.watermark_window = 100_000).starts_with(
        "consensus.watermark_window: with 2 validators a full-window view change needs a new-view of"
    ));
    assert!(
        problem(|g| g.consensus.view_change_timeout_max_ms = 1)
            .starts_with("consensus.view_change_timeout_max_ms: must be at least")
    );
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(
        problem(|g| g.validators[0].consensus_key = tetrad_consensus::PublicKey(identity)),
        "validators[0].consensus_key: weak (small-order) ed25519 public key"
    );
}

fn parse_error(text: &str) -> String {
    Genesis::parse(Path::new("g.json"), text).expect_err("should not parse").to_string()
}

#[test]
fn parse_errors_name_the_file_and_the_field() {
    let mut json: serde_json::Value = serde_json::to_value(valid()).expect("to json");
    json["validators"][1]["consensus_key"] = "abcd".into();
    let error = parse_error(&json.to_string());
    assert!(
        error.starts_with("g.json: validators[1].consensus_key: expected 64 hex digits, found 4 at line 1"),
        "{error}"
    );
    let mut json: serde_json::Value = serde_json::to_value(valid()).expect("to json");
    json["accounts"][0]["address"] = "zz".repeat(32).into();
    assert!(
        parse_error(&json.to_string())
            .starts_with("g.json: accounts[0].address: not lowercase or uppercase hex")
    );
    let mut json: serde_json::Value = serde_json::to_value(valid()).expect("to json");
    json["validators"][0]["stake"] = 5.into();
    let error = parse_error(&json.to_string());
    assert!(error.starts_with("g.json: validators[0].stake: unknown field `stake`"), "{error}");
    let mut json: serde_json::Value = serde_json::to_value(valid()).expect("to json");
    json["consensus"]["batch_size"] = 5.into();
    assert!(
        parse_error(&json.to_string())
            .starts_with("g.json: consensus.batch_size: unknown field `batch_size`")
    );
    let mut json: serde_json::Value = serde_json::to_value(valid()).expect("to json");
    json["colour"] = "blue".into();
    assert!(parse_error(&json.to_string()).contains("unknown field `colour`"));
    let mut json: serde_json::Value = serde_json::to_value(valid()).expect("to json");
    json["accounts"][0]["balance"] = "-3".into();
    assert!(parse_error(&json.to_string()).starts_with("g.json: accounts[0].balance: invalid type"));
}

#[test]
fn consensus_parameters_default_when_absent() {
    let mut json: serde_json::Value = serde_json::to_value(valid()).expect("to json");
    json.as_object_mut().expect("object").remove("consensus");
    let genesis = Genesis::parse(Path::new("g.json"), &json.to_string()).expect("parses");
    assert_eq!(genesis.consensus, ConsensusParams::default());
}

#[test]
fn key_files_are_private_and_never_overwritten() {
    let dir = ScratchDir::new("keys").expect("scratch dir");
    let path = dir.join("key.json");
    let key = KeyFile::generate().expect("random");
    key.write_new(&path).expect("write");
    let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(KeyFile::read(&path).expect("read").public_key(), key.public_key());
    let again = KeyFile::generate().expect("random").write_new(&path).expect_err("must not overwrite");
    assert!(
        again
            .to_string()
            .ends_with("already exists; refusing to overwrite a key (remove it first if you mean to)")
    );
    assert_eq!(KeyFile::read(&path).expect("read").public_key(), key.public_key());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let error = KeyFile::read(&path).expect_err("world-readable").to_string();
    assert!(error.contains("readable by group or others (mode 644)"), "{error}");
}

#[test]
fn tampered_key_files_are_refused() {
    let dir = ScratchDir::new("keys").expect("scratch dir");
    let path = dir.join("key.json");
    KeyFile::generate().expect("random").write_new(&path).expect("write");
    let text = std::fs::read_to_string(&path).expect("read");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    json["public_key"] = SecretKey::from_seed([3; 32]).public_key().to_hex().into();
    std::fs::write(&path, json.to_string()).expect("write");
    let error = KeyFile::read(&path).expect_err("mismatch").to_string();
    assert!(error.contains("public_key: does not match the secret key"), "{error}");
    json["secret_key"] = "12".into();
    std::fs::write(&path, json.to_string()).expect("write");
    let error = KeyFile::read(&path).expect_err("short").to_string();
    assert!(error.contains("secret_key: expected 64 hex digits, found 2"), "{error}");
}
