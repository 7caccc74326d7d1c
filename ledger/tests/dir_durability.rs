//! A store's directory survives a power cut: the name of every directory the node creates for
//! its databases (`data/`, `safety/`, and any missing parent) is synced into the directory that
//! holds it before the store is used. Seen with `strace -y`: after the `mkdir` of each directory,
//! an `fsync` of its parent. (RocksDB creates a missing directory itself but syncs only what is
//! inside; a power cut after `tetrad init` could then take a validator's whole `safety/` away.)
//!
//! Needs `strace` (scripts/setup.sh installs it).

use std::path::Path;
use std::process::Command;

use tetrad_ledger::Store;
use tetrad_ledger::safety_store::SafetyStore;
use tetrad_ledger::scratch::ScratchDir;
use tetrad_ledger::testkit::TestChain;

const CHILD_HOME_ENV: &str = "TETRAD_DIR_DURABILITY_HOME";

/// Run in a child process under strace by the test below: opens both stores in a fresh home.
#[test]
#[ignore = "the child of opening_stores_syncs_the_names_of_their_directories"]
fn child_opens_both_stores() {
    let Ok(home) = std::env::var(CHILD_HOME_ENV) else {
        panic!("{CHILD_HOME_ENV} is not set: this runs only as the child of its test");
    };
    let home = Path::new(&home);
    let chain = TestChain::new(4, 4, 1_000);
    Store::open_or_init(&home.join("data"), &chain.genesis).expect("store");
    SafetyStore::open(&home.join("nested").join("safety")).expect("safety store");
}

/// The lines of an `strace -y` trace that create `dir` (mkdir or mkdirat, succeeded).
fn created_at(lines: &[&str], dir: &str) -> Option<usize> {
    let quoted = format!("\"{dir}\"");
    lines
        .iter()
        .position(|line| line.contains("mkdir") && line.contains(&quoted) && line.trim_end().ends_with("= 0"))
}

fn synced_after(lines: &[&str], from: usize, dir: &str) -> bool {
    let shown = format!("<{dir}>)");
    lines[from..]
        .iter()
        .any(|line| line.contains("fsync(") && line.contains(&shown) && line.trim_end().ends_with("= 0"))
}

#[test]
fn opening_stores_syncs_the_names_of_their_directories() {
    let strace = Command::new("strace").arg("-V").output();
    assert!(
        strace.is_ok_and(|output| output.status.success()),
        "strace is missing: scripts/setup.sh installs it (apt-get install strace)"
    );
    let scratch = ScratchDir::new("dir-durability").expect("scratch");
    let home = scratch.join("home");
    std::fs::create_dir(&home).expect("home");
    let home = home.canonicalize().expect("canonical home");
    let trace = scratch.join("trace");
    let exe = std::env::current_exe().expect("test binary");
    let status = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=mkdir,mkdirat,fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(&exe)
        .args(["child_opens_both_stores", "--exact", "--include-ignored", "--test-threads=1"])
        .env(CHILD_HOME_ENV, &home)
        .status()
        .expect("strace runs");
    assert!(status.success(), "the child failed: {status}");
    let text = std::fs::read_to_string(&trace).expect("trace");
    let lines: Vec<&str> = text.lines().collect();
    let home = home.to_str().expect("utf-8 path");
    for (dir, parent) in [
        (format!("{home}/data"), home.to_string()),
        (format!("{home}/nested"), home.to_string()),
        (format!("{home}/nested/safety"), format!("{home}/nested")),
    ] {
        let Some(at) = created_at(&lines, &dir) else {
            panic!("no mkdir of {dir} in the trace:\n{text}");
        };
        assert!(
            synced_after(&lines, at, &parent),
            "{dir} was created but {parent} was never synced after it: a power cut can take the \
             directory away\n{text}"
        );
    }
}
