//! The seeded simulator's scenarios. Each test runs a fixed set of seeds; environment
//! variables run more:
//!
//! - `TETRAD_SIM_SEED=S`: run only seed S (a failing seed prints this line to replay it);
//! - `TETRAD_SIM_SEEDS=N`: run seeds 1..=N of each scenario (default: each test's own count);
//! - `TETRAD_SIM_BUDGET_SECS=T`: keep running further seeds of each scenario until T seconds
//!   have passed;
//! - `TETRAD_SIM_TRACE=1`: on a violation, print every replica's state;
//! - `TETRAD_SIM_DEBUG=1`: print every replica's state at the heal, and the view-changes of a
//!   new-view that fails the checker's choice check.

mod sim;

use std::time::Instant;

use sim::{Behavior, Report, Scenario};

fn scenario(name: &'static str, n: u16) -> Scenario {
    Scenario {
        name,
        n,
        chaos_ms: 6_000,
        heal_ms: 12_000,
        // After healing: a view change may still be waiting out a capped timeout (1.6 s), and
        // up to f views with a faulty primary cost one capped timeout each before a view with
        // an honest primary installs; then state transfer brings laggards up.
        liveness_bound_ms: 10_000,
        drop_max: 0.30,
        duplicate_max: 0.50,
        delay_max_ms: 40,
        partitions: true,
        crashes: true,
        byzantine: Vec::new(),
        twins: Vec::new(),
        rotation_every_ms: 0,
        key_compromise: false,
        isolated: None,
        lose_kind: None,
        amnesia_counted_honest: false,
        request_every_ms: 0,
        split_halves_from_ms: None,
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|value| value.parse().ok())
}

/// The seeds a test runs: one replayed seed, or 1..=count, extended by a time budget.
fn run_seeds(test: &str, scenario: &Scenario, default_count: u64) -> Vec<(u64, Report)> {
    if let Some(seed) = env_u64("TETRAD_SIM_SEED") {
        return vec![(seed, sim::run(scenario, seed))];
    }
    let count = env_u64("TETRAD_SIM_SEEDS").unwrap_or(default_count);
    let budget = env_u64("TETRAD_SIM_BUDGET_SECS");
    let started = Instant::now();
    let mut reports = Vec::new();
    let mut seed = 1;
    while seed <= count || budget.is_some_and(|secs| started.elapsed().as_secs() < secs) {
        reports.push((seed, sim::run(scenario, seed)));
        seed += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let commits: u64 = reports.iter().map(|(_, report)| report.min_honest_height).sum();
    let highest = reports.iter().map(|(_, report)| report.max_height).max().unwrap_or(0);
    let view_changes: u64 = reports.iter().map(|(_, report)| report.view_changes).sum();
    let rotations: usize = reports.iter().map(|(_, report)| report.rotations).sum();
    let fills: u64 = reports.iter().map(|(_, report)| report.empty_fills).sum();
    eprintln!(
        "{test} ({}, n = {}): {} seeds in {elapsed:.1} s ({:.2} seeds/s), {:.0} heights committed per seed by the slowest honest replica (highest {highest}), {:.1} view changes per seed, {:.1} key rotations per seed, {:.1} empty batches per seed",
        scenario.name,
        scenario.n,
        reports.len(),
        reports.len() as f64 / elapsed,
        commits as f64 / reports.len() as f64,
        view_changes as f64 / reports.len() as f64,
        rotations as f64 / reports.len() as f64,
        fills as f64 / reports.len() as f64,
    );
    reports
}

fn replay_line(test: &str, seed: u64) -> String {
    format!(
        "replay: TETRAD_SIM_SEED={seed} cargo test --release -p tetrad-consensus --test simulator -- {test} --exact"
    )
}

/// Every seed must keep every invariant and commit something.
fn assert_safe_and_live(test: &str, scenario: Scenario, seeds: u64) {
    for (seed, report) in run_seeds(test, &scenario, seeds) {
        if let Some(violation) = &report.violation {
            panic!("{test} seed {seed}: {violation}\n{}", replay_line(test, seed));
        }
        assert!(
            report.min_honest_height > 0,
            "{test} seed {seed}: nothing committed\n{}",
            replay_line(test, seed)
        );
    }
}

#[test]
fn lossy_network_n4() {
    assert_safe_and_live("lossy_network_n4", scenario("lossy", 4), 12);
}

/// Idle primaries propose empty batches up to the checkpoint boundary, as the node's driver does
/// (whenever no request waits, without the node's quiet delay). Requests come in bursts, one
/// tick every 300 ms, so the chain goes idle in between: the fills race requests, losses,
/// partitions, crashes and view changes, and every invariant holds.
#[test]
fn idle_primaries_fill_to_the_checkpoint_boundary_n4() {
    let test = "idle_primaries_fill_to_the_checkpoint_boundary_n4";
    let reports = run_seeds(test, &Scenario { request_every_ms: 300, ..scenario("bursts", 4) }, 8);
    for (seed, report) in &reports {
        if let Some(violation) = &report.violation {
            panic!("{test} seed {seed}: {violation}\n{}", replay_line(test, *seed));
        }
    }
    let fills: u64 = reports.iter().map(|(_, report)| report.empty_fills).sum();
    assert!(fills > 0, "no idle primary filled up to a boundary in {} seeds", reports.len());
}

#[test]
fn lossy_network_n7() {
    assert_safe_and_live("lossy_network_n7", scenario("lossy", 7), 6);
}

#[test]
fn equivocating_primary_n4() {
    let mut scenario = scenario("equivocate", 4);
    scenario.byzantine = vec![(0, Behavior::Equivocate)];
    assert_safe_and_live("equivocating_primary_n4", scenario, 12);
}

#[test]
fn double_votes_n4() {
    let mut scenario = scenario("double-vote", 4);
    scenario.byzantine = vec![(1, Behavior::DoubleVote)];
    assert_safe_and_live("double_votes_n4", scenario, 12);
}

#[test]
fn forged_signatures_and_garbage_n4() {
    let mut scenario = scenario("forge", 4);
    scenario.byzantine = vec![(2, Behavior::Forge)];
    assert_safe_and_live("forged_signatures_and_garbage_n4", scenario, 12);
}

#[test]
fn replayed_messages_n4() {
    let mut scenario = scenario("replay", 4);
    scenario.byzantine = vec![(3, Behavior::Replay)];
    assert_safe_and_live("replayed_messages_n4", scenario, 12);
}

#[test]
fn fabricated_view_changes_n4() {
    let mut scenario = scenario("fake-view-change", 4);
    scenario.byzantine = vec![(1, Behavior::FakeViewChange)];
    assert_safe_and_live("fabricated_view_changes_n4", scenario, 12);
}

#[test]
fn silent_primary_n4() {
    let mut scenario = scenario("silent", 4);
    scenario.byzantine = vec![(0, Behavior::Silent)];
    assert_safe_and_live("silent_primary_n4", scenario, 12);
}

#[test]
fn twins_n4() {
    let mut scenario = scenario("twins", 4);
    scenario.twins = vec![0];
    assert_safe_and_live("twins_n4", scenario, 12);
}

#[test]
fn two_byzantine_n7() {
    let mut scenario = scenario("byzantine-n7", 7);
    scenario.byzantine = vec![(0, Behavior::Equivocate), (3, Behavior::DoubleVote)];
    assert_safe_and_live("two_byzantine_n7", scenario, 6);
}

#[test]
fn twins_and_forger_n7() {
    let mut scenario = scenario("twins-n7", 7);
    scenario.twins = vec![1];
    scenario.byzantine = vec![(4, Behavior::Forge)];
    assert_safe_and_live("twins_and_forger_n7", scenario, 6);
}

/// Key rotations under load: every 300 ms a validator (a third of the time the current primary)
/// rotates its consensus key while the network drops, delays and partitions, so rotations race
/// view changes and state transfer crosses rotation boundaries.
#[test]
fn key_rotations_n4() {
    let mut scenario = scenario("rotations", 4);
    scenario.rotation_every_ms = 300;
    assert_safe_and_live("key_rotations_n4", scenario.clone(), 12);
    assert_rotations_happen(&scenario);
}

#[test]
fn key_rotations_with_byzantine_n7() {
    let mut scenario = scenario("rotations-n7", 7);
    scenario.rotation_every_ms = 300;
    scenario.byzantine = vec![(0, Behavior::Equivocate), (5, Behavior::Forge)];
    assert_safe_and_live("key_rotations_with_byzantine_n7", scenario, 6);
}

/// A Byzantine validator keeps signing with its old key after its rotation takes effect: its
/// messages are refused, and the others carry on.
#[test]
fn stale_key_after_rotation_n4() {
    let mut scenario = scenario("stale-key", 4);
    scenario.rotation_every_ms = 200;
    scenario.byzantine = vec![(2, Behavior::StaleKey)];
    assert_safe_and_live("stale_key_after_rotation_n4", scenario.clone(), 12);
    assert_rotations_happen(&scenario);
}

/// The rotation scenarios must rotate keys (a rotation scenario without rotations proves nothing).
fn assert_rotations_happen(scenario: &Scenario) {
    let report = sim::run(scenario, 1);
    assert!(report.rotations >= 10, "only {} rotations took effect", report.rotations);
}

/// Negative control: with f+1 faulty validators (twins of two of four), agreement must break
/// within the seeds run; this proves the checker can fail.
#[test]
fn negative_control_f_plus_one_twins_break_agreement() {
    let mut scenario = scenario("negative-control", 4);
    scenario.twins = vec![0, 1];
    scenario.drop_max = 0.0;
    scenario.crashes = false;
    scenario.partitions = false;
    let reports = run_seeds("negative_control_f_plus_one_twins_break_agreement", &scenario, 10);
    let broken = reports
        .iter()
        .find(|(_, report)| report.violation.as_deref().is_some_and(|v| v.starts_with("agreement")));
    assert!(broken.is_some(), "no seed broke agreement with f+1 twins: the checker cannot fail");
}

#[test]
fn same_seed_same_trace() {
    let mut scenario = scenario("determinism", 4);
    scenario.byzantine = vec![(2, Behavior::Forge)];
    scenario.chaos_ms = 2_000;
    scenario.heal_ms = 2_000;
    scenario.liveness_bound_ms = 2_000;
    let first = sim::run(&scenario, 42);
    let second = sim::run(&scenario, 42);
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.events, second.events);
    let other = sim::run(&scenario, 43);
    assert_ne!(first.trace_hash, other.trace_hash);
}

/// A one-validator chain (what `tetrad testnet --validators 1` starts): it must commit alone.
#[test]
fn single_validator_n1() {
    let mut scenario = scenario("n1", 1);
    scenario.partitions = false;
    assert_safe_and_live("single_validator_n1", scenario, 4);
}

/// Two validators: f = 0 and the quorum is both of them.
#[test]
fn two_validators_n2() {
    assert_safe_and_live("two_validators_n2", scenario("n2", 2), 6);
}

/// Hole 7: a Byzantine primary signs pre-prepares whose batch names another proposer or view,
/// or carries a timestamp far from every clock (u64::MAX would freeze every later header's
/// time). Backups refuse them; a committed batch never carries such metadata.
#[test]
fn bad_batch_metadata_n4() {
    let mut scenario = scenario("bad-metadata", 4);
    scenario.byzantine = vec![(0, Behavior::BadMetadata)];
    assert_safe_and_live("bad_batch_metadata_n4", scenario, 12);
}

/// Hole 1: an attacker holds every consensus key an honest validator has erased after its
/// rotation took effect, and forges view-changes and new-views with them for the next views.
/// A replica past the boundary verifies nothing under a retired epoch.
#[test]
fn key_compromise_retired_keys_n4() {
    let mut scenario = scenario("key-compromise", 4);
    scenario.rotation_every_ms = 150;
    scenario.key_compromise = true;
    assert_safe_and_live("key_compromise_retired_keys_n4", scenario.clone(), 8);
    assert_forgeries_sent(&scenario);
}

/// Hole 1 with f colluding validators, whose current keys join the retired ones.
#[test]
fn key_compromise_with_f_byzantine_n4() {
    let mut scenario = scenario("key-compromise-f", 4);
    scenario.rotation_every_ms = 150;
    scenario.key_compromise = true;
    scenario.byzantine = vec![(1, Behavior::Colluder)];
    assert_safe_and_live("key_compromise_with_f_byzantine_n4", scenario.clone(), 8);
    assert_forgeries_sent(&scenario);
}

#[test]
fn key_compromise_with_f_byzantine_n7() {
    let mut scenario = scenario("key-compromise-f-n7", 7);
    scenario.rotation_every_ms = 100;
    scenario.key_compromise = true;
    scenario.byzantine = vec![(2, Behavior::Colluder), (5, Behavior::Colluder)];
    assert_safe_and_live("key_compromise_with_f_byzantine_n7", scenario.clone(), 4);
    assert_forgeries_sent(&scenario);
}

/// A key-compromise scenario in which the attacker never got keys proves nothing.
fn assert_forgeries_sent(scenario: &Scenario) {
    let report = sim::run(scenario, 1);
    assert!(report.forgeries >= 10, "the attacker forged only {} messages", report.forgeries);
}

/// Hole 2: an honest replica is cut off for two and a half simulated minutes while a Byzantine
/// replica that never votes in the normal case keeps the others changing views (far more than
/// `views_ahead_max` of them). After the heal the cut-off replica is needed for every quorum;
/// the new-view that is resent to it is its own proof and must be accepted at any distance.
#[test]
fn long_partition_with_view_churn_n4() {
    let mut scenario = scenario("long-partition", 4);
    scenario.chaos_ms = 150_000;
    scenario.heal_ms = 12_000;
    scenario.partitions = false;
    scenario.crashes = false;
    scenario.drop_max = 0.05;
    scenario.isolated = Some(3);
    scenario.byzantine = vec![(1, Behavior::ViewChurn)];
    for (seed, report) in run_seeds("long_partition_with_view_churn_n4", &scenario, 2) {
        assert!(report.view_changes > 4 * 64, "seed {seed}: only {} view changes", report.view_changes);
        if let Some(violation) = &report.violation {
            panic!("seed {seed}: {violation}\n{}", replay_line("long_partition_with_view_churn_n4", seed));
        }
    }
}

/// Hole 3: 80% of checkpoint votes are lost during chaos. Votes are re-sent and a replica whose
/// status shows a lower stable checkpoint is sent the certificate, so the window keeps moving.
#[test]
fn checkpoint_loss_n4() {
    let mut scenario = scenario("checkpoint-loss", 4);
    scenario.lose_kind = Some(("checkpoint", 0.8));
    assert_safe_and_live("checkpoint_loss_n4", scenario, 6);
}

/// 80% of commits are lost during chaos: many heights are prepared but not committed when views
/// change, so new-views must carry them over.
#[test]
fn commit_loss_n4() {
    let mut scenario = scenario("commit-loss", 4);
    scenario.lose_kind = Some(("commit", 0.8));
    assert_safe_and_live("commit_loss_n4", scenario, 6);
}

/// Hole 4: a Byzantine sync peer answers state-transfer requests with genuine blocks other than
/// the ones asked for (far ahead, shifted) or with nothing; replicas keep only what they asked
/// of that peer and catch up from the others.
#[test]
fn lying_sync_server_n4() {
    let mut scenario = scenario("lying-sync", 4);
    scenario.byzantine = vec![(2, Behavior::LyingSync)];
    assert_safe_and_live("lying_sync_server_n4", scenario, 8);
}

#[test]
fn lossy_network_n5() {
    assert_safe_and_live("lossy_network_n5", scenario("lossy", 5), 4);
}

#[test]
fn lossy_network_n6() {
    assert_safe_and_live("lossy_network_n6", scenario("lossy", 6), 4);
}

#[test]
fn byzantine_n10() {
    let mut scenario = scenario("byzantine-n10", 10);
    scenario.byzantine = vec![(0, Behavior::Equivocate), (4, Behavior::DoubleVote), (7, Behavior::Forge)];
    assert_safe_and_live("byzantine_n10", scenario, 1);
}

/// The primary of the next view is silent: the first view change lands on it.
#[test]
fn silent_next_primary_n4() {
    let mut scenario = scenario("silent-next", 4);
    scenario.byzantine = vec![(1, Behavior::Silent)];
    assert_safe_and_live("silent_next_primary_n4", scenario, 8);
}

/// Two consecutive primaries are silent (f = 2): two view changes in a row must fail over.
#[test]
fn two_silent_consecutive_primaries_n7() {
    let mut scenario = scenario("two-silent", 7);
    scenario.byzantine = vec![(1, Behavior::Silent), (2, Behavior::Silent)];
    assert_safe_and_live("two_silent_consecutive_primaries_n7", scenario, 4);
}

/// Negative control for liveness: f + 1 silent validators stop the chain, and the liveness
/// check must say so (this proves it can fail).
#[test]
fn negative_control_f_plus_one_silent_stalls() {
    let mut scenario = scenario("negative-control-liveness", 4);
    scenario.byzantine = vec![(1, Behavior::Silent), (2, Behavior::Silent)];
    let reports = run_seeds("negative_control_f_plus_one_silent_stalls", &scenario, 3);
    for (seed, report) in reports {
        assert!(
            report.violation.as_deref().is_some_and(|v| v.starts_with("liveness")),
            "seed {seed}: f + 1 silent validators and no liveness violation: {:?}",
            report.violation
        );
    }
}

/// A validator crashes again and again and restarts with its safety records lost (a wiped
/// disk), counted among the f faulty: the others stay safe and live.
#[test]
fn amnesia_n4() {
    let mut scenario = scenario("amnesia", 4);
    scenario.byzantine = vec![(0, Behavior::Amnesia)];
    assert_safe_and_live("amnesia_n4", scenario, 8);
}

/// Negative control for the double-sign invariant: the same amnesiac, but the checker holds it
/// to the honest rules. Some seed must report that it signed twice (this proves the invariant
/// can fail).
#[test]
fn negative_control_amnesia_counted_honest_double_signs() {
    let mut scenario = scenario("negative-control-amnesia", 4);
    scenario.byzantine = vec![(0, Behavior::Amnesia)];
    scenario.amnesia_counted_honest = true;
    let reports = run_seeds("negative_control_amnesia_counted_honest_double_signs", &scenario, 8);
    let double_signed = reports.iter().find(|(_, report)| {
        report.violation.as_deref().is_some_and(|v| v.contains("signed two") || v.contains("sent two"))
    });
    assert!(
        double_signed.is_some(),
        "no seed caught the amnesiac signing twice: {:?}",
        reports.iter().map(|(_, report)| report.violation.clone()).collect::<Vec<_>>()
    );
}

/// A Byzantine validator's view-changes carry real but stale prepared certificates (the lowest
/// view per height, preferring a digest a later view replaced). The checker asserts that every
/// honest new-view re-proposes the highest-view certificate among the honest view-changes.
#[test]
fn stale_prepared_certificates_n4() {
    let mut scenario = scenario("stale-certificates", 4);
    scenario.byzantine = vec![(3, Behavior::StaleCertificates)];
    scenario.lose_kind = Some(("commit", 0.6));
    assert_safe_and_live("stale_prepared_certificates_n4", scenario, 8);
}

#[test]
fn stale_prepared_certificates_n7() {
    let mut scenario = scenario("stale-certificates-n7", 7);
    scenario.byzantine = vec![(1, Behavior::StaleCertificates), (5, Behavior::StaleCertificates)];
    scenario.lose_kind = Some(("commit", 0.6));
    assert_safe_and_live("stale_prepared_certificates_n7", scenario, 3);
}

/// A Byzantine new primary withholds its new-view.
#[test]
fn new_primary_withholds_new_view_n4() {
    let mut scenario = scenario("withhold-new-view", 4);
    scenario.byzantine = vec![(1, Behavior::WithholdNewView)];
    assert_safe_and_live("new_primary_withholds_new_view_n4", scenario, 8);
}

/// A Byzantine new primary sends different valid new-views, from different quorums of real
/// view-changes, to different backups.
#[test]
fn new_primary_splits_new_views_n4() {
    let mut scenario = scenario("split-new-view", 4);
    scenario.byzantine = vec![(1, Behavior::SplitNewView)];
    scenario.lose_kind = Some(("commit", 0.5));
    assert_safe_and_live("new_primary_splits_new_views_n4", scenario, 8);
}

#[test]
fn new_primary_splits_new_views_n7() {
    let mut scenario = scenario("split-new-view-n7", 7);
    scenario.byzantine = vec![(1, Behavior::SplitNewView), (4, Behavior::StaleCertificates)];
    scenario.lose_kind = Some(("commit", 0.5));
    assert_safe_and_live("new_primary_splits_new_views_n7", scenario, 3);
}

/// A Byzantine primary withholds its pre-prepares from half of the backups.
#[test]
fn primary_withholds_pre_prepares_n4() {
    let mut scenario = scenario("withhold-pre-prepares", 4);
    scenario.byzantine = vec![(0, Behavior::WithholdPrePrepares)];
    assert_safe_and_live("primary_withholds_pre_prepares_n4", scenario, 8);
}

/// Performance attack: a Byzantine primary delays its pre-prepares to just under the
/// view-change timeout. Progress is not enough: the view changes per seed stay bounded.
#[test]
fn primary_delays_pre_prepares_n4() {
    let mut scenario = scenario("delay-pre-prepares", 4);
    scenario.byzantine = vec![(0, Behavior::DelayPrePrepares)];
    let name = "primary_delays_pre_prepares_n4";
    for (seed, report) in run_seeds(name, &scenario, 8) {
        if let Some(violation) = &report.violation {
            panic!("{name} seed {seed}: {violation}\n{}", replay_line(name, seed));
        }
        assert!(report.min_honest_height > 0, "{name} seed {seed}: nothing committed");
        assert!(
            report.view_changes <= DELAY_ATTACK_VIEW_CHANGES_MAX,
            "{name} seed {seed}: {} view changes (bound {DELAY_ATTACK_VIEW_CHANGES_MAX})",
            report.view_changes
        );
    }
}

/// View changes (summed over replicas) one seed of the delay attack may cost: about what the
/// lossy network alone costs (~25 per seed), with room for seeds that partition a lot.
const DELAY_ATTACK_VIEW_CHANGES_MAX: u64 = 80;

/// Issue 15, the campaign's `split` fault: the chain runs, then two validators on each side hear
/// nothing from the other two (no quorum anywhere) for a few to many view-change timeouts; after
/// the heal every replica must commit again within two base view-change timeouts.
#[test]
fn commits_resume_within_two_timeouts_after_a_split_n4() {
    let name = "commits_resume_within_two_timeouts_after_a_split_n4";
    for split_ms in [700, 1_300, 2_900, 4_100, 6_500] {
        let mut scenario = scenario("split-halves", 4);
        scenario.split_halves_from_ms = Some(1_000);
        scenario.chaos_ms = 1_000 + split_ms;
        scenario.heal_ms = 3_000;
        scenario.liveness_bound_ms = 2 * sim::VIEW_CHANGE_TIMEOUT_MS;
        scenario.partitions = false;
        scenario.crashes = false;
        scenario.drop_max = 0.0;
        scenario.duplicate_max = 0.0;
        for (seed, report) in run_seeds(name, &scenario, 8) {
            if let Some(violation) = &report.violation {
                panic!(
                    "{name} (split of {split_ms} ms) seed {seed}: {violation}\n{}",
                    replay_line(name, seed)
                );
            }
            assert!(report.min_honest_height > 0, "{name} seed {seed}: nothing committed");
        }
    }
}
