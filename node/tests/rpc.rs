//! The RPC of a real 4-validator network: every JSON-RPC method and URL, the table of bad
//! inputs with their codes, the metrics scrape, the CLI clients, and the README's curl session
//! executed verbatim.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, TETRAD, path_str};
use serde_json::{Value, json};
use tetrad_ledger::tx::{Tx, TxBody, TxKind, chain_tag};

fn rpc_call(cluster: &Cluster, method: &str, params: Value) -> Value {
    let (status, body) =
        cluster.post(0, "/", &json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}));
    assert_eq!(status, 200, "{method}: {body}");
    assert_eq!(body["id"], 7);
    body
}

fn result(cluster: &Cluster, method: &str, params: Value) -> Value {
    let body = rpc_call(cluster, method, params);
    assert!(body.get("error").is_none(), "{method}: {body}");
    body["result"].clone()
}

fn error_code(body: &Value) -> i64 {
    body["error"]["code"].as_i64().unwrap_or_else(|| panic!("no error code in {body}"))
}

/// A network with a few committed blocks (enough for a stable checkpoint at height 16), and the
/// height of the third transfer (a block in the middle of the chain). When the chain goes idle,
/// the primary fills up to the next checkpoint boundary with empty blocks (after 150 ms), so a
/// slow round trip between two transfers may put empty blocks between them: heights are read,
/// not assumed.
fn network() -> (Cluster, u64) {
    let mut cluster = Cluster::create("rpc", 4, 4);
    cluster.start_all();
    let key = cluster.account_key(0);
    let to = cluster.account_key(1).public_key();
    // One transaction per block: each waits for its commit.
    let mut heights = Vec::new();
    for nonce in 0..17 {
        let tx = cluster.transfer(&key, nonce, to, 10);
        let (status, body) =
            cluster.post(0, "/txs?wait=true&timeout_ms=20000", &serde_json::to_value(&tx).expect("json"));
        assert_eq!(status, 200, "{body}");
        heights.push(body["height"].as_u64().expect("height"));
    }
    // The last transfer is final once the idle chain has filled up to the next boundary.
    let last = heights[16];
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.get(0, "/checkpoints/latest").1["height"].as_u64().is_none_or(|at| at < last) {
        assert!(Instant::now() < deadline, "no stable checkpoint covers height {last}");
        std::thread::sleep(Duration::from_millis(200));
    }
    (cluster, heights[2])
}

#[test]
fn rpc_methods_urls_errors_metrics_and_clients() {
    let (cluster, third) = network();
    happy_paths(&cluster, third);
    bad_inputs(&cluster);
    metrics_scrape(&cluster);
    cli_clients(&cluster);
    readme_session(&cluster);
}

fn happy_paths(cluster: &Cluster, third: u64) {
    let status = result(cluster, "get_status", json!({}));
    for field in [
        "chain_id",
        "node",
        "validating",
        "height",
        "view",
        "primary",
        "stable_checkpoint",
        "peers",
        "mempool_txs",
        "syncing",
    ] {
        assert!(status.get(field).is_some(), "status lacks {field}: {status}");
    }
    assert_eq!(status["node"], "v0");
    assert_eq!(status["peers"], 3);
    let height = status["height"].as_u64().expect("height");
    assert!(height >= 17);

    let latest = result(cluster, "get_block", json!({}));
    let at = result(cluster, "get_block", json!({"height": third}));
    let by_hash = result(cluster, "get_block", json!({"hash": at["hash"]}));
    assert_eq!(at, by_hash);
    assert!(latest["header"]["height"].as_u64().expect("height") >= 17);
    assert_eq!(at["certificate"]["statement"]["height"], third);
    let tx_hash = at["txs"][0].as_str().expect("tx").to_string();
    let tx = result(cluster, "get_transaction", json!({"hash": tx_hash}));
    assert_eq!(tx["status"], "committed");
    assert_eq!(tx["height"], third);
    assert_eq!(tx["receipt"]["outcome"]["status"], "success");
    let address = cluster.account_key(1).public_key().to_hex();
    let account = result(cluster, "get_account", json!({"address": address}));
    assert_eq!(account["balance"], 1_000_000_000u64 + 170);
    assert_eq!(account["nonce"], 0);
    // The idle chain stopped at the boundary above the last transfer: that is the latest.
    let checkpoint = result(cluster, "get_checkpoint", json!({}));
    let checkpoint_height = checkpoint["height"].as_u64().expect("height");
    assert!(checkpoint_height >= height && checkpoint_height.is_multiple_of(16), "{checkpoint}");
    assert_eq!(result(cluster, "get_checkpoint", json!({"height": checkpoint_height})), checkpoint);
    assert_eq!(result(cluster, "get_checkpoint", json!({"height": 16}))["height"], 16);
    let validators = result(cluster, "get_validators", json!({}));
    assert_eq!((validators["n"].as_u64(), validators["quorum"].as_u64()), (Some(4), Some(3)));
    assert_eq!(validators["validators"].as_array().expect("list").len(), 4);

    // The same through the URLs.
    let third_block = format!("/blocks/{third}");
    for path in [
        "/status",
        "/health",
        "/blocks/latest",
        third_block.as_str(),
        "/validators",
        "/validators?height=2",
        "/checkpoints/latest",
        "/checkpoints/16",
    ] {
        let (code, body) = cluster.get(0, path);
        assert_eq!(code, 200, "{path}: {body}");
    }
    assert_eq!(cluster.get(0, &format!("/blocks/hash/{}", at["hash"].as_str().expect("hash"))).1, at);
    assert_eq!(cluster.get(0, &format!("/txs/{tx_hash}")).1, tx);
    assert_eq!(cluster.get(0, &format!("/accounts/{address}")).1["balance"], account["balance"]);

    // A batch, with a submission that waits for its commit.
    let key = cluster.account_key(2);
    let submitted = cluster.transfer(&key, 0, cluster.account_key(3).public_key(), 5);
    let (code, batch) = cluster.post(
        0,
        "/",
        &json!([
            {"jsonrpc": "2.0", "id": 1, "method": "submit_transaction", "params": {"tx": submitted, "wait": true, "timeout_ms": 20000}},
            {"jsonrpc": "2.0", "id": 2, "method": "get_status"},
        ]),
    );
    assert_eq!(code, 200);
    let answers = batch.as_array().expect("batch answer");
    assert_eq!(answers.len(), 2);
    let first = answers.iter().find(|answer| answer["id"] == 1).expect("answer 1");
    assert_eq!(first["result"]["status"], "committed", "{first}");
    // Without waiting: pending, then committed.
    let next = cluster.transfer(&key, 1, cluster.account_key(3).public_key(), 5);
    let pending = result(cluster, "submit_transaction", json!({"tx": next}));
    assert_eq!(pending["status"], "pending");
    // Validators of other nodes see it too (gossip) and the block carries it everywhere.
    let hash = pending["hash"].as_str().expect("hash").to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.get(3, &format!("/txs/{hash}")).1["status"] != "committed" {
        assert!(Instant::now() < deadline, "tx not committed on node 3");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A valid-looking transaction with one field changed, as JSON.
fn tampered(cluster: &Cluster, edit: impl FnOnce(&mut Value)) -> Value {
    let tx = cluster.transfer(&cluster.account_key(3), 0, cluster.account_key(0).public_key(), 1);
    let mut value = serde_json::to_value(&tx).expect("json");
    edit(&mut value);
    value
}

fn bad_inputs(cluster: &Cluster) {
    // (what, JSON-RPC body, expected code, message fragment)
    let other_chain = {
        let key = cluster.account_key(3);
        let other = tetrad_consensus::Digest::of(b"another chain");
        let body = TxBody {
            chain: chain_tag(&other),
            from: key.public_key(),
            nonce: 0,
            kind: TxKind::Transfer { to: cluster.account_key(0).public_key(), amount: 1 },
        };
        serde_json::to_value(Tx::sign(body, &key.secret, &other)).expect("json")
    };
    let spent = cluster.transfer(&cluster.account_key(0), 0, cluster.account_key(1).public_key(), 10);
    let far = cluster.transfer(&cluster.account_key(3), 5000, cluster.account_key(0).public_key(), 1);
    let zero = cluster.transfer(&cluster.account_key(3), 0, cluster.account_key(0).public_key(), 0);
    let from_nobody = {
        let key = tetrad_consensus::SecretKey::from_seed([0x3c; 32]);
        let body = TxBody {
            chain: chain_tag(&cluster.genesis_hash),
            from: key.public_key(),
            nonce: 0,
            kind: TxKind::Transfer { to: cluster.account_key(0).public_key(), amount: 1 },
        };
        serde_json::to_value(Tx::sign(body, &key, &cluster.genesis_hash)).expect("json")
    };
    let call =
        |method: &str, params: Value| json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let cases: Vec<(&str, Value, i64, &str)> = vec![
        ("wrong param type", call("get_block", json!({"height": "ten"})), -32602, "height"),
        ("unknown method", call("get_everything", json!({})), -32601, "get_everything"),
        ("bad hex", call("get_transaction", json!({"hash": "zz".repeat(32)})), -32602, "hash"),
        (
            "wrong-length key",
            call("get_account", json!({"address": "abcd"})),
            -32602,
            "expected 64 hex digits, found 4",
        ),
        (
            "bad signature",
            call("submit_transaction", json!({"tx": tampered(cluster, |tx| tx["nonce"] = 1.into())})),
            -32001,
            "signature",
        ),
        ("another chain's tx", call("submit_transaction", json!({"tx": other_chain})), -32002, "chain"),
        ("replayed tx", call("submit_transaction", json!({"tx": spent})), -32003, "nonce 0 was already used"),
        ("nonce too far ahead", call("submit_transaction", json!({"tx": far})), -32004, "ahead"),
        ("zero amount", call("submit_transaction", json!({"tx": zero})), -32016, "zero"),
        (
            "transfer from no account",
            call("submit_transaction", json!({"tx": from_nobody})),
            -32017,
            "has no account",
        ),
        ("unknown height", call("get_block", json!({"height": 999_999})), -32010, "999999"),
        ("unknown tx", call("get_transaction", json!({"hash": "ab".repeat(32)})), -32011, ""),
    ];
    for (what, body, code, fragment) in cases {
        let (status, answer) = cluster.post(0, "/", &body);
        assert_eq!(status, 200, "{what}: {answer}");
        assert_eq!(error_code(&answer), code, "{what}: {answer}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains(fragment), "{what}: {message:?} lacks {fragment:?}");
    }
    // An amount that overflows u64 (sent as text: JSON numbers here are u64 at most).
    let marker = tampered(cluster, |tx| tx["kind"]["amount"] = json!(123_454_321u64));
    let text = call("submit_transaction", json!({"tx": marker}))
        .to_string()
        .replace("123454321", "18446744073709551616");
    let response = common::http()
        .post(format!("{}/", cluster.rpc(0)))
        .header("content-type", "application/json")
        .send(text);
    let answer: Value =
        serde_json::from_str(&response.expect("answer").body_mut().read_to_string().expect("body"))
            .expect("json");
    assert_eq!(error_code(&answer), -32602, "{answer}");
    let message = answer["error"]["message"].as_str().expect("message");
    assert!(message.contains("tx.kind") && message.contains("expected u64"), "{answer}");
    // Malformed JSON, over HTTP.
    let response = common::http()
        .post(format!("{}/", cluster.rpc(0)))
        .header("content-type", "application/json")
        .send("{\"jsonrpc\": ");
    let mut response = response.expect("answer");
    let answer: Value =
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(error_code(&answer), -32700);
    // An oversized body: 413 with a JSON error. (curl, like most clients, sends large bodies
    // with `Expect: 100-continue`, so it reads the early answer instead of a broken pipe.)
    let big =
        json!({"jsonrpc": "2.0", "id": 1, "method": "get_status", "params": {"pad": "x".repeat(2 << 20)}});
    let body_file = cluster.dir.join("big.json");
    std::fs::write(&body_file, big.to_string()).expect("write body");
    let output = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", path_str(&body_file)))
        .arg(format!("{}/", cluster.rpc(0)))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, status) = text.rsplit_once('\n').expect("status line");
    assert_eq!(status, "413", "{text}");
    let answer: Value = serde_json::from_str(body).expect("json error body");
    assert_eq!(error_code(&answer), -32020);
    // GET URLs: 400 for malformed input, 404 for unknown objects, both with a JSON error.
    for (path, status, code) in [
        ("/blocks/ten", 400, -32602),
        ("/txs/1234", 400, -32602),
        ("/accounts/nothex", 400, -32602),
        ("/blocks/999999", 404, -32010),
        (&format!("/txs/{}", "cd".repeat(32)), 404, -32011),
        (&format!("/accounts/{}", "ef".repeat(32)), 404, -32012),
        ("/checkpoints/3", 404, -32013),
        ("/no/such/url", 404, -32601),
    ] {
        let (got, body) = cluster.get(0, path);
        assert_eq!((got, error_code(&body)), (status, code), "{path}: {body}");
    }
    // A submission refused over POST /txs.
    let (status, body) = cluster.post(0, "/txs", &serde_json::to_value(&spent).expect("json"));
    assert_eq!((status, error_code(&body)), (400, -32003), "{body}");
}

fn metrics_scrape(cluster: &Cluster) {
    let url = format!("{}/metrics", cluster.rpc(0));
    let mut response = common::http().get(&url).call().expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.body_mut().read_to_string().expect("body");
    for metric in [
        "tetrad_height ",
        "tetrad_view ",
        "tetrad_view_changes_total",
        "tetrad_committed_txs_total ",
        "tetrad_batch_txs_count ",
        "tetrad_mempool_txs ",
        "tetrad_peers ",
        "tetrad_storage_write_seconds_count ",
        "tetrad_rpc_requests_total{method=\"get_status\",outcome=\"ok\"}",
        "tetrad_rpc_requests_total{method=\"get_block\",outcome=\"unknown_block\"}",
        "tetrad_messages_dropped_total{reason=",
    ] {
        assert!(text.contains(metric), "metrics lack {metric}:\n{text}");
    }
    // Every sample line parses as `name{labels} value`.
    for line in text.lines().filter(|line| !line.starts_with('#') && !line.is_empty()) {
        let value = line.rsplit(' ').next().expect("value");
        assert!(value.parse::<f64>().is_ok(), "bad sample: {line}");
    }
}

fn tetrad(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(TETRAD).args(args).output().expect("run tetrad");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn cli_clients(cluster: &Cluster) {
    let rpc = cluster.rpc(1);
    let net = cluster.dir.join("net");
    let genesis = net.join("genesis.json");
    let key = net.join("accounts/account-2.json");
    let to = net.join("accounts/account-0.json");
    let (ok, out, err) = tetrad(&[
        "tx",
        "transfer",
        "--key",
        path_str(&key),
        "--to",
        path_str(&to),
        "--amount",
        "3",
        "--genesis",
        path_str(&genesis),
        "--rpc",
        &rpc,
        "--wait",
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("committed at height "), "{out}");
    assert!(
        out.contains("proven final by the checkpoint at height")
            && out.contains("followed from the genesis file"),
        "{out}"
    );
    for args in [
        vec!["query", "status"],
        vec!["query", "block"],
        vec!["query", "block", "2"],
        vec!["query", "account", path_str(&to)],
        vec!["query", "checkpoint"],
        vec!["query", "validators"],
    ] {
        let mut args = args.clone();
        args.extend(["--rpc", &rpc]);
        let (ok, out, err) = tetrad(&args);
        assert!(ok, "{args:?}: {err}");
        assert!(!out.is_empty());
        args.push("--json");
        let (ok, out, err) = tetrad(&args);
        assert!(ok, "{args:?}: {err}");
        serde_json::from_str::<Value>(&out)
            .unwrap_or_else(|error| panic!("{args:?}: not JSON ({error}): {out}"));
    }
    let (ok, _, err) = tetrad(&["query", "tx", &"ab".repeat(32), "--rpc", &rpc]);
    assert!(!ok && err.contains("404") && err.contains("-32011"), "{err}");
    // A certificate that does not verify against the genesis validators is refused: point the
    // client at a genesis of another chain with other validators.
    let other = cluster.dir.join("other");
    let (ok, _, err) = tetrad(&[
        "testnet",
        "--validators",
        "4",
        "--accounts",
        "1",
        "--dir",
        path_str(&other),
        "--base-port",
        "40000",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = tetrad(&[
        "tx",
        "transfer",
        "--key",
        path_str(&key),
        "--to",
        path_str(&to),
        "--amount",
        "1",
        "--genesis",
        path_str(&other.join("genesis.json")),
        "--rpc",
        &rpc,
        "--wait",
    ]);
    assert!(!ok, "a transfer signed for another chain went through");
    assert!(err.contains("-32002"), "{err}");
}

/// Runs the README's curl session (between its markers) verbatim against this network.
fn readme_session(cluster: &Cluster) {
    let stdout = common::run_readme_block(cluster, "readme-session");
    assert!(stdout.contains("\"chain_id\":\"tetrad-local\""), "{stdout}");
    assert!(stdout.contains("committed at height "), "{stdout}");
    assert!(stdout.contains("event: block"), "{stdout}");
    assert!(stdout.contains("\"balance\":"), "{stdout}");
}
