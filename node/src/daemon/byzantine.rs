//! The misbehaviour of `tetrad-byzantine`: a validator that runs this node's own code and lies
//! on purpose, for the fault campaign (issue 15, `scripts/chaos.sh --byzantine MODE`).
//!
//! Compiled only with the cargo feature `byzantine`, which only the `tetrad-byzantine` binary
//! requires; the released `tetrad` never contains it (`scripts/test.sh` checks for
//! [`MARKER`]). The consensus crate knows nothing of it: the replica stays honest, and this
//! module rewrites what the driver sends ([`outgoing`]) and what the network serves to block
//! sync ([`lie_about_blocks`]). The modes, from `TETRAD_BYZANTINE` (comma-separated, or `all`):
//!
//! - `equivocate`: as primary, each pre-prepare goes out in two valid signed versions (the batch
//!   with one transaction fewer and its clock 1 ms later), each to a different subset of the
//!   peers;
//! - `double-vote`: every prepare and commit is also signed for a second digest (the other
//!   version's when it equivocated, otherwise a made-up one), both sent to every peer in a
//!   random order;
//! - `view-churn`: a valid signed view-change for the next view (its stable checkpoint, no
//!   prepared certificates) every half view-change timeout, whatever the others do;
//! - `silence`: on becoming primary of a view, its first pre-prepare reaches one peer only, then
//!   it sends nothing at all for three view-change timeouts (with `equivocate` too: every other
//!   turn as primary);
//! - `lying-sync`: every block-sync answer is a lie (a tampered batch, another block's
//!   certificate, a certificate cut below a quorum, a forged height, or nothing), and its status
//!   messages claim 20 more committed heights than it has, so that peers ask it;
//! - `flood`: about 1,000 messages a second to every peer: junk bytes, lying status messages,
//!   fetches of batches nobody has, and validly signed prepares for made-up digests;
//! - `replay`: as primary, after each pre-prepare (at once, or 30 ms later every other height),
//!   a valid signed pre-prepare for the next height (before its own replica proposes it) whose
//!   batch is a copy of the first transaction of the one just sent: the copy can only fail its
//!   nonce check at execution, but if backups take it, the transaction is in the chain twice.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tetrad_consensus::messages::{Batch, Commit, PrePrepare, Prepare};
use tetrad_consensus::view_messages::ViewChange;
use tetrad_consensus::wire::{Message, Status};
use tetrad_consensus::{
    Digest, Height, Outgoing, Replica, SecretKey, Signed, ValidatorIndex, ValidatorSchedule, View,
};
use tokio::sync::mpsc;
use tracing::warn;

use crate::daemon::network::{Command, SyncBlock};

/// In every binary built with the misbehaviour (and in no other): what the test command looks
/// for in the released `tetrad`.
pub const MARKER: &str = "tetrad-byzantine: misbehaviour compiled in (never in a released binary)";

/// The environment variable that names the modes.
pub const ENV: &str = "TETRAD_BYZANTINE";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Modes {
    pub equivocate: bool,
    pub double_vote: bool,
    pub view_churn: bool,
    pub silence: bool,
    pub lying_sync: bool,
    pub flood: bool,
    pub replay: bool,
}

pub const MODE_NAMES: [&str; 7] =
    ["equivocate", "double-vote", "view-churn", "silence", "lying-sync", "flood", "replay"];

impl Modes {
    /// `all`, `none`, or a comma-separated list of [`MODE_NAMES`].
    pub fn parse(list: &str) -> Result<Modes, String> {
        let mut modes = Modes::default();
        for name in list.split(',').map(str::trim).filter(|name| !name.is_empty()) {
            match name {
                "all" => {
                    modes = Modes {
                        equivocate: true,
                        double_vote: true,
                        view_churn: true,
                        silence: true,
                        lying_sync: true,
                        flood: true,
                        replay: true,
                    }
                }
                "none" => {}
                "equivocate" => modes.equivocate = true,
                "double-vote" => modes.double_vote = true,
                "view-churn" => modes.view_churn = true,
                "silence" => modes.silence = true,
                "lying-sync" => modes.lying_sync = true,
                "flood" => modes.flood = true,
                "replay" => modes.replay = true,
                other => {
                    return Err(format!(
                        "{ENV}: unknown mode {other:?}; known: all, none, {}",
                        MODE_NAMES.join(", ")
                    ));
                }
            }
        }
        Ok(modes)
    }
}

static MODES: OnceLock<Modes> = OnceLock::new();

/// Reads the modes from [`ENV`] (only `tetrad-byzantine` calls this; in a `tetrad` built with
/// the feature for clippy the hooks stay inert).
#[allow(dead_code)]
pub fn install_from_env() -> Result<Modes, String> {
    let list = std::env::var(ENV).map_err(|_| {
        format!("{ENV} is not set: name the misbehaviour (all, none, {})", MODE_NAMES.join(", "))
    })?;
    let modes = Modes::parse(&list)?;
    let _ = MODES.set(modes);
    eprintln!("{MARKER}; modes: {list}");
    Ok(modes)
}

fn modes() -> Modes {
    MODES.get().copied().unwrap_or_default()
}

/// What the hooks remember between calls.
struct Hook {
    rng: u64,
    /// Silent (nothing sent) until then.
    silent_until: Option<Instant>,
    /// The last view in which this primary went silent.
    silenced_view: Option<View>,
    last_churn: Option<Instant>,
    /// The other version of the last pre-prepares it equivocated: `(height, digest)`.
    other_versions: Vec<(Height, Digest)>,
    /// What the flood task signs with.
    flood: Option<Arc<Mutex<FloodView>>>,
    lies: u64,
    /// What it did so far (logged every 5 s): equivocated pre-prepares, double votes,
    /// view-changes sent for churn, silences, replayed transactions.
    done: [u64; 5],
    reported: Option<Instant>,
}

static HOOK: Mutex<Hook> = Mutex::new(Hook {
    rng: 0x9e37_79b9_7f4a_7c15,
    silent_until: None,
    silenced_view: None,
    last_churn: None,
    other_versions: Vec::new(),
    flood: None,
    lies: 0,
    done: [0; 5],
    reported: None,
});

impl Hook {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The key this validator signs `height` with.
fn key_for(keys: &[(Height, SecretKey)], height: Height) -> Option<&SecretKey> {
    keys.iter().rev().find(|(first, _)| *first <= height).or(keys.first()).map(|(_, key)| key)
}

fn send(network: &mpsc::Sender<Command>, to: Option<ValidatorIndex>, message: &Message) {
    let _ = network.try_send(Command::Send { to, bytes: Bytes::from(message.encode()) });
}

fn made_up(digest: &Digest, salt: u64) -> Digest {
    let mut bytes = digest.0.to_vec();
    bytes.extend_from_slice(b"tetrad-byzantine");
    bytes.extend_from_slice(&salt.to_le_bytes());
    Digest::of(&bytes)
}

/// The driver's outgoing messages, before they are sent: returns what is to be sent the normal
/// way; what it sends itself goes straight to `network`. A no-op unless modes are installed.
pub fn outgoing(
    replica: Option<&Replica>,
    keys: &[(Height, SecretKey)],
    schedule: &Arc<ValidatorSchedule>,
    network: &mpsc::Sender<Command>,
    messages: Vec<Outgoing>,
) -> Vec<Outgoing> {
    let modes = modes();
    let Some(replica) = replica.filter(|_| modes != Modes::default()) else { return messages };
    let mut hook = HOOK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let me = replica.me();
    let timeout = Duration::from_millis(replica.config().view_change_timeout_ms.max(1));
    let now = Instant::now();
    if modes.flood {
        feed_flood(&mut hook, replica, keys, schedule, network);
    }
    if hook.reported.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(5)) {
        hook.reported = Some(now);
        let [equivocated, double_votes, churn, silences, replays] = hook.done;
        warn!(
            equivocated,
            double_votes,
            churn,
            silences,
            replays,
            lies = hook.lies,
            view = %replica.view(),
            "byzantine: misbehaviour so far"
        );
    }
    if hook.silent_until.is_some_and(|until| now < until) {
        return Vec::new();
    }
    hook.silent_until = None;
    if modes.view_churn && hook.last_churn.is_none_or(|at| now.duration_since(at) >= timeout / 2) {
        hook.last_churn = Some(now);
        let body = ViewChange {
            new_view: replica.view().next(),
            checkpoint: replica.stable_checkpoint().cloned(),
            prepared: Vec::new(),
        };
        let key_height = replica.low_watermark().next();
        if let Some(key) = key_for(keys, key_height) {
            let signed = Signed::sign(body, me, key, schedule.at(key_height));
            send(network, None, &Message::ViewChange(signed));
            hook.done[2] += 1;
        }
    }
    let peers: Vec<ValidatorIndex> =
        (0..schedule.latest().n() as u16).map(ValidatorIndex).filter(|index| *index != me).collect();
    let mut normal = Vec::new();
    for outgoing in messages {
        match &outgoing.message {
            Message::PrePrepare { pre_prepare, batch }
                if pre_prepare.signer == me && (modes.equivocate || modes.silence || modes.replay) =>
            {
                let body = &pre_prepare.body;
                let replay = if modes.replay { replay_of(body, batch, keys, schedule, me) } else { None };
                // With equivocation too, only every other turn as primary goes silent (a silent
                // primary is replaced before it would equivocate).
                let turn = body.view.0 / peers.len().saturating_add(1).max(1) as u64;
                let silent_turn = !modes.equivocate || turn % 2 == 1;
                if modes.silence && silent_turn && hook.silenced_view != Some(body.view) {
                    // The worst moment: one peer has the proposal, the rest wait for it.
                    hook.silenced_view = Some(body.view);
                    hook.silent_until = Some(now + 3 * timeout);
                    hook.done[3] += 1;
                    if let Some(first) = peers.first() {
                        send(network, Some(*first), &outgoing.message);
                    }
                    warn!(view = %body.view, height = %body.height, "byzantine: silent after one pre-prepare");
                    return Vec::new();
                }
                if !modes.equivocate {
                    match replay {
                        // The proposal first, then its copy at the next height.
                        Some(copy) => {
                            send(network, None, &outgoing.message);
                            send_copy(network, body.height, copy);
                            hook.done[4] += 1;
                        }
                        None => normal.push(outgoing),
                    }
                    continue;
                }
                let Some(key) = key_for(keys, body.height) else {
                    normal.push(outgoing);
                    continue;
                };
                let other = other_version(batch);
                let other_digest = other.digest();
                let statement = PrePrepare { view: body.view, height: body.height, digest: other_digest };
                let signed = Signed::sign(statement, me, key, schedule.at(body.height));
                let second = Message::PrePrepare { pre_prepare: signed, batch: Arc::new(other) };
                hook.other_versions.push((body.height, other_digest));
                hook.done[0] += 1;
                let excess = hook.other_versions.len().saturating_sub(256);
                hook.other_versions.drain(..excess);
                for (position, peer) in peers.iter().enumerate() {
                    let version = if (position as u64 + body.height.0).is_multiple_of(2) {
                        &outgoing.message
                    } else {
                        &second
                    };
                    send(network, Some(*peer), version);
                }
                if let Some(copy) = replay {
                    send_copy(network, body.height, copy);
                    hook.done[4] += 1;
                }
            }
            Message::Prepare(vote) if vote.signer == me && modes.double_vote => {
                let body = &vote.body;
                let other = hook.second_digest(body.height, &body.digest);
                let Some(key) = key_for(keys, body.height) else { continue };
                let statement = Prepare { view: body.view, height: body.height, digest: other };
                let second = Message::Prepare(Signed::sign(statement, me, key, schedule.at(body.height)));
                double(&mut hook, network, &peers, &outgoing.message, &second);
            }
            Message::Commit(vote) if vote.signer == me && modes.double_vote => {
                let body = &vote.body;
                let other = hook.second_digest(body.height, &body.digest);
                let Some(key) = key_for(keys, body.height) else { continue };
                let statement = Commit { view: body.view, height: body.height, digest: other };
                let second = Message::Commit(Signed::sign(statement, me, key, schedule.at(body.height)));
                double(&mut hook, network, &peers, &outgoing.message, &second);
            }
            Message::Status(status) if modes.lying_sync => {
                // Claims to be ahead, so that peers ask it for blocks.
                let lie = Status {
                    committed: Height(status.committed.0 + 20),
                    stable: status.stable,
                    view: status.view,
                    view_active: status.view_active,
                };
                normal.push(Outgoing { to: outgoing.to, message: Message::Status(lie) });
            }
            _ => normal.push(outgoing),
        }
    }
    normal
}

impl Hook {
    /// The other digest a double vote signs: the other version's if it equivocated at this
    /// height, otherwise a made-up one.
    fn second_digest(&mut self, height: Height, digest: &Digest) -> Digest {
        match self.other_versions.iter().rev().find(|(at, other)| *at == height && other != digest) {
            Some((_, other)) => *other,
            None => made_up(digest, height.0),
        }
    }
}

/// Both votes to every peer, in a random order each.
fn double(
    hook: &mut Hook,
    network: &mpsc::Sender<Command>,
    peers: &[ValidatorIndex],
    first: &Message,
    second: &Message,
) {
    hook.done[1] += 1;
    for peer in peers {
        if hook.next().is_multiple_of(2) {
            send(network, Some(*peer), first);
            send(network, Some(*peer), second);
        } else {
            send(network, Some(*peer), second);
            send(network, Some(*peer), first);
        }
    }
}

/// The second version of a batch: one transaction fewer (when it has two or more), its clock
/// 1 ms later. Valid in every way a backup checks.
fn other_version(batch: &Batch) -> Batch {
    let payload = match borsh::from_slice::<Vec<tetrad_ledger::tx::Tx>>(&batch.payload) {
        Ok(mut txs) if txs.len() >= 2 => {
            txs.pop();
            borsh::to_vec(&txs).unwrap_or_else(|_| batch.payload.clone())
        }
        _ => batch.payload.clone(),
    };
    Batch {
        view: batch.view,
        proposer: batch.proposer,
        timestamp_ms: batch.timestamp_ms.saturating_add(1),
        payload,
    }
}

/// `replay`: sends the copy at once after a proposal at an even height (it may overtake the
/// original at the peers: both orders must be refused), 30 ms later after one at an odd height.
fn send_copy(network: &mpsc::Sender<Command>, height: Height, copy: Message) {
    if height.0.is_multiple_of(2) {
        send(network, None, &copy);
        return;
    }
    let network = network.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        send(&network, None, &copy);
    });
}

/// `replay`: a pre-prepare for the height after `body`'s whose batch is a copy of the first
/// transaction of `batch` (its clock 1 ms later), signed like any of this primary's.
fn replay_of(
    body: &PrePrepare,
    batch: &Batch,
    keys: &[(Height, SecretKey)],
    schedule: &ValidatorSchedule,
    me: ValidatorIndex,
) -> Option<Message> {
    let txs = tetrad_ledger::tx::decode_payload(&batch.payload).ok()?;
    let copy = txs.first()?.clone();
    let next = body.height.next();
    if !schedule.covers(next) {
        return None;
    }
    let fake = Batch {
        view: batch.view,
        proposer: batch.proposer,
        timestamp_ms: batch.timestamp_ms.saturating_add(1),
        payload: borsh::to_vec(&vec![copy]).ok()?,
    };
    let statement = PrePrepare { view: body.view, height: next, digest: fake.digest() };
    let signed = Signed::sign(statement, me, key_for(keys, next)?, schedule.at(next));
    Some(Message::PrePrepare { pre_prepare: signed, batch: Arc::new(fake) })
}

/// What the flood task needs to sign: refreshed by every call of [`outgoing`].
struct FloodView {
    me: ValidatorIndex,
    view: View,
    committed: Height,
    key: Option<SecretKey>,
    schedule: Arc<ValidatorSchedule>,
}

fn feed_flood(
    hook: &mut Hook,
    replica: &Replica,
    keys: &[(Height, SecretKey)],
    schedule: &Arc<ValidatorSchedule>,
    network: &mpsc::Sender<Command>,
) {
    let view = FloodView {
        me: replica.me(),
        view: replica.view(),
        committed: replica.committed(),
        key: key_for(keys, replica.committed().next()).cloned(),
        schedule: schedule.clone(),
    };
    match &hook.flood {
        Some(shared) => *shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = view,
        None => {
            let shared = Arc::new(Mutex::new(view));
            hook.flood = Some(shared.clone());
            let network = network.clone();
            tokio::spawn(flood(shared, network));
        }
    }
}

/// About 1,000 messages a second, broadcast: junk, lying status, fetches of unknown batches and
/// validly signed prepares for made-up digests (stale or ahead of the window).
async fn flood(shared: Arc<Mutex<FloodView>>, network: mpsc::Sender<Command>) {
    let mut rng: u64 = 0x1234_5678_9abc_def1;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        for _ in 0..50 {
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            let r = rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let message = {
                let view = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                match r % 4 {
                    0 => {
                        let junk: Vec<u8> = (0..(64 + r % 960)).map(|i| (r >> (i % 56)) as u8).collect();
                        if network.try_send(Command::Send { to: None, bytes: Bytes::from(junk) }).is_err() {
                            break;
                        }
                        continue;
                    }
                    1 => Message::Status(Status {
                        view: View(view.view.0 + r % 3),
                        view_active: r.is_multiple_of(2),
                        committed: Height(view.committed.0 + r % 1000),
                        stable: Height(view.committed.0 / 2),
                    }),
                    2 => Message::FetchBatch {
                        height: Height(view.committed.0 + 1 + r % 8),
                        digest: made_up(&Digest::default(), r),
                    },
                    _ => {
                        let Some(key) = view.key.as_ref() else { continue };
                        let height =
                            Height((view.committed.0 + (r % 64)).max(1).saturating_sub(r % 2 * 32).max(1));
                        let statement =
                            Prepare { view: view.view, height, digest: made_up(&Digest::default(), r) };
                        Message::Prepare(Signed::sign(statement, view.me, key, view.schedule.at(height)))
                    }
                }
            };
            if network.try_send(Command::Send { to: None, bytes: Bytes::from(message.encode()) }).is_err() {
                break;
            }
        }
    }
}

/// `lying-sync`: a block-sync answer replaced by a lie, a different one each time. Honest nodes
/// must refuse every one (their certificates do not verify, or nothing is answered).
pub fn lie_about_blocks(mut blocks: Vec<SyncBlock>) -> Vec<SyncBlock> {
    if !modes().lying_sync {
        return blocks;
    }
    let mut hook = HOOK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    hook.lies += 1;
    let lie = hook.lies % 5;
    drop(hook);
    match lie {
        // The batch tampered with (its digest no longer the certified one).
        0 => {
            for block in &mut blocks {
                block.batch.timestamp_ms ^= 1;
            }
        }
        // Each batch with the next block's certificate.
        1 if blocks.len() >= 2 => {
            let first = blocks[0].certificate.clone();
            for index in 0..blocks.len() - 1 {
                blocks[index].certificate = blocks[index + 1].certificate.clone();
            }
            if let Some(last) = blocks.last_mut() {
                last.certificate = first;
            }
        }
        // Certificates cut below a quorum.
        2 => {
            for block in &mut blocks {
                block.certificate.signatures.truncate(1);
            }
        }
        // The certified height moved (the signatures no longer match).
        3 => {
            for block in &mut blocks {
                block.certificate.statement.height = Height(block.certificate.statement.height.0 + 1);
            }
        }
        // Nothing: "no block after yours".
        _ => blocks.clear(),
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(Modes::parse("none"), Ok(Modes::default()));
        let all = Modes::parse("all").expect("all");
        assert!(
            all.equivocate
                && all.double_vote
                && all.view_churn
                && all.silence
                && all.lying_sync
                && all.flood
                && all.replay
        );
        let two = Modes::parse("equivocate, silence").expect("two");
        assert!(two.equivocate && two.silence && !two.flood);
        assert!(Modes::parse("lie").is_err());
    }

    /// Every lie of `lying-sync` is refused by the check an honest node makes on block-sync
    /// answers (or is no answer at all); the honest answer passes it.
    #[test]
    fn every_sync_lie_fails_verification() {
        use tetrad_consensus::VerifiedBlock;
        let chain = tetrad_ledger::testkit::TestChain::new(4, 2, 1000);
        let schedule = ValidatorSchedule::new(chain.validator_set.clone());
        let honest: Vec<SyncBlock> = (1..=3u64)
            .map(|height| {
                let batch = Batch {
                    view: View(0),
                    proposer: ValidatorIndex(0),
                    timestamp_ms: 1_700_000_000_000 + height,
                    payload: Vec::new(),
                };
                let certificate = chain.certify(View(0), Height(height), batch.digest());
                SyncBlock { batch, certificate }
            })
            .collect();
        let verifies = |block: &SyncBlock| {
            VerifiedBlock::verify(Arc::new(block.batch.clone()), block.certificate.clone(), &schedule).is_ok()
        };
        assert!(honest.iter().all(verifies));
        let _ = MODES.set(Modes { lying_sync: true, ..Modes::default() });
        let mut empty = 0;
        for _ in 0..10 {
            let lie = lie_about_blocks(honest.clone());
            empty += usize::from(lie.is_empty());
            assert!(!lie.iter().any(verifies), "a lie verified: {lie:?}");
        }
        assert_eq!(empty, 2, "one lie in five is no answer");
    }

    #[test]
    fn the_other_version_is_another_valid_batch() {
        let batch =
            Batch { view: View(3), proposer: ValidatorIndex(3), timestamp_ms: 10, payload: Vec::new() };
        let other = other_version(&batch);
        assert_ne!(other.digest(), batch.digest());
        assert_eq!((other.view, other.proposer, other.timestamp_ms), (View(3), ValidatorIndex(3), 11));
    }
}
