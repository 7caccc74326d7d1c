//! The `tetrad` command line, run as a real process: keys, genesis, init, and their errors.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use tetrad_ledger::scratch::ScratchDir;

fn tetrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tetrad")).args(args).output().expect("run tetrad")
}

fn ok(args: &[&str]) -> String {
    let output = tetrad(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tetrad {args:?} failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let output = tetrad(args);
    assert!(!output.status.success(), "tetrad {args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Builds a valid two-validator genesis with one account; returns its path.
fn build_genesis(dir: &ScratchDir) -> std::path::PathBuf {
    let genesis = dir.join("genesis.json");
    ok(&[
        "genesis",
        "new",
        "--chain-id",
        "tetrad-cli",
        "--out",
        p(&genesis),
        "--genesis-time-ms",
        "1700000000000",
    ]);
    for index in 0..2 {
        let consensus = dir.join(&format!("v{index}-consensus.json"));
        let network = dir.join(&format!("v{index}-network.json"));
        ok(&["keys", "generate", "--out", p(&consensus)]);
        ok(&["keys", "generate", "--out", p(&network)]);
        let address = format!("/ip4/127.0.0.1/tcp/{}", 27000 + index);
        ok(&[
            "genesis",
            "add-validator",
            "--genesis",
            p(&genesis),
            "--name",
            &format!("v{index}"),
            "--consensus-key",
            p(&consensus),
            "--network-key",
            p(&network),
            "--p2p-address",
            &address,
        ]);
    }
    let account = dir.join("alice.json");
    ok(&["keys", "generate", "--out", p(&account)]);
    ok(&[
        "genesis",
        "add-account",
        "--genesis",
        p(&genesis),
        "--address",
        p(&account),
        "--balance",
        "1000000",
    ]);
    genesis
}

#[test]
fn keys_are_private_and_never_overwritten() {
    let dir = ScratchDir::new("cli-keys").expect("scratch");
    let key = dir.join("key.json");
    let out = ok(&["keys", "generate", "--out", p(&key)]);
    assert!(out.contains("public key"), "{out}");
    assert!(out.contains("peer id     12D3KooW"), "{out}");
    let mode = std::fs::metadata(&key).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let shown = ok(&["keys", "show", p(&key)]);
    assert_eq!(shown.lines().next(), out.lines().nth(1));
    let error = fails(&["keys", "generate", "--out", p(&key)]);
    assert!(error.contains(&format!("{}: already exists; refusing to overwrite", key.display())), "{error}");
    let error = fails(&["keys", "show", p(&dir.join("missing.json"))]);
    assert!(error.contains("missing.json: cannot read"), "{error}");
}

#[test]
fn genesis_is_built_validated_and_errors_name_file_and_field() {
    let dir = ScratchDir::new("cli-genesis").expect("scratch");
    let genesis = build_genesis(&dir);
    let out = ok(&["genesis", "validate", p(&genesis)]);
    assert!(
        out.contains("valid") && out.contains("genesis hash") && out.contains("total supply  1000000"),
        "{out}"
    );

    // Adding the same validator key again is refused with the file and the field.
    let error = fails(&[
        "genesis",
        "add-validator",
        "--genesis",
        p(&genesis),
        "--name",
        "v9",
        "--consensus-key",
        p(&dir.join("v0-consensus.json")),
        "--network-key",
        p(&dir.join("v1-network.json")),
        "--p2p-address",
        "/ip4/127.0.0.1/tcp/27009",
    ]);
    assert!(
        error.contains(&format!(
            "{}: validators[2].consensus_key: the same key as validators[0]",
            genesis.display()
        )),
        "{error}"
    );

    // Hand edits: bad hex and an unknown field.
    let text = std::fs::read_to_string(&genesis).expect("read");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    json["accounts"][0]["address"] = "12ab".into();
    let broken = dir.join("broken.json");
    std::fs::write(&broken, json.to_string()).expect("write");
    let error = fails(&["genesis", "validate", p(&broken)]);
    assert!(
        error
            .contains(&format!("{}: accounts[0].address: expected 64 hex digits, found 4", broken.display())),
        "{error}"
    );
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    json["consensus"]["speed"] = "fast".into();
    std::fs::write(&broken, json.to_string()).expect("write");
    let error = fails(&["genesis", "validate", p(&broken)]);
    assert!(error.contains("consensus.speed: unknown field `speed`"), "{error}");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    json["validators"][1]["peer_id"] = json["validators"][0]["peer_id"].clone();
    std::fs::write(&broken, json.to_string()).expect("write");
    let error = fails(&["genesis", "validate", p(&broken)]);
    assert!(error.contains("validators[1].peer_id: the same peer id as validators[0]"), "{error}");
    let error = fails(&["genesis", "new", "--chain-id", "x", "--out", p(&genesis)]);
    assert!(error.contains("already exists"), "{error}");
}

#[test]
fn init_creates_a_home_once() {
    let dir = ScratchDir::new("cli-init").expect("scratch");
    let genesis = build_genesis(&dir);
    let home = dir.join("home-v0");
    let out = ok(&[
        "init",
        "--home",
        p(&home),
        "--genesis",
        p(&genesis),
        "--consensus-key",
        p(&dir.join("v0-consensus.json")),
        "--network-key",
        p(&dir.join("v0-network.json")),
    ]);
    assert!(out.contains("role            validator 0 (v0)"), "{out}");
    for file in ["config.toml", "genesis.json", "consensus_key.json", "network_key.json", "data"] {
        assert!(home.join(file).exists(), "{file} missing");
    }
    let mode =
        std::fs::metadata(home.join("consensus_key.json")).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let error = fails(&["init", "--home", p(&home), "--genesis", p(&genesis)]);
    assert!(error.contains("already initialised"), "{error}");

    // A node whose key is not in the set is a full node.
    let full = dir.join("home-full");
    let out = ok(&["init", "--home", p(&full), "--genesis", p(&genesis)]);
    assert!(out.contains("role            full node"), "{out}");

    // A validator key with another validator's network key is refused, naming both.
    let error = fails(&[
        "init",
        "--home",
        p(&dir.join("home-mixed")),
        "--genesis",
        p(&genesis),
        "--consensus-key",
        p(&dir.join("v0-consensus.json")),
        "--network-key",
        p(&dir.join("v1-network.json")),
    ]);
    assert!(error.contains("validators[0].peer_id is"), "{error}");
}
