//! A validator's safety records (`safety/`) against operator mistakes, on a real network:
//! restarts after a clean stop and after a crash start normally; a missing, emptied or older
//! `safety/` beside a `data/` that shows what the validator signed is refused with a message
//! that says what to do; the documented flag starts anyway and keeps the validator silent until
//! the network is past every height it might have signed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Cluster, keep_busy, signs_soon, tail};

const FLAG: &str = "--accept-double-sign-risk";

fn create() -> Cluster {
    Cluster::create_with("safety", 4, 4, &["--checkpoint-interval", "4", "--watermark-window", "8"])
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Starts `node` and expects it to refuse: it exits with an error whose log holds every one of
/// `expected`.
fn assert_refused(cluster: &mut Cluster, node: usize, expected: &[&str]) {
    let before = cluster.log(node).len();
    cluster.start(node);
    let status = cluster.wait_exit(node, Duration::from_secs(30)).unwrap_or_else(|| {
        panic!("v{node} started although it must refuse; log:\n{}", tail(&cluster.log(node)))
    });
    assert!(!status.success(), "v{node} exited with {status}");
    let log = cluster.log(node)[before..].to_string();
    for text in expected {
        assert!(log.contains(text), "the refusal does not say {text:?}:\n{log}");
    }
}

/// Starts `node` and expects it to run (it is up and still running a moment later).
fn assert_runs(cluster: &mut Cluster, node: usize, extra: &[&str]) {
    cluster.start_with(node, extra);
    cluster.wait_up(node, Duration::from_secs(30));
    assert!(
        cluster.wait_exit(node, Duration::from_secs(2)).is_none(),
        "v{node} stopped after starting; log:\n{}",
        tail(&cluster.log(node))
    );
}

#[test]
fn a_validator_refuses_missing_emptied_or_older_safety_records() {
    let mut cluster = create();
    cluster.start_all();
    let (stop, load) = keep_busy(&cluster);
    let home = cluster.home(1);
    let safety = home.join("safety");
    let from = cluster.height(0).expect("height");
    assert!(signs_soon(&cluster, 1, from), "v1 does not sign; log:\n{}", tail(&cluster.log(1)));

    // Honest restarts: after a clean stop, and after a crash.
    cluster.stop(1);
    assert_runs(&mut cluster, 1, &[]);
    cluster.kill9(1);
    assert_runs(&mut cluster, 1, &[]);

    // A backup of safety/, taken while the node is stopped; then the validator signs more.
    cluster.stop(1);
    let backup = cluster.dir.join("safety-backup");
    copy_dir(&safety, &backup);
    assert_runs(&mut cluster, 1, &[]);
    let from = cluster.height(0).expect("height");
    assert!(signs_soon(&cluster, 1, from), "v1 does not sign; log:\n{}", tail(&cluster.log(1)));
    // The chain stands still while v1 is down (so that it catches up at once when it is back).
    drop(stop);
    let _ = load.join();
    cluster.stop(1);

    // The dangerous restore: the old safety/ beside the newer data/.
    let newest = cluster.dir.join("safety-newest");
    std::fs::rename(&safety, &newest).expect("move");
    copy_dir(&backup, &safety);
    assert_refused(&mut cluster, 1, &["older than", FLAG]);
    // Deleted, and emptied.
    std::fs::remove_dir_all(&safety).expect("remove");
    assert_refused(&mut cluster, 1, &["missing", FLAG]);
    std::fs::create_dir(&safety).expect("create");
    assert_refused(&mut cluster, 1, &["empty", FLAG]);

    // The newest records back: it starts and signs.
    std::fs::remove_dir_all(&safety).expect("remove");
    std::fs::rename(&newest, &safety).expect("move back");
    assert_runs(&mut cluster, 1, &[]);
    let (stop, load) = keep_busy(&cluster);
    let from = cluster.height(0).expect("height");
    assert!(signs_soon(&cluster, 1, from), "v1 does not sign; log:\n{}", tail(&cluster.log(1)));

    // The operator accepts the risk of the old backup: the node starts, stays silent until the
    // network is past what it might have signed, then signs again.
    drop(stop);
    let _ = load.join();
    cluster.stop(1);
    std::fs::remove_dir_all(&safety).expect("remove");
    copy_dir(&backup, &safety);
    assert_runs(&mut cluster, 1, &[FLAG]);
    let target = cluster.height(0).expect("height");
    // A thousand or more heights to catch up: generous for a machine busy with other tests.
    cluster.wait_height(1, target, Duration::from_secs(180));
    let (stop, load) = keep_busy(&cluster);
    let log = cluster.log(1);
    assert!(log.contains("silent"), "no word of the safety margin:\n{}", tail(&log));
    let from = cluster.height(0).expect("height");
    assert!(
        signs_soon(&cluster, 1, from),
        "v1 does not sign after the margin; log:\n{}",
        tail(&cluster.log(1))
    );
    drop(stop);
    let _ = load.join();
}
