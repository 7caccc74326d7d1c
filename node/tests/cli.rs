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

#[test]
fn init_uses_keys_made_in_the_home_in_place() {
    // What an operator does in a container's volume: keys first (their public halves go into
    // the genesis), then init in the same directory.
    let dir = ScratchDir::new("cli-init-in-place").expect("scratch");
    let genesis = build_genesis(&dir);
    let home = dir.join("home");
    std::fs::create_dir(&home).expect("home");
    let consensus = std::fs::read(dir.join("v1-consensus.json")).expect("key");
    let network = std::fs::read(dir.join("v1-network.json")).expect("key");
    // Copies keep the key files' mode 0600.
    std::fs::copy(dir.join("v1-consensus.json"), home.join("consensus_key.json")).expect("copy");
    std::fs::copy(dir.join("v1-network.json"), home.join("network_key.json")).expect("copy");
    let out = ok(&["init", "--home", p(&home), "--genesis", p(&genesis)]);
    assert!(out.contains("role            validator 1 (v1)"), "{out}");
    assert_eq!(std::fs::read(home.join("consensus_key.json")).expect("key"), consensus, "the key is kept");
    assert_eq!(std::fs::read(home.join("network_key.json")).expect("key"), network);
    // A different key given for a home that already has one is refused (never overwritten).
    let other = dir.join("other");
    std::fs::create_dir(&other).expect("dir");
    std::fs::copy(dir.join("v1-consensus.json"), other.join("consensus_key.json")).expect("copy");
    let error = fails(&[
        "init",
        "--home",
        p(&other),
        "--genesis",
        p(&genesis),
        "--consensus-key",
        p(&dir.join("v0-consensus.json")),
        "--network-key",
        p(&dir.join("v0-network.json")),
    ]);
    assert!(error.contains("consensus_key.json"), "{error}");
    assert!(!other.join("network_key.json").exists(), "a refused init writes nothing");
    assert_eq!(std::fs::read(other.join("consensus_key.json")).expect("key"), consensus);
}

#[test]
fn testnet_with_hosts_writes_their_addresses_full_nodes_and_a_compose_file() {
    let dir = ScratchDir::new("cli-testnet-hosts").expect("scratch");
    let net = dir.join("net");
    let out = ok(&[
        "testnet",
        "--dir",
        p(&net),
        "--validators",
        "4",
        "--accounts",
        "2",
        "--hosts",
        "172.28.5.10,172.28.5.11,172.28.5.12,172.28.5.13,172.28.5.20",
        "--compose",
        "--base-port",
        "27000",
        "--image",
        "tetrad:test",
    ]);
    assert!(out.contains("created a 4-validator testnet with 1 full node"), "{out}");
    let genesis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(net.join("genesis.json")).expect("genesis"))
            .expect("json");
    let addresses: Vec<&str> = genesis["validators"]
        .as_array()
        .expect("validators")
        .iter()
        .map(|validator| validator["p2p_address"].as_str().expect("address"))
        .collect();
    assert_eq!(
        addresses,
        [
            "/ip4/172.28.5.10/tcp/26000",
            "/ip4/172.28.5.11/tcp/26000",
            "/ip4/172.28.5.12/tcp/26000",
            "/ip4/172.28.5.13/tcp/26000"
        ]
    );
    let config = std::fs::read_to_string(net.join("full0/config.toml")).expect("full node config");
    assert!(config.contains("p2p_listen = \"/ip4/0.0.0.0/tcp/26000\""), "{config}");
    assert!(config.contains("rpc_listen = \"0.0.0.0:8545\""), "{config}");
    // The full node's home is a full node's: its key is in no validator slot.
    let out = ok(&["genesis", "validate", p(&net.join("full0/genesis.json"))]);
    assert!(out.contains("valid"), "{out}");
    let testnet: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(net.join("testnet.json")).expect("testnet"))
            .expect("json");
    assert_eq!(testnet["nodes"][4]["full_node"], true);
    assert_eq!(testnet["nodes"][4]["rpc_url"], "http://127.0.0.1:27009");
    let compose = std::fs::read_to_string(net.join("compose.yaml")).expect("compose.yaml");
    for expected in [
        "ipv4_address: 172.28.5.13",
        "ipv4_address: 172.28.5.20",
        "\"127.0.0.1:27001:8545\"",
        "\"127.0.0.1:27009:8545\"",
        "- subnet: 172.28.5.0/24",
        "image: \"tetrad:test\"",
        "- v3:/var/lib/tetrad",
        "- ./full0:/seed/full0:ro",
        "condition: service_completed_successfully",
    ] {
        assert!(compose.contains(expected), "compose.yaml lacks {expected:?}:\n{compose}");
    }

    // Addresses that a compose network cannot give are refused before anything is written.
    let refused = dir.join("refused");
    let error = fails(&[
        "testnet",
        "--dir",
        p(&refused),
        "--hosts",
        "172.28.5.1,172.28.5.2,172.28.5.3,172.28.5.4",
        "--compose",
    ]);
    assert!(error.contains("172.28.5.1 is not a container address of 172.28.5.0/24"), "{error}");
    assert!(!refused.exists(), "a refused testnet leaves no directory");
    let error = fails(&[
        "testnet",
        "--dir",
        p(&refused),
        "--hosts",
        "10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5",
        "--compose",
        "--subnet",
        "10.0.0.5/24",
    ]);
    assert!(error.contains("host bits are set (the network is 10.0.0.0/24)"), "{error}");
    let error = fails(&[
        "testnet",
        "--dir",
        p(&refused),
        "--hosts",
        "10.0.0.2,10.0.0.3,10.0.0.4,10.0.1.5",
        "--compose",
        "--subnet",
        "10.0.0.0/24",
    ]);
    assert!(error.contains("10.0.1.5 is not a container address of 10.0.0.0/24"), "{error}");
    let error = fails(&["testnet", "--dir", p(&refused), "--hosts", "10.0.0.2,10.0.0.3"]);
    assert!(error.contains("--hosts names 2 addresses for 4 validators"), "{error}");
    let error = fails(&["testnet", "--dir", p(&refused), "--hosts", "10.0.0.2,10.0.0.3,10.0.0.2,10.0.0.5"]);
    assert!(error.contains("10.0.0.2 is given twice"), "{error}");
    assert!(!refused.exists());
}

#[test]
fn health_without_a_node_fails_naming_the_url() {
    let error = fails(&["health", "--rpc", "http://127.0.0.1:9", "--timeout-ms", "2000"]);
    assert!(error.contains("http://127.0.0.1:9/health"), "{error}");
    let dir = ScratchDir::new("cli-health").expect("scratch");
    let error = fails(&["health", "--home", p(&dir.join("none"))]);
    assert!(error.contains("config.toml"), "{error}");
}
