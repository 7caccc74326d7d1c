//! Handler-level tests: each PBFT rule, with the exact actions it must produce.

use std::sync::Arc;

use super::*;
use crate::certificate::{Certificate, Signed};
use crate::messages::{Batch, Checkpoint, Commit, PrePrepare, Prepare};
use crate::safety::{KeyValueOp, SafetyRecord, SafetyWrite, restore};
use crate::types::{Digest, Height, ValidatorIndex, View};
use crate::validators::{ValidatorSchedule, ValidatorSet};
use crate::view_messages::{NewView, PreparedCertificate, ViewChange, reproposals};
use crate::wire::{Message, Status, VerifiedBlock, verify};

const N: u16 = 4;
const WINDOW: u64 = 8;
const K: u64 = 2;
const T: u64 = 1000;

struct Fixture {
    keys: Vec<SecretKey>,
    schedule: ValidatorSchedule,
}

fn fixture() -> Fixture {
    let keys: Vec<SecretKey> = (0..N).map(|i| SecretKey::from_seed([i as u8 + 1; 32])).collect();
    let set =
        ValidatorSet::new(Digest::of(b"handler tests"), keys.iter().map(SecretKey::public_key).collect())
            .expect("valid set");
    Fixture { keys, schedule: ValidatorSchedule::new(set) }
}

fn config() -> ReplicaConfig {
    ReplicaConfig::new(K, WINDOW, T, 8 * T)
}

impl Fixture {
    fn set(&self) -> &ValidatorSet {
        self.schedule.at(Height(1))
    }

    fn replica(&self, me: u16) -> Replica {
        let mut replica = Replica::new(
            config(),
            ValidatorIndex(me),
            vec![(Height(0), self.keys[usize::from(me)].clone())],
            Arc::new(self.schedule.clone()),
            Height(0),
            Default::default(),
        );
        let _ = replica.start(0);
        let _ = replica.handle(0, Input::WallClock { unix_ms: 5 });
        replica
    }

    fn sign<T: crate::certificate::Statement>(&self, signer: u16, body: T) -> Signed<T> {
        Signed::sign(body, ValidatorIndex(signer), &self.keys[usize::from(signer)], self.set())
    }

    /// Delivers `message` from `from` through real verification.
    fn deliver(&self, replica: &mut Replica, from: u16, message: Message) -> Actions {
        let verified = verify(message, &self.schedule, WINDOW).expect("verifies");
        replica.handle(10, Input::Message { from: ValidatorIndex(from), message: verified })
    }

    fn pre_prepare(&self, view: u64, height: u64, payload: &[u8]) -> (Message, Digest, Arc<Batch>) {
        let primary = self.set().primary(View(view));
        let batch = Arc::new(Batch {
            view: View(view),
            proposer: primary,
            timestamp_ms: 5,
            payload: payload.to_vec(),
        });
        let digest = batch.digest();
        let pre_prepare =
            self.sign(primary.0, PrePrepare { view: View(view), height: Height(height), digest });
        (Message::PrePrepare { pre_prepare, batch: batch.clone() }, digest, batch)
    }
}

fn prepare_message(fixture: &Fixture, signer: u16, height: u64, digest: Digest) -> Message {
    Message::Prepare(fixture.sign(signer, Prepare { view: View(0), height: Height(height), digest }))
}

fn commit_message(fixture: &Fixture, signer: u16, height: u64, digest: Digest) -> Message {
    Message::Commit(fixture.sign(signer, Commit { view: View(0), height: Height(height), digest }))
}

fn dropped(replica: &Replica, reason: DropReason) -> u64 {
    replica.counters().dropped.get(&reason).copied().unwrap_or(0)
}

#[test]
fn backup_accepts_a_valid_pre_prepare_and_prepares_after_persisting() {
    let fixture = fixture();
    let mut backup = fixture.replica(1);
    let (message, digest, batch) = fixture.pre_prepare(0, 1, b"tx");
    let Message::PrePrepare { pre_prepare, .. } = message.clone() else { unreachable!() };
    let actions = fixture.deliver(&mut backup, 0, message);
    let prepare = fixture.sign(1, Prepare { view: View(0), height: Height(1), digest });
    assert_eq!(
        actions,
        Actions {
            persist: vec![SafetyWrite::Put(SafetyRecord::Accepted { pre_prepare, batch: Some(batch) })],
            send_after_persist: vec![Outgoing { to: Recipient::All, message: Message::Prepare(prepare) }],
            timers: vec![TimerAction::Set { timer: Timer::ViewChange, at_ms: 10 + T }],
            ..Actions::default()
        }
    );
}

#[test]
fn pre_prepare_rejections() {
    let fixture = fixture();
    let mut backup = fixture.replica(1);
    // From a view that is not the current one.
    let (future, _, _) = fixture.pre_prepare(1, 1, b"tx");
    assert!(fixture.deliver(&mut backup, 1, future).is_empty());
    assert_eq!(dropped(&backup, DropReason::FutureView), 1);
    // Above the high watermark.
    let (outside, _, _) = fixture.pre_prepare(0, WINDOW + 1, b"tx");
    assert!(fixture.deliver(&mut backup, 0, outside).is_empty());
    assert_eq!(dropped(&backup, DropReason::OutsideWindow), 1);
    // A second, different digest for the same (view, height).
    let (first, _, _) = fixture.pre_prepare(0, 1, b"one");
    let (second, _, _) = fixture.pre_prepare(0, 1, b"two");
    assert!(!fixture.deliver(&mut backup, 0, first.clone()).is_empty());
    assert!(fixture.deliver(&mut backup, 0, second).is_empty());
    assert_eq!(dropped(&backup, DropReason::ConflictingPrePrepare), 1);
    assert!(fixture.deliver(&mut backup, 0, first).is_empty());
    assert_eq!(dropped(&backup, DropReason::Duplicate), 1);
    // Signed by a backup: refused by verification before the replica sees it.
    let batch =
        Arc::new(Batch { view: View(0), proposer: ValidatorIndex(2), timestamp_ms: 1, payload: vec![] });
    let forged = fixture.sign(2, PrePrepare { view: View(0), height: Height(2), digest: batch.digest() });
    let result = verify(Message::PrePrepare { pre_prepare: forged, batch }, &fixture.schedule, WINDOW);
    assert!(matches!(result, Err(crate::wire::VerifyError::NotThePrimary { .. })));
    // A batch that does not match the signed digest.
    let (message, _, _) = fixture.pre_prepare(0, 3, b"tx");
    let Message::PrePrepare { pre_prepare, .. } = message else { unreachable!() };
    let other = Arc::new(Batch {
        view: View(0),
        proposer: ValidatorIndex(0),
        timestamp_ms: 5,
        payload: b"other".to_vec(),
    });
    let result = verify(Message::PrePrepare { pre_prepare, batch: other }, &fixture.schedule, WINDOW);
    assert!(matches!(result, Err(crate::wire::VerifyError::DigestMismatch { .. })));
}

#[test]
fn prepared_then_committed_local_then_delivered_with_a_certificate() {
    let fixture = fixture();
    let mut backup = fixture.replica(1);
    let (message, digest, batch) = fixture.pre_prepare(0, 1, b"tx");
    let Message::PrePrepare { pre_prepare, .. } = message.clone() else { unreachable!() };
    let _ = fixture.deliver(&mut backup, 0, message);
    // One more prepare (2f = 2 with its own) makes it prepared: persist the certificate, then commit.
    let actions = fixture.deliver(&mut backup, 2, prepare_message(&fixture, 2, 1, digest));
    let own = fixture.sign(1, Prepare { view: View(0), height: Height(1), digest });
    let other = fixture.sign(2, Prepare { view: View(0), height: Height(1), digest });
    let certificate = crate::view_messages::PreparedCertificate {
        pre_prepare,
        prepares: vec![(ValidatorIndex(1), own.signature), (ValidatorIndex(2), other.signature)],
    };
    assert_eq!(certificate.verify(fixture.set()), Ok(()));
    let commit = fixture.sign(1, Commit { view: View(0), height: Height(1), digest });
    assert_eq!(
        actions,
        Actions {
            persist: vec![SafetyWrite::Put(SafetyRecord::Prepared(certificate))],
            send_after_persist: vec![Outgoing { to: Recipient::All, message: Message::Commit(commit) }],
            ..Actions::default()
        }
    );
    // The primary's prepare is refused (its pre-prepare stands for it).
    assert!(fixture.deliver(&mut backup, 0, prepare_message(&fixture, 0, 1, digest)).is_empty());
    assert_eq!(dropped(&backup, DropReason::NotFromPrimary), 1);
    // Commits: with its own, two more make a quorum of three.
    assert!(fixture.deliver(&mut backup, 0, commit_message(&fixture, 0, 1, digest)).committed.is_empty());
    let actions = fixture.deliver(&mut backup, 3, commit_message(&fixture, 3, 1, digest));
    assert_eq!(actions.committed.len(), 1);
    let committed = &actions.committed[0];
    assert_eq!((committed.height, &committed.batch), (Height(1), &batch));
    assert_eq!(committed.certificate.verify(fixture.set()), Ok(()));
    assert_eq!(committed.certificate.statement, Commit { view: View(0), height: Height(1), digest });
    // Progress with nothing pending stops the view-change timer.
    assert_eq!(actions.timers, vec![TimerAction::Cancel(Timer::ViewChange)]);
    assert_eq!(backup.committed(), Height(1));
}

#[test]
fn delivery_is_in_height_order() {
    let fixture = fixture();
    let mut backup = fixture.replica(1);
    let mut digests = Vec::new();
    for height in 1..=2 {
        let (message, digest, _) = fixture.pre_prepare(0, height, format!("tx{height}").as_bytes());
        let _ = fixture.deliver(&mut backup, 0, message);
        digests.push(digest);
    }
    // Height 2 commits first: nothing is delivered until height 1 is.
    for signer in [0, 2, 3] {
        let actions = fixture.deliver(&mut backup, signer, commit_message(&fixture, signer, 2, digests[1]));
        assert!(actions.committed.is_empty());
    }
    let mut delivered = Vec::new();
    for signer in [0, 2, 3] {
        let actions = fixture.deliver(&mut backup, signer, commit_message(&fixture, signer, 1, digests[0]));
        delivered.extend(actions.committed.iter().map(|c| c.height));
    }
    assert_eq!(delivered, vec![Height(1), Height(2)]);
}

#[test]
fn a_committed_height_whose_batch_never_came_is_fetched_again_at_every_status_tick() {
    let fixture = fixture();
    let mut backup = fixture.replica(1);
    let (_, digest, _) = fixture.pre_prepare(0, 1, b"lost");
    // The pre-prepare is lost; the other three commit.
    let mut asked = 0;
    for signer in [0, 2, 3] {
        let actions = fixture.deliver(&mut backup, signer, commit_message(&fixture, signer, 1, digest));
        asked += actions.send.iter().filter(|out| matches!(out.message, Message::FetchBatch { .. })).count();
    }
    assert_eq!(asked, 1, "asked once when the certificate formed");
    // The answer is lost too: the status tick asks again.
    let actions = backup.handle(10 + T, Input::Timer(Timer::Status));
    assert!(
        actions.send.iter().any(|out| out.to == Recipient::All
            && matches!(out.message, Message::FetchBatch { height: Height(1), digest: d } if d == digest)),
        "{actions:?}"
    );
}

#[test]
fn checkpoint_becomes_stable_with_a_quorum_and_moves_the_window() {
    let fixture = fixture();
    let mut backup = fixture.replica(1);
    let mut digests = Vec::new();
    for height in 1..=K {
        let (message, digest, _) = fixture.pre_prepare(0, height, format!("tx{height}").as_bytes());
        let _ = fixture.deliver(&mut backup, 0, message);
        for signer in [0, 2, 3] {
            let _ = fixture.deliver(&mut backup, signer, commit_message(&fixture, signer, height, digest));
        }
        digests.push(digest);
    }
    let header = Digest::of(b"header 2");
    let root = Digest::of(b"root 2");
    let _ = backup
        .handle(20, Input::Executed { height: Height(1), header_hash: Digest::of(b"h1"), state_root: root });
    let actions =
        backup.handle(20, Input::Executed { height: Height(K), header_hash: header, state_root: root });
    let statement = Checkpoint { height: Height(K), header_hash: header, state_root: root };
    let own = fixture.sign(1, statement.clone());
    assert_eq!(
        actions.send,
        vec![Outgoing { to: Recipient::All, message: Message::Checkpoint(own.clone()) }]
    );
    assert!(
        fixture
            .deliver(&mut backup, 0, Message::Checkpoint(fixture.sign(0, statement.clone())))
            .stable_checkpoints
            .is_empty()
    );
    // A vote for another header does not count towards this one.
    let wrong = Checkpoint { height: Height(K), header_hash: Digest::of(b"fork"), state_root: root };
    assert!(
        fixture
            .deliver(&mut backup, 2, Message::Checkpoint(fixture.sign(2, wrong)))
            .stable_checkpoints
            .is_empty()
    );
    let actions = fixture.deliver(&mut backup, 3, Message::Checkpoint(fixture.sign(3, statement.clone())));
    assert_eq!(actions.stable_checkpoints.len(), 1);
    let certificate = &actions.stable_checkpoints[0];
    assert_eq!(certificate.verify(fixture.set()), Ok(()));
    assert_eq!(certificate.statement, statement);
    assert!(actions.persist.contains(&SafetyWrite::ForgetHeightsUpTo(Height(K))));
    assert_eq!(backup.low_watermark(), Height(K));
    // The window moved: K + WINDOW is now acceptable, and height K is stale.
    let (message, _, _) = fixture.pre_prepare(0, K + WINDOW, b"far");
    assert!(!fixture.deliver(&mut backup, 0, message).is_empty());
    let (stale, _, _) = fixture.pre_prepare(0, K, b"old");
    assert!(fixture.deliver(&mut backup, 0, stale).is_empty());
}

/// Makes `replica` prepare `payload` at height 1 in view 0; returns the digest.
fn prepare_height_one(fixture: &Fixture, replica: &mut Replica, payload: &[u8]) -> Digest {
    let (message, digest, _) = fixture.pre_prepare(0, 1, payload);
    let _ = fixture.deliver(replica, 0, message);
    for signer in [2, 3] {
        if signer != replica.me().0 {
            let _ = fixture.deliver(replica, signer, prepare_message(fixture, signer, 1, digest));
        }
    }
    digest
}

#[test]
fn view_change_on_timeout_carries_the_prepared_certificate() {
    let fixture = fixture();
    let mut backup = fixture.replica(1);
    let digest = prepare_height_one(&fixture, &mut backup, b"tx");
    let actions = backup.handle(10 + T, Input::Timer(Timer::ViewChange));
    assert_eq!(backup.view(), View(1));
    assert!(!backup.view_active());
    let [SafetyWrite::Put(SafetyRecord::ViewChange(view_change))] = actions.persist.as_slice() else {
        panic!("expected one persisted view-change, got {:?}", actions.persist)
    };
    assert_eq!(view_change.body.new_view, View(1));
    assert_eq!(view_change.body.checkpoint, None);
    assert_eq!(view_change.body.prepared.len(), 1);
    assert_eq!(view_change.body.prepared[0].digest(), digest);
    assert_eq!(
        actions.send_after_persist,
        vec![Outgoing { to: Recipient::All, message: Message::ViewChange(view_change.clone()) }]
    );
    assert!(actions.timers.contains(&TimerAction::Set { timer: Timer::ViewChange, at_ms: 10 + T + T }));
    // While changing views, normal-case messages are dropped.
    let (message, _, _) = fixture.pre_prepare(0, 2, b"late");
    assert!(fixture.deliver(&mut backup, 0, message).is_empty());
    assert_eq!(dropped(&backup, DropReason::OldView), 1);
    // Without a quorum asking for view 1, the next timeout asks for view 1 again.
    let actions = backup.handle(10 + 2 * T, Input::Timer(Timer::ViewChange));
    assert_eq!(backup.view(), View(1));
    assert_eq!(
        actions.send,
        vec![Outgoing { to: Recipient::All, message: Message::ViewChange(view_change.clone()) }]
    );
    // Once a quorum asked for view 1 and its primary still sent no new-view, the next timeout
    // moves on to view 2 and doubles the wait.
    for signer in [2, 3] {
        let body = ViewChange { new_view: View(1), checkpoint: None, prepared: vec![] };
        let _ = fixture.deliver(&mut backup, signer, Message::ViewChange(fixture.sign(signer, body)));
    }
    let actions = backup.handle(10 + 3 * T, Input::Timer(Timer::ViewChange));
    assert_eq!(backup.view(), View(2));
    assert!(
        actions.timers.contains(&TimerAction::Set { timer: Timer::ViewChange, at_ms: 10 + 3 * T + 2 * T })
    );
}

#[test]
fn the_wait_for_a_new_view_starts_when_the_quorum_of_view_changes_is_there() {
    let fixture = fixture();
    // Replica 2: view 1's primary is replica 1, so it waits for a new-view.
    let mut backup = fixture.replica(2);
    let _ = prepare_height_one(&fixture, &mut backup, b"tx");
    let _ = backup.handle(10 + T, Input::Timer(Timer::ViewChange));
    assert_eq!(backup.view(), View(1));
    // The others ask for view 1 a moment before this replica's own timer runs out.
    let quorum_at = 10 + 2 * T - 5;
    for signer in [0, 3] {
        let body = ViewChange { new_view: View(1), checkpoint: None, prepared: vec![] };
        let message = verify(Message::ViewChange(fixture.sign(signer, body)), &fixture.schedule, WINDOW)
            .expect("verifies");
        let actions = backup.handle(quorum_at, Input::Message { from: ValidatorIndex(signer), message });
        if signer == 3 {
            assert!(
                actions.timers.contains(&TimerAction::Set { timer: Timer::ViewChange, at_ms: quorum_at + T }),
                "the quorum restarts the timer: {:?}",
                actions.timers
            );
        }
    }
    // The old setting's expiry is stale: view 1's primary still has its whole timeout.
    let actions = backup.handle(10 + 2 * T, Input::Timer(Timer::ViewChange));
    assert_eq!(backup.view(), View(1), "moved past view 1 {} ms after its quorum", 10 + 2 * T - quorum_at);
    assert!(actions.send.is_empty());
    // Without a new-view within the timeout, it moves on.
    let _ = backup.handle(quorum_at + T, Input::Timer(Timer::ViewChange));
    assert_eq!(backup.view(), View(2));
}

#[test]
fn f_plus_one_view_changes_make_a_replica_join() {
    let fixture = fixture();
    let mut backup = fixture.replica(3);
    let body = ViewChange { new_view: View(2), checkpoint: None, prepared: vec![] };
    let actions = fixture.deliver(&mut backup, 0, Message::ViewChange(fixture.sign(0, body.clone())));
    assert!(actions.is_empty());
    let actions = fixture.deliver(&mut backup, 1, Message::ViewChange(fixture.sign(1, body)));
    assert_eq!(backup.view(), View(2));
    assert_eq!(actions.send_after_persist.len(), 1);
}

#[test]
fn new_primary_sends_new_view_and_backups_reprepare() {
    let fixture = fixture();
    // Validator 1 is the primary of view 1. Three replicas prepared "tx" at height 1 in view 0.
    let mut replicas: Vec<Replica> = (0..N).map(|i| fixture.replica(i)).collect();
    let mut view_changes = Vec::new();
    for index in [1usize, 2, 3] {
        let digest = prepare_height_one(&fixture, &mut replicas[index], b"tx");
        let actions = replicas[index].handle(10 + T, Input::Timer(Timer::ViewChange));
        let message = actions.send_after_persist[0].message.clone();
        view_changes.push((index as u16, message, digest));
    }
    let digest = view_changes[0].2;
    let mut primary_actions = Actions::default();
    for (from, message, _) in &view_changes[1..] {
        primary_actions = fixture.deliver(&mut replicas[1], *from, message.clone());
    }
    let Some(Outgoing { message: Message::NewView(new_view), .. }) =
        primary_actions.send_after_persist.first()
    else {
        panic!("primary sends a new-view: {primary_actions:?}")
    };
    assert_eq!(new_view.body.view, View(1));
    assert_eq!(new_view.body.pre_prepares.len(), 1);
    assert_eq!(new_view.body.pre_prepares[0].body.digest, digest);
    assert!(primary_actions.persist.contains(&SafetyWrite::Put(SafetyRecord::View(View(1)))));
    assert!(replicas[1].view_active());
    // A backup (validator 2, which prepared the batch) enters view 1 and re-prepares it.
    let actions = fixture.deliver(&mut replicas[2], 1, Message::NewView(new_view.clone()));
    assert!(replicas[2].view_active());
    assert_eq!(replicas[2].view(), View(1));
    let prepares: Vec<_> =
        actions.send_after_persist.iter().filter(|out| matches!(out.message, Message::Prepare(_))).collect();
    assert_eq!(prepares.len(), 1);
    // Validator 0 (no view-change sent) enters view 1 too; it never saw the batch, so it asks.
    let actions = fixture.deliver(&mut replicas[0], 1, Message::NewView(new_view.clone()));
    assert!(
        actions
            .send
            .iter()
            .any(|out| matches!(out.message, Message::FetchBatch { digest: d, .. } if d == digest))
    );
    // The answer is lost: it asks again at the next status tick, before any commit (its node
    // holds fresh pre-prepares back until the re-proposed batch is here).
    let actions = replicas[0].handle(10 + T, Input::Timer(Timer::Status));
    assert!(
        actions.send.iter().any(|out| out.to == Recipient::All
            && matches!(out.message, Message::FetchBatch { height: Height(1), digest: d } if d == digest)),
        "{actions:?}"
    );
    // A new-view whose re-proposals differ from what the view-changes prescribe is refused.
    let mut forged = new_view.body.clone();
    forged.pre_prepares[0] =
        fixture.sign(1, PrePrepare { view: View(1), height: Height(1), digest: Digest::of(b"substitute") });
    let forged = fixture.sign(1, forged);
    assert!(verify(Message::NewView(forged), &fixture.schedule, WINDOW).is_err());
    // The prescribed set is exactly what `reproposals` computes.
    assert_eq!(
        reproposals(View(1), ValidatorIndex(1), &new_view.body.view_changes),
        vec![(Height(1), digest)]
    );
    let _: &NewView = &new_view.body;
}

#[test]
fn safety_state_survives_a_restart() {
    let fixture = fixture();
    let mut backup = fixture.replica(1);
    let (message, digest, _) = fixture.pre_prepare(0, 1, b"first");
    let actions = fixture.deliver(&mut backup, 0, message);
    // The driver's store: apply the persisted writes as key-value operations.
    let mut store = std::collections::BTreeMap::new();
    for write in &actions.persist {
        for op in write.to_ops() {
            if let KeyValueOp::Put { key, value } = op {
                store.insert(key, value);
            }
        }
    }
    let restored = restore(store.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).expect("restores");
    let mut restarted = Replica::new(
        config(),
        ValidatorIndex(1),
        vec![(Height(0), fixture.keys[1].clone())],
        Arc::new(fixture.schedule.clone()),
        Height(0),
        restored,
    );
    let _ = restarted.start(100);
    // The (equivocating) primary sends another digest for the same (view, height): refused.
    let (second, _, _) = fixture.pre_prepare(0, 1, b"second");
    let actions = fixture.deliver(&mut restarted, 0, second);
    assert!(actions.send_after_persist.is_empty(), "signed a second digest after restart: {actions:?}");
    // The original is still acknowledged by the restored log (a duplicate).
    let (first, again, _) = fixture.pre_prepare(0, 1, b"first");
    assert_eq!(again, digest);
    assert!(fixture.deliver(&mut restarted, 0, first).send_after_persist.is_empty());
}

#[test]
fn commit_certificate_from_votes_of_the_replica_verifies() {
    let fixture = fixture();
    let statement = Commit { view: View(0), height: Height(1), digest: Digest::of(b"x") };
    let votes: Vec<_> = (0..3).map(|i| fixture.sign(i, statement.clone())).collect();
    assert_eq!(Certificate::from_votes(statement, &votes).verify(fixture.set()), Ok(()));
}

#[test]
fn a_single_validator_commits_its_own_proposal_and_checkpoints() {
    let key = SecretKey::from_seed([1; 32]);
    let set = ValidatorSet::new(Digest::of(b"n = 1"), vec![key.public_key()]).expect("valid set");
    let mut replica = Replica::new(
        config(),
        ValidatorIndex(0),
        vec![(Height(0), key)],
        Arc::new(ValidatorSchedule::new(set)),
        Height(0),
        Default::default(),
    );
    let _ = replica.start(0);
    for height in 1..=K {
        assert!(replica.can_propose());
        let actions = replica.handle(5, Input::Propose { payload: vec![height as u8], timestamp_ms: 5 });
        assert_eq!(actions.committed.len(), 1, "height {height} not committed: {}", replica.describe());
        assert_eq!(actions.committed[0].height, Height(height));
        let actions = replica.handle(
            6,
            Input::Executed { height: Height(height), header_hash: Digest::ZERO, state_root: Digest::ZERO },
        );
        if height == K {
            assert_eq!(actions.stable_checkpoints.len(), 1);
        }
    }
    assert_eq!(replica.low_watermark(), Height(K));
}

/// Hole 7: the header copies the batch's proposer, view and time, so a backup refuses a
/// pre-prepare whose batch names another proposer or view, or whose time runs backwards or
/// strays from the backup's own clock.
#[test]
fn backups_refuse_batches_with_wrong_metadata() {
    let fixture = fixture();
    let primary = fixture.set().primary(View(0));
    let signed = |batch: Batch| {
        let batch = Arc::new(batch);
        let pre_prepare =
            fixture.sign(primary.0, PrePrepare { view: View(0), height: Height(1), digest: batch.digest() });
        Message::PrePrepare { pre_prepare, batch }
    };
    let good = Batch { view: View(0), proposer: primary, timestamp_ms: 5, payload: b"tx".to_vec() };
    let cases = [
        (Batch { proposer: ValidatorIndex(2), ..good.clone() }, DropReason::BatchMetadata),
        (Batch { view: View(4), ..good.clone() }, DropReason::BatchMetadata),
        (Batch { timestamp_ms: u64::MAX, ..good.clone() }, DropReason::BatchTimestamp),
        (Batch { timestamp_ms: 5 + TIMESTAMP_SKEW_MAX_MS + 1, ..good.clone() }, DropReason::BatchTimestamp),
    ];
    for (batch, reason) in cases {
        let mut backup = fixture.replica(1);
        let message = signed(batch.clone());
        assert!(fixture.deliver(&mut backup, 0, message).is_empty(), "{batch:?} accepted");
        assert_eq!(dropped(&backup, reason), 1, "{batch:?}");
    }
    // Far behind the backup's clock.
    let mut backup = fixture.replica(1);
    let _ = backup.handle(0, Input::WallClock { unix_ms: 5 + TIMESTAMP_SKEW_MAX_MS + 1 });
    assert!(fixture.deliver(&mut backup, 0, signed(good.clone())).is_empty());
    assert_eq!(dropped(&backup, DropReason::BatchTimestamp), 1);
    // Without a wall clock a backup accepts nothing.
    let mut backup = Replica::new(
        config(),
        ValidatorIndex(1),
        vec![(Height(0), fixture.keys[1].clone())],
        Arc::new(fixture.schedule.clone()),
        Height(0),
        Default::default(),
    );
    let _ = backup.start(0);
    assert!(fixture.deliver(&mut backup, 0, signed(good.clone())).is_empty());
    assert_eq!(dropped(&backup, DropReason::BatchTimestamp), 1);
    // Backwards: height 2 may not be older than the accepted height 1.
    let mut backup = fixture.replica(1);
    let _ = backup.handle(0, Input::WallClock { unix_ms: 100 });
    let first = Arc::new(Batch { timestamp_ms: 100, ..good.clone() });
    let pre_prepare =
        fixture.sign(primary.0, PrePrepare { view: View(0), height: Height(1), digest: first.digest() });
    assert!(!fixture.deliver(&mut backup, 0, Message::PrePrepare { pre_prepare, batch: first }).is_empty());
    let older = Arc::new(Batch { timestamp_ms: 99, payload: b"tx2".to_vec(), ..good.clone() });
    let pre_prepare =
        fixture.sign(primary.0, PrePrepare { view: View(0), height: Height(2), digest: older.digest() });
    assert!(fixture.deliver(&mut backup, 0, Message::PrePrepare { pre_prepare, batch: older }).is_empty());
    assert_eq!(dropped(&backup, DropReason::BatchTimestamp), 1);
    // The good batch is accepted.
    let mut backup = fixture.replica(1);
    assert!(!fixture.deliver(&mut backup, 0, signed(good)).is_empty());
}

/// A primary whose clock is behind an earlier batch proposes the earlier timestamp.
#[test]
fn primary_timestamps_never_run_backwards() {
    let fixture = fixture();
    let mut primary = fixture.replica(0);
    let first = primary.handle(1, Input::Propose { payload: b"a".to_vec(), timestamp_ms: 50 });
    let second = primary.handle(2, Input::Propose { payload: b"b".to_vec(), timestamp_ms: 40 });
    let time = |actions: &Actions| match &actions.send_after_persist[0].message {
        Message::PrePrepare { batch, .. } => batch.timestamp_ms,
        other => panic!("expected a pre-prepare, got {other:?}"),
    };
    assert_eq!((time(&first), time(&second)), (50, 50));
}

/// Hole 1 setup: every validator rotated its key at the checkpoint boundary K (the new keys
/// sign heights above K), and `me` holds a stable checkpoint at K signed by the old keys.
struct Rotated {
    old: Vec<SecretKey>,
    new: Vec<SecretKey>,
    schedule: ValidatorSchedule,
    stable: crate::certificate::CheckpointCertificate,
}

fn rotated_at_k() -> Rotated {
    let fixture = fixture();
    let new: Vec<SecretKey> = (0..N).map(|i| SecretKey::from_seed([i as u8 + 101; 32])).collect();
    let mut schedule = fixture.schedule.clone();
    let set =
        ValidatorSet::new(*fixture.set().genesis_hash(), new.iter().map(SecretKey::public_key).collect())
            .expect("valid set");
    schedule.push(Height(K + 1), set);
    let statement =
        Checkpoint { height: Height(K), header_hash: Digest::of(b"h"), state_root: Digest::of(b"r") };
    let votes: Vec<_> = (0..N).map(|signer| fixture.sign(signer, statement.clone())).collect();
    let stable = Certificate::from_votes(statement, &votes);
    Rotated { old: fixture.keys, new, schedule, stable }
}

impl Rotated {
    fn replica(&self, me: u16) -> Replica {
        let restored = crate::safety::Restored { stable: Some(self.stable.clone()), ..Default::default() };
        let mut replica = Replica::new(
            config(),
            ValidatorIndex(me),
            vec![(Height(K + 1), self.new[usize::from(me)].clone())],
            Arc::new(self.schedule.clone()),
            Height(K),
            restored,
        );
        let _ = replica.start(0);
        let _ = replica.handle(0, Input::WallClock { unix_ms: 5 });
        replica
    }

    /// What a holder of every retired (genesis) key can forge: view-changes for `view` that
    /// claim no checkpoint (so they verify under the genesis keys), and the new-view of `view`
    /// built from them, which re-proposes nothing.
    fn forged(&self, view: u64) -> (Vec<Signed<ViewChange>>, Signed<NewView>) {
        let set = self.schedule.at(Height(1)).clone();
        let view_changes: Vec<Signed<ViewChange>> = (0..N)
            .map(|signer| {
                let body = ViewChange { new_view: View(view), checkpoint: None, prepared: vec![] };
                Signed::sign(body, ValidatorIndex(signer), &self.old[usize::from(signer)], &set)
            })
            .collect();
        let primary = set.primary(View(view));
        let body = NewView { view: View(view), view_changes: view_changes.clone(), pre_prepares: vec![] };
        let new_view = Signed::sign(body, primary, &self.old[primary.as_usize()], &set);
        (view_changes, new_view)
    }

    fn deliver(&self, replica: &mut Replica, from: u16, message: Message) -> Actions {
        let verified = verify(message, &self.schedule, WINDOW).expect("verifies");
        replica.handle(10, Input::Message { from: ValidatorIndex(from), message: verified })
    }
}

/// Hole 1: retired keys sign view-changes and new-views that verify (under the epoch their
/// claimed checkpoint names). A replica past the boundary must refuse them: a backup must not
/// enter the forged view, and the new primary must neither install "its own" forged new-view
/// nor build one from forged view-changes (either would let it propose afresh at heights
/// another honest replica may have committed).
#[test]
fn retired_keys_cannot_move_a_replica_past_the_boundary() {
    let rotated = rotated_at_k();
    let (view_changes, new_view) = rotated.forged(1);
    // A backup does not install the forged new-view.
    let mut backup = rotated.replica(2);
    let _ = rotated.deliver(&mut backup, 1, Message::NewView(new_view.clone()));
    assert_eq!((backup.view(), backup.view_active()), (View(0), true), "{}", backup.describe());
    // The primary of view 1 installs neither the forged new-view...
    let mut primary = rotated.replica(1);
    let _ = rotated.deliver(&mut primary, 3, Message::NewView(new_view));
    assert_eq!(primary.view(), View(0), "{}", primary.describe());
    assert!(!primary.can_propose());
    // ...nor one of its own from forged view-changes.
    for (signer, view_change) in view_changes.into_iter().enumerate() {
        let actions = rotated.deliver(&mut primary, signer as u16, Message::ViewChange(view_change));
        assert!(
            !actions.send_after_persist.iter().any(|out| matches!(out.message, Message::NewView(_))),
            "the primary built a new-view from forged view-changes"
        );
    }
    assert_eq!(primary.view(), View(0), "{}", primary.describe());
}

/// A primary never installs a new-view for its own view that it did not create, even one that
/// verifies under current keys (it creates its own from the view-changes).
#[test]
fn a_primary_installs_only_its_own_new_view() {
    let fixture = fixture();
    let mut primary = fixture.replica(1);
    let view_changes: Vec<Signed<ViewChange>> = (0..N)
        .filter(|signer| *signer != 1)
        .map(|signer| {
            fixture.sign(signer, ViewChange { new_view: View(1), checkpoint: None, prepared: vec![] })
        })
        .collect();
    let body = NewView { view: View(1), view_changes, pre_prepares: vec![] };
    let new_view = fixture.sign(1, body);
    let _ = fixture.deliver(&mut primary, 2, Message::NewView(new_view));
    assert_eq!(primary.view(), View(0), "{}", primary.describe());
}

/// Hole 2: a verified new-view is its own proof and is installed however far ahead it is
/// (a replica cut off while the others changed views many times rejoins through it).
#[test]
fn a_new_view_far_ahead_is_installed() {
    let fixture = fixture();
    let far = View(config().views_ahead_max * 3 + 2);
    let primary = fixture.set().primary(far);
    let view_changes: Vec<Signed<ViewChange>> = (0..N)
        .filter(|signer| *signer != 3)
        .map(|signer| fixture.sign(signer, ViewChange { new_view: far, checkpoint: None, prepared: vec![] }))
        .collect();
    let new_view = fixture.sign(primary.0, NewView { view: far, view_changes, pre_prepares: vec![] });
    let mut backup = fixture.replica(3);
    let _ = fixture.deliver(&mut backup, primary.0, Message::NewView(new_view));
    assert_eq!((backup.view(), backup.view_active()), (far, true), "{}", backup.describe());
}

/// Hole 3: a peer whose status shows a lower stable checkpoint is sent the certificate (its
/// quorum of signed votes), which makes the peer's checkpoint stable too.
#[test]
fn a_lagging_peer_gets_the_stable_checkpoint_certificate() {
    let rotated = rotated_at_k();
    let mut ahead = rotated.replica(0);
    let status = Message::Status(crate::wire::Status {
        view: View(0),
        view_active: true,
        committed: Height(K),
        stable: Height(0),
    });
    let actions = rotated.deliver(&mut ahead, 1, status);
    let votes: Vec<Message> = actions
        .send
        .iter()
        .filter(|out| out.to == Recipient::One(ValidatorIndex(1)))
        .map(|out| out.message.clone())
        .filter(|message| matches!(message, Message::Checkpoint(_)))
        .collect();
    assert_eq!(votes.len(), rotated.stable.signatures.len());
    let fixture = fixture();
    let mut behind = fixture.replica(1);
    let mut stable = Vec::new();
    for vote in votes {
        stable.extend(fixture.deliver(&mut behind, 0, vote).stable_checkpoints);
    }
    assert_eq!(stable.len(), 1);
    assert_eq!(stable[0].statement, rotated.stable.statement);
    assert_eq!(behind.low_watermark(), Height(K));
}

/// Hole 8: a replica whose own checkpoint disagrees with a quorum's stops for good, naming the
/// height and both roots, and sends nothing from then on.
#[test]
fn a_replica_whose_checkpoint_disagrees_with_a_quorum_stops() {
    let fixture = fixture();
    let mut backup = fixture.replica(1);
    for height in 1..=K {
        let (message, digest, _) = fixture.pre_prepare(0, height, format!("tx{height}").as_bytes());
        let _ = fixture.deliver(&mut backup, 0, message);
        for signer in [0, 2, 3] {
            let _ = fixture.deliver(&mut backup, signer, commit_message(&fixture, signer, height, digest));
        }
    }
    let mine =
        Checkpoint { height: Height(K), header_hash: Digest::of(b"mine"), state_root: Digest::of(b"a") };
    let _ = backup.handle(
        20,
        Input::Executed { height: Height(1), header_hash: Digest::ZERO, state_root: Digest::ZERO },
    );
    let _ = backup.handle(
        20,
        Input::Executed { height: Height(K), header_hash: mine.header_hash, state_root: mine.state_root },
    );
    let quorum =
        Checkpoint { height: Height(K), header_hash: Digest::of(b"theirs"), state_root: Digest::of(b"b") };
    let mut last = Actions::default();
    for signer in [0, 2, 3] {
        last =
            fixture.deliver(&mut backup, signer, Message::Checkpoint(fixture.sign(signer, quorum.clone())));
    }
    let expected = Divergence { height: Height(K), certified: quorum, executed: mine };
    assert_eq!(last, Actions { diverged: Some(expected.clone()), ..Actions::default() });
    assert_eq!(backup.diverged(), Some(&expected));
    let text = expected.to_string();
    assert!(
        text.contains(&expected.certified.state_root.to_hex())
            && text.contains(&expected.executed.state_root.to_hex())
    );
    // Stopped: a status tick, a pre-prepare, nothing makes it act.
    assert!(backup.handle(10_000, Input::Timer(Timer::Status)).is_empty());
    let (message, _, _) = fixture.pre_prepare(0, K + 1, b"more");
    assert!(fixture.deliver(&mut backup, 0, message).is_empty());
}

/// Hole 8: a replica that adopted a certified checkpoint and then reached that height by state
/// transfer compares the state it executed with the certificate.
#[test]
fn a_replica_that_transferred_to_a_checkpoint_checks_the_state_it_reached() {
    let fixture = fixture();
    let certified =
        Checkpoint { height: Height(K), header_hash: Digest::of(b"h"), state_root: Digest::of(b"r") };
    let votes: Vec<_> = [0, 2, 3].iter().map(|signer| fixture.sign(*signer, certified.clone())).collect();
    let certificate = Certificate::from_votes(certified.clone(), &votes);
    let mut behind = fixture.replica(1);
    for vote in votes {
        let _ = fixture.deliver(&mut behind, 0, Message::Checkpoint(vote));
    }
    assert_eq!(behind.stable_checkpoint(), Some(&certificate));
    // The blocks it fetched were committed by a quorum, but its execution ends elsewhere.
    for height in 1..=K {
        let batch = Arc::new(Batch::empty(View(0), ValidatorIndex(0)));
        let statement = Commit { view: View(0), height: Height(height), digest: batch.digest() };
        let commits: Vec<_> =
            [0, 2, 3].iter().map(|signer| fixture.sign(*signer, statement.clone())).collect();
        let block =
            VerifiedBlock::verify(batch, Certificate::from_votes(statement, &commits), &fixture.schedule)
                .expect("verifies");
        let _ = behind
            .handle(20, Input::Blocks { source: BlockSource::Peer(ValidatorIndex(2)), blocks: vec![block] });
    }
    assert_eq!(behind.committed(), Height(K), "{}", behind.describe());
    let _ = behind.handle(
        30,
        Input::Executed { height: Height(1), header_hash: Digest::ZERO, state_root: Digest::ZERO },
    );
    let executed =
        Checkpoint { height: Height(K), header_hash: Digest::of(b"h"), state_root: Digest::of(b"other") };
    let actions = behind.handle(
        30,
        Input::Executed {
            height: Height(K),
            header_hash: executed.header_hash,
            state_root: executed.state_root,
        },
    );
    assert_eq!(actions.diverged, Some(Divergence { height: Height(K), certified, executed }));
}

fn committed_block(fixture: &Fixture, height: u64) -> VerifiedBlock {
    let batch = Arc::new(Batch {
        view: View(0),
        proposer: ValidatorIndex(0),
        timestamp_ms: height,
        payload: vec![1],
    });
    let statement = Commit { view: View(0), height: Height(height), digest: batch.digest() };
    let commits: Vec<_> = [0, 2, 3].iter().map(|signer| fixture.sign(*signer, statement.clone())).collect();
    VerifiedBlock::verify(batch, Certificate::from_votes(statement, &commits), &fixture.schedule)
        .expect("verifies")
}

/// Hole 4: a state-transfer answer is kept only within the heights asked of its sender; a
/// Byzantine peer's far-ahead genuine blocks cannot fill the buffer and starve the next height.
#[test]
fn state_transfer_keeps_only_the_requested_range_of_the_asked_peer() {
    let fixture = fixture();
    let mut behind = fixture.replica(1);
    // Peer 2 says it has committed far more; at the next stalled status tick it is asked.
    let status = Message::Status(crate::wire::Status {
        view: View(0),
        view_active: true,
        committed: Height(5000),
        stable: Height(0),
    });
    let _ = fixture.deliver(&mut behind, 2, status);
    let actions = behind.handle(10_000, Input::Timer(Timer::Status));
    assert_eq!(
        actions.fetch_blocks,
        vec![FetchBlocks { from: Height(1), to: Height(FETCH_HEIGHTS_MAX), peer: ValidatorIndex(2) }]
    );
    // Peer 3 (never asked) and peer 2 (outside the range) serve far-ahead genuine blocks.
    let far: Vec<VerifiedBlock> = (FETCH_HEIGHTS_MAX + 1..=FETCH_HEIGHTS_MAX + TRANSFER_BUFFER_MAX as u64)
        .map(|h| committed_block(&fixture, h))
        .collect();
    let _ = behind
        .handle(10_001, Input::Blocks { source: BlockSource::Peer(ValidatorIndex(3)), blocks: far.clone() });
    let _ =
        behind.handle(10_001, Input::Blocks { source: BlockSource::Peer(ValidatorIndex(2)), blocks: far });
    assert_eq!(dropped(&behind, DropReason::UnwantedBlock), 2 * TRANSFER_BUFFER_MAX as u64);
    // The asked-for height still gets in and is delivered.
    let actions = behind.handle(
        10_002,
        Input::Blocks {
            source: BlockSource::Peer(ValidatorIndex(2)),
            blocks: vec![committed_block(&fixture, 1)],
        },
    );
    assert_eq!(actions.committed.len(), 1, "{}", behind.describe());
}

/// The schedule of the fixture, known up to `horizon` (as a node's executor publishes it).
fn schedule_up_to(fixture: &Fixture, horizon: u64) -> Arc<ValidatorSchedule> {
    let mut schedule = fixture.schedule.clone();
    schedule.set_horizon(Height(horizon));
    Arc::new(schedule)
}

/// Serves `request` from a chain whose peers have committed up to `tip`, and executes what
/// was delivered as the node does (the horizon moves to the checkpoint boundary after each
/// executed height); returns every state-transfer request that came out of it.
fn serve_and_execute(
    fixture: &Fixture,
    replica: &mut Replica,
    request: &FetchBlocks,
    tip: u64,
    now_ms: u64,
) -> Vec<FetchBlocks> {
    let blocks: Vec<VerifiedBlock> =
        (request.from.0..=request.to.0.min(tip)).map(|height| committed_block(fixture, height)).collect();
    let mut actions =
        replica.handle(now_ms, Input::Blocks { source: BlockSource::Peer(request.peer), blocks });
    let mut requests = std::mem::take(&mut actions.fetch_blocks);
    for committed in actions.committed {
        let height = committed.height;
        let horizon = crate::validators::activation_boundary(height.next(), K);
        let _ = replica.handle(now_ms, Input::Schedule(schedule_up_to(fixture, horizon.0)));
        let actions = replica.handle(
            now_ms,
            Input::Executed {
                height,
                header_hash: Digest::of(&height.0.to_le_bytes()),
                state_root: Digest::ZERO,
            },
        );
        requests.extend(actions.fetch_blocks);
    }
    requests
}

/// A replica far behind asks for the next range as soon as the previous one is executed (the
/// schedule's horizon allows one checkpoint interval past what was executed, so each answer
/// is short): it used to ask only at a status tick that saw no progress, one short range per
/// two ticks, and never caught up with a network that commits faster than that (a restarted
/// validator stayed 22 heights behind for a minute in the safety test, with a window of 8).
/// An answer short of what was asked (the peer's tip) ends the transfer.
#[test]
fn state_transfer_asks_for_the_next_range_as_soon_as_the_last_is_executed() {
    let fixture = fixture();
    let mut behind = fixture.replica(1);
    let _ = behind.handle(1, Input::Schedule(schedule_up_to(&fixture, K)));
    let tip = 40 * K + 1;
    let status = Message::Status(crate::wire::Status {
        view: View(0),
        view_active: true,
        committed: Height(10),
        stable: Height(0),
    });
    let _ = fixture.deliver(&mut behind, 2, status);
    let actions = behind.handle(T, Input::Timer(Timer::Status));
    // Never above the horizon: blocks there could not be verified yet.
    assert_eq!(
        actions.fetch_blocks,
        vec![FetchBlocks { from: Height(1), to: Height(K), peer: ValidatorIndex(2) }]
    );
    let mut request = actions.fetch_blocks[0];
    // No status tick from here on: every range is asked for when the last one is executed.
    for round in 0.. {
        assert!(round < 100, "no end to the transfer: {}", behind.describe());
        let mut next = serve_and_execute(&fixture, &mut behind, &request, tip, T + 1);
        if behind.committed() == Height(tip) {
            assert!(next.is_empty(), "asked again at the peers' tip: {next:?}");
            break;
        }
        assert_eq!(next.len(), 1, "round {round}, {}: {next:?}", behind.describe());
        request = next.remove(0);
        assert_eq!(request.from, behind.committed().next(), "{request:?}");
        assert!(request.to <= behind.schedule().horizon(), "{request:?}");
    }
    assert_eq!(behind.executed(), Height(tip));
}

/// A validator that claims a height it does not serve cannot stop a transfer by being next in
/// rotation: its empty answer (or failed request) makes the replica ask the next peer at once,
/// and it is not asked again until progress. Only a status tick used to restart the transfer,
/// and a busy chain outran the replica again.
#[test]
fn a_peer_that_answers_nothing_does_not_stop_the_transfer() {
    let fixture = fixture();
    let mut behind = fixture.replica(1);
    let _ = behind.handle(1, Input::Schedule(schedule_up_to(&fixture, K)));
    let tip = 20 * K + 1;
    let liar = ValidatorIndex(2);
    for (peer, committed) in [(0, tip), (2, 1_000_000), (3, tip)] {
        let status = Message::Status(crate::wire::Status {
            view: View(0),
            view_active: true,
            committed: Height(committed),
            stable: Height(0),
        });
        let _ = fixture.deliver(&mut behind, peer, status);
    }
    let mut pending = behind.handle(T, Input::Timer(Timer::Status)).fetch_blocks;
    let mut asked_liar = 0;
    for round in 0.. {
        assert!(round < 200, "no end to the transfer: {}", behind.describe());
        if behind.committed() == Height(tip) {
            break;
        }
        assert_eq!(pending.len(), 1, "round {round}, {}: {pending:?}", behind.describe());
        let request = pending.remove(0);
        pending = if request.peer == liar {
            asked_liar += 1;
            behind.handle(T + 1, Input::NoBlocks { peer: liar }).fetch_blocks
        } else {
            serve_and_execute(&fixture, &mut behind, &request, tip, T + 1)
        };
    }
    assert!(asked_liar > 0, "the liar was never asked: the test proves nothing");
    assert_eq!(behind.executed(), Height(tip));
}

/// Hole 4: when the buffer is full, the highest blocks make way for lower ones.
#[test]
fn a_full_transfer_buffer_makes_way_for_lower_heights() {
    let fixture = fixture();
    let mut behind = fixture.replica(1);
    let far: Vec<VerifiedBlock> =
        (3..3 + TRANSFER_BUFFER_MAX as u64).map(|h| committed_block(&fixture, h)).collect();
    let _ = behind.handle(1, Input::Blocks { source: BlockSource::OwnStore, blocks: far });
    let actions = behind.handle(
        2,
        Input::Blocks {
            source: BlockSource::OwnStore,
            blocks: vec![committed_block(&fixture, 1), committed_block(&fixture, 2)],
        },
    );
    assert_eq!(actions.committed.len(), TRANSFER_BUFFER_MAX, "{}", behind.describe());
}

/// Hole 9: a slot keeps the batch of its prepared certificate however many other candidates
/// arrive (it used to evict the smallest digest, which could be the only copy of a prepared
/// batch after many views).
#[test]
fn the_prepared_batch_is_never_evicted() {
    let fixture = fixture();
    let batches: Vec<Arc<Batch>> = (0..16u8)
        .map(|i| {
            Arc::new(Batch { view: View(0), proposer: ValidatorIndex(0), timestamp_ms: 1, payload: vec![i] })
        })
        .collect();
    let smallest = batches.iter().min_by_key(|batch| batch.digest()).expect("some").clone();
    let pre_prepare =
        fixture.sign(0, PrePrepare { view: View(0), height: Height(1), digest: smallest.digest() });
    let mut slot =
        Slot { prepared: Some(PreparedCertificate { pre_prepare, prepares: vec![] }), ..Slot::default() };
    remember_batch(&mut slot, smallest.digest(), smallest.clone());
    for batch in &batches {
        remember_batch(&mut slot, batch.digest(), batch.clone());
    }
    assert!(slot.batches.contains_key(&smallest.digest()));
    assert!(slot.batches.len() <= BATCHES_PER_SLOT_MAX);
}

/// Item 9: a validator whose key rotates at the boundary K adopts the stable checkpoint at K
/// before it has executed its rotation. Its view-change (signed at K + 1) must wait for the new
/// epoch and key; signed with the old key it would be refused by every peer that knows the
/// rotation, and the safety rule would forbid a second one for that view.
#[test]
fn a_view_change_waits_for_the_key_of_its_epoch() {
    let rotated = rotated_at_k();
    let fixture = fixture();
    // This replica has executed nothing: its schedule ends at the horizon K, with the old keys.
    let mut schedule = fixture.schedule.clone();
    schedule.set_horizon(Height(K));
    let mut replica = Replica::new(
        config(),
        ValidatorIndex(1),
        vec![(Height(0), rotated.old[1].clone())],
        Arc::new(schedule.clone()),
        Height(0),
        Default::default(),
    );
    let _ = replica.start(0);
    let deliver = |replica: &mut Replica, from: u16, message: Message| {
        let verified = verify(message, &schedule, WINDOW).expect("verifies");
        replica.handle(10, Input::Message { from: ValidatorIndex(from), message: verified })
    };
    for signer in [0, 2, 3] {
        let vote = fixture.sign(signer, rotated.stable.statement.clone());
        let _ = deliver(&mut replica, signer, Message::Checkpoint(vote));
    }
    assert_eq!(replica.low_watermark(), Height(K));
    // f + 1 others ask for view 1: it joins, but cannot sign its view-change yet.
    let mut sent = Vec::new();
    for signer in [2, 3] {
        let body = ViewChange { new_view: View(1), checkpoint: None, prepared: vec![] };
        let actions = deliver(&mut replica, signer, Message::ViewChange(fixture.sign(signer, body)));
        sent.extend(actions.send_after_persist);
    }
    assert_eq!((replica.view(), replica.view_active()), (View(1), false));
    assert!(
        !sent.iter().any(|out| matches!(out.message, Message::ViewChange(_))),
        "signed a view-change at height {} with a key the schedule does not list there",
        K + 1
    );
    // Executing the rotation brings the new epoch, then the new key: now it signs, and the
    // view-change verifies for peers that know the rotation.
    let _ = replica.handle(20, Input::Schedule(Arc::new(rotated.schedule.clone())));
    let actions = replica.handle(20, Input::AddKey { from: Height(K + 1), key: rotated.new[1].clone() });
    let view_change = actions
        .send_after_persist
        .iter()
        .find_map(|out| match &out.message {
            Message::ViewChange(view_change) => Some(view_change.clone()),
            _ => None,
        })
        .expect("a view-change once the key is known");
    assert!(verify(Message::ViewChange(view_change), &rotated.schedule, WINDOW).is_ok());
}

/// The primary proposes `payload` at its next height and the others prepare and commit it.
fn commit_own_proposal(fixture: &Fixture, primary: &mut Replica, payload: &[u8]) -> Height {
    let height = primary.next_height();
    let actions = primary.handle(10, Input::Propose { payload: payload.to_vec(), timestamp_ms: 5 });
    let digest = match &actions.send_after_persist[0].message {
        Message::PrePrepare { pre_prepare, .. } => pre_prepare.body.digest,
        other => panic!("expected a pre-prepare, got {other:?}"),
    };
    for signer in [1, 2] {
        let _ = fixture.deliver(primary, signer, prepare_message(fixture, signer, height.0, digest));
    }
    for signer in [1, 2] {
        let _ = fixture.deliver(primary, signer, commit_message(fixture, signer, height.0, digest));
    }
    assert_eq!(primary.committed(), height, "{}", primary.describe());
    height
}

fn executed(replica: &mut Replica, height: Height) {
    let _ = replica.handle(
        20,
        Input::Executed {
            height,
            header_hash: Digest::of(&height.0.to_le_bytes()),
            state_root: Digest::ZERO,
        },
    );
}

/// An idle primary fills up to the next checkpoint boundary and stops there: the query names
/// the boundary only with nothing in flight, everything executed, and a non-boundary last
/// height; never at genesis, at a boundary, on a backup, in a view change, or when a peer is
/// ahead.
#[test]
fn the_checkpoint_fill_target_is_the_next_boundary_of_an_idle_primary() {
    const K3: u64 = 3;
    let fixture = fixture();
    let mut primary = Replica::new(
        ReplicaConfig::new(K3, 2 * K3, T, 8 * T),
        ValidatorIndex(0),
        vec![(Height(0), fixture.keys[0].clone())],
        Arc::new(fixture.schedule.clone()),
        Height(0),
        Default::default(),
    );
    let _ = primary.start(0);
    let _ = primary.handle(0, Input::WallClock { unix_ms: 5 });
    // Genesis is a boundary: an idle new chain makes no blocks.
    assert_eq!(primary.checkpoint_fill_target(), None);
    let height = commit_own_proposal(&fixture, &mut primary, b"tx");
    assert_eq!(height, Height(1));
    // Committed but not executed yet.
    assert_eq!(primary.checkpoint_fill_target(), None);
    executed(&mut primary, height);
    assert_eq!(primary.checkpoint_fill_target(), Some(Height(K3)));
    // Two empty batches reach the boundary; while one is in flight there is nothing to fill,
    // and at the boundary the fill stops.
    for height in 2..=K3 {
        let _ = primary.handle(30, Input::Propose { payload: Vec::new(), timestamp_ms: 5 });
        assert_eq!(primary.in_flight(), 1);
        assert_eq!(primary.checkpoint_fill_target(), None);
        let digest = primary.log[&Height(height)].pre_prepare.as_ref().expect("proposed").body.digest;
        for signer in [1, 2] {
            let _ = fixture.deliver(&mut primary, signer, prepare_message(&fixture, signer, height, digest));
            let _ = fixture.deliver(&mut primary, signer, commit_message(&fixture, signer, height, digest));
        }
        assert_eq!(primary.committed(), Height(height), "{}", primary.describe());
        executed(&mut primary, Height(height));
        let expected = if height < K3 { Some(Height(K3)) } else { None };
        assert_eq!(primary.checkpoint_fill_target(), expected, "after height {height}");
    }
    // A peer that committed more: this primary is catching up, not idle.
    assert_eq!(commit_own_proposal(&fixture, &mut primary, b"tx2"), Height(K3 + 1));
    executed(&mut primary, Height(K3 + 1));
    assert_eq!(primary.checkpoint_fill_target(), Some(Height(2 * K3)));
    let status = Status { view: View(0), view_active: true, committed: Height(K3 + 2), stable: Height(0) };
    let _ = fixture.deliver(&mut primary, 2, Message::Status(status));
    assert_eq!(primary.checkpoint_fill_target(), None);

    // A backup never fills.
    let mut backup = fixture.replica(1);
    let (message, digest, _) = fixture.pre_prepare(0, 1, b"tx");
    let _ = fixture.deliver(&mut backup, 0, message);
    for signer in [0, 2, 3] {
        let _ = fixture.deliver(&mut backup, signer, commit_message(&fixture, signer, 1, digest));
    }
    executed(&mut backup, Height(1));
    assert_eq!(backup.committed(), Height(1));
    assert_eq!(backup.checkpoint_fill_target(), None);

    // Nor does a primary whose view is changing.
    let mut primary = fixture.replica(0);
    let height = commit_own_proposal(&fixture, &mut primary, b"tx");
    executed(&mut primary, height);
    assert_eq!(primary.checkpoint_fill_target(), Some(Height(K)));
    for signer in [1, 2] {
        let body = ViewChange { new_view: View(1), checkpoint: None, prepared: vec![] };
        let _ = fixture.deliver(&mut primary, signer, Message::ViewChange(fixture.sign(signer, body)));
    }
    assert!(!primary.view_active(), "{}", primary.describe());
    assert_eq!(primary.checkpoint_fill_target(), None);
}

/// A new primary learns which batches are in flight: the re-proposals of its new view (and
/// what it accepted or committed but has not executed), so its node can keep their
/// transactions out of a fresh batch.
#[test]
fn a_new_primary_knows_the_batches_it_has_not_executed() {
    let fixture = fixture();
    let mut replicas: Vec<Replica> = (0..N).map(|i| fixture.replica(i)).collect();
    assert!(replicas[1].unexecuted_batches().batches.is_empty());
    let mut view_changes = Vec::new();
    for index in [1usize, 2, 3] {
        let _ = prepare_height_one(&fixture, &mut replicas[index], b"in flight");
        let actions = replicas[index].handle(10 + T, Input::Timer(Timer::ViewChange));
        view_changes.push((index as u16, actions.send_after_persist[0].message.clone()));
    }
    for (from, message) in &view_changes[1..] {
        let _ = fixture.deliver(&mut replicas[1], *from, message.clone());
    }
    assert!(replicas[1].view_active() && replicas[1].is_primary(), "{}", replicas[1].describe());
    let unexecuted = replicas[1].unexecuted_batches();
    assert_eq!(unexecuted.missing, 0);
    let batches = unexecuted.batches;
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].0, Height(1));
    assert_eq!(batches[0].1.payload, b"in flight".to_vec());
    // Delivered by state transfer and not executed yet: in no log slot, but in flight.
    let mut behind = fixture.replica(1);
    let blocks: Vec<VerifiedBlock> = (1..=3).map(|height| committed_block(&fixture, height)).collect();
    let _ = behind.handle(20, Input::Blocks { source: BlockSource::OwnStore, blocks });
    assert_eq!(behind.committed(), Height(3));
    let unexecuted = behind.unexecuted_batches();
    assert_eq!((unexecuted.batches.len(), unexecuted.missing), (3, 0));
    executed(&mut behind, Height(1));
    assert_eq!(behind.unexecuted_batches().batches.len(), 2);
    // Committed and executed: no longer in flight.
    let mut primary = fixture.replica(0);
    let height = commit_own_proposal(&fixture, &mut primary, b"done");
    assert_eq!(primary.unexecuted_batches().batches.len(), 1);
    executed(&mut primary, height);
    assert!(primary.unexecuted_batches().batches.is_empty());
}
