//! A deterministic simulator for the PBFT replica.
//!
//! All replicas run in one thread on a simulated clock, driven by one seeded generator. The
//! network drops, duplicates, delays and reorders messages, partitions the replicas (random
//! splits, an isolated primary, one-way cuts) and heals; replicas crash and restart from their
//! persisted safety records and committed prefix. Byzantine replicas run an honest replica
//! inside and corrupt what it sends: an equivocating primary, double votes, forged signatures
//! and garbage bytes, replays, fabricated view-changes, silence. Twins are two honest copies of
//! one validator placed in different partitions.
//!
//! The [`checker`] watches every step: agreement, certificate validity, no conflicting
//! signatures from honest replicas, validity of committed batches, and liveness after healing.
//! The same seed gives the same trace hash.

mod attacks;
pub mod checker;
pub mod rng;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use tetrad_consensus::certificate::Signed;
use tetrad_consensus::safety::{KeyValueOp, restore};
use tetrad_consensus::view_messages::{PreparedCertificate, ViewChange};
use tetrad_consensus::wire::{Message, VerifiedBlock, VerifiedMessage, verify};
use tetrad_consensus::{
    Actions, Batch, BlockSource, CommitCertificate, Digest, Height, Input, PrePrepare, Prepare, Recipient,
    Replica, ReplicaConfig, SecretKey, Timer, TimerAction, ValidatorIndex, ValidatorSchedule, ValidatorSet,
    View,
};

use checker::Checker;
use rng::Rng;

/// How a Byzantine replica corrupts what its inner honest replica sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// As primary, sends different batches to different backups.
    Equivocate,
    /// Sends a second prepare and commit for another digest to some peers.
    DoubleVote,
    /// Sends garbage bytes, broken signatures and impersonations; serves tampered blocks.
    Forge,
    /// Resends old messages it received.
    Replay,
    /// Sends view-changes with fabricated prepared certificates.
    FakeViewChange,
    /// Sends nothing.
    Silent,
    /// Keeps signing with its old consensus key after its rotation takes effect.
    StaleKey,
    /// As primary, signs pre-prepares for batches with another proposer or view, or a
    /// timestamp far ahead of (or behind) the clocks.
    BadMetadata,
    /// Takes part in view changes but never in the normal case (no pre-prepare, prepare or
    /// commit): without its votes the others cannot commit, so views keep changing.
    ViewChurn,
    /// Serves genuine blocks other than the ones asked for (far ahead, shifted), or none.
    LyingSync,
    /// Runs honestly, but crashes often and restarts with its safety records lost (its chain
    /// kept): it may sign twice. Counted among the f faulty validators.
    Amnesia,
    /// Its view-changes carry real but stale prepared certificates: at each height the lowest
    /// view it has seen, preferring a digest that a later view replaced.
    StaleCertificates,
    /// As a new primary, withholds its new-view.
    WithholdNewView,
    /// As a new primary, sends different valid new-views (built from different quorums of
    /// real view-changes) to different backups.
    SplitNewView,
    /// As primary, withholds its pre-prepares from every other backup.
    WithholdPrePrepares,
    /// As primary, delays its pre-prepares to just under the view-change timeout.
    DelayPrePrepares,
    /// Runs honestly but lends its current key to the key-compromise attacker
    /// ([`Scenario::key_compromise`]).
    Colluder,
}

/// One simulation setup; a seed picks the concrete rates and schedule.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub n: u16,
    /// Faults are active in `[0, chaos_ms)`; then the network heals, crashed replicas restart,
    /// and the run continues until `chaos_ms + heal_ms`.
    pub chaos_ms: u64,
    pub heal_ms: u64,
    /// After healing, every honest replica must commit a new height within this much
    /// simulated time.
    pub liveness_bound_ms: u64,
    pub drop_max: f64,
    pub duplicate_max: f64,
    pub delay_max_ms: u64,
    pub partitions: bool,
    pub crashes: bool,
    pub byzantine: Vec<(u16, Behavior)>,
    pub twins: Vec<u16>,
    /// Every this many ms a client asks for a key rotation (0: never); a third of them rotate
    /// the current primary.
    pub rotation_every_ms: u64,
    /// An attacker holds every consensus key an honest validator has erased (a retired key
    /// leaks), and the current keys of the `Colluder` validators. It forges view-changes and
    /// new-views for the next views and sends them to every replica.
    pub key_compromise: bool,
    /// An honest validator cut off from every other during the whole chaos phase (a long
    /// partition), instead of random partitions.
    pub isolated: Option<u16>,
    /// Negative control: the checker treats `Amnesia` validators as honest (it must then find
    /// them signing twice).
    pub amnesia_counted_honest: bool,
    /// During chaos, messages of this kind ([`Message::kind`]) are lost with this probability
    /// (on top of the general loss).
    pub lose_kind: Option<(&'static str, f64)>,
    /// Requests arrive only in the first client tick of every this many ms (0: in every tick),
    /// so that the chain goes idle in between and idle primaries fill up to the checkpoint
    /// boundary with empty batches.
    pub request_every_ms: u64,
    /// From this time until the heal, the validators are split in two halves (indices below
    /// n/2 and the rest) that hear nothing from each other (the campaign's `split` fault:
    /// with n = 4, two on each side and no quorum anywhere); no other partition.
    pub split_halves_from_ms: Option<u64>,
}

pub const VIEW_CHANGE_TIMEOUT_MS: u64 = 200;
pub const VIEW_CHANGE_TIMEOUT_MAX_MS: u64 = 1600;
pub const CHECKPOINT_INTERVAL: u64 = 4;
pub const WINDOW: u64 = 16;
const CLIENT_TICK_MS: u64 = 10;
const FAULT_TICK_MS: u64 = 250;
const REQUESTS_PER_BATCH_MAX: usize = 16;
const REPLAY_MEMORY: usize = 64;
const VERIFY_CACHE_MAX: usize = 200_000;
/// Simulated wall clocks read `WALL_CLOCK_BASE_MS + now + skew`, each replica with its own
/// skew in `[-CLOCK_SKEW_MAX_MS, CLOCK_SKEW_MAX_MS]`.
const WALL_CLOCK_BASE_MS: u64 = 1_000_000_000;
const CLOCK_SKEW_MAX_MS: u64 = 2_000;
/// Request ids with this bit set are key rotations: `FLAG | generation << 16 | validator`.
const ROTATION_FLAG: u64 = 1 << 63;

/// The consensus key of `validator` after its `generation`-th rotation (0: genesis key).
fn rotated_key(validator: u16, generation: u64) -> SecretKey {
    if generation == 0 {
        return validator_key(validator);
    }
    let mut seed = [0u8; 32];
    seed[..2].copy_from_slice(&validator.to_le_bytes());
    seed[2..10].copy_from_slice(&generation.to_le_bytes());
    seed[10] = 0x52;
    SecretKey::from_seed(seed)
}

/// The schedule horizon of a replica that executed `executed`.
fn horizon(executed: Height) -> Height {
    tetrad_consensus::validators::activation_boundary(executed.next(), CHECKPOINT_INTERVAL)
}

/// Applies the rotations among `ids` committed at `height` to `schedule` the way the ledger
/// does: a validator with a rotation still pending is refused. Returns what was scheduled.
fn apply_rotations(schedule: &mut ValidatorSchedule, height: Height, ids: &[u64]) -> Vec<(Height, u16, u64)> {
    let mut scheduled = Vec::new();
    for id in ids.iter().filter(|id| *id & ROTATION_FLAG != 0) {
        let validator = (id & 0xffff) as u16;
        let generation = (id & !ROTATION_FLAG) >> 16;
        let pending = schedule.epochs().iter().any(|(first, set)| {
            *first > height.next()
                && schedule.at(first.prev()).key(ValidatorIndex(validator))
                    != set.key(ValidatorIndex(validator))
        });
        if pending || scheduled.iter().any(|(_, v, _)| *v == validator) {
            continue;
        }
        let first = tetrad_consensus::validators::activation_boundary(height, CHECKPOINT_INTERVAL).next();
        if schedule
            .rotate(first, ValidatorIndex(validator), rotated_key(validator, generation).public_key())
            .is_ok()
        {
            scheduled.push((first, validator, generation));
        }
    }
    scheduled
}

/// The outcome of one seed.
#[derive(Debug)]
pub struct Report {
    pub trace_hash: Digest,
    /// The first invariant broken, if any.
    pub violation: Option<String>,
    /// Heights committed by the slowest honest replica.
    pub min_honest_height: u64,
    pub max_height: u64,
    pub view_changes: u64,
    pub events: u64,
    /// Key rotations that took effect (epochs after genesis) in the checker's schedule.
    pub rotations: usize,
    /// Forged messages the key-compromise attacker sent.
    pub forgeries: u64,
    /// Empty batches idle primaries proposed to reach a checkpoint boundary.
    pub empty_fills: u64,
}

#[derive(Clone, Debug)]
struct Block {
    batch: Arc<Batch>,
    certificate: CommitCertificate,
}

struct Instance {
    index: ValidatorIndex,
    key: SecretKey,
    replica: Option<Replica>,
    /// Incremented on every crash, so timers of an earlier life are ignored.
    epoch: u64,
    store: BTreeMap<Vec<u8>, Vec<u8>>,
    chain: Vec<Block>,
    header: Digest,
    state: Digest,
    behavior: Option<Behavior>,
    twin: bool,
    group: u8,
    committed_requests: HashSet<u64>,
    /// Lowest request id this instance has not seen committed (scans start here).
    first_uncommitted: u64,
    in_flight: HashMap<u64, u64>,
    replay_memory: Vec<Arc<Vec<u8>>>,
    /// The validator schedule as this instance's executed prefix defines it.
    schedule: ValidatorSchedule,
    /// This instance's keys by first height (a rotation adds one).
    keys: Vec<(Height, SecretKey)>,
    /// This machine's clock skew (ms).
    clock_skew_ms: i64,
    /// The checker holds this instance to the honest invariants despite its behaviour.
    counted_honest: bool,
    /// View-changes this (Byzantine) instance received, by (view, signer), for adversaries
    /// that rebuild new-views or dig out stale certificates.
    seen_view_changes: BTreeMap<(u64, u16), Signed<ViewChange>>,
}

impl Instance {
    fn honest(&self) -> bool {
        (self.behavior.is_none() || self.counted_honest) && !self.twin
    }

    fn height(&self) -> u64 {
        self.chain.len() as u64
    }
}

enum Event {
    Deliver { to: usize, from: usize, bytes: Arc<Vec<u8>> },
    Timer { instance: usize, epoch: u64, timer: Timer },
    Blocks { to: usize, epoch: u64, from: ValidatorIndex, blocks: Vec<Block> },
    ClientTick,
    FaultTick,
    Restart { instance: usize },
    Heal,
}

struct Queued {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the earliest event first, then the first queued.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

pub struct World {
    scenario: Scenario,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Queued>,
    instances: Vec<Instance>,
    schedule: ValidatorSchedule,
    config: ReplicaConfig,
    drop_rate: f64,
    duplicate_rate: f64,
    one_way: Option<(u8, u8)>,
    healed: bool,
    issued: u64,
    /// Empty batches proposed by idle primaries (see `fill_to_checkpoint`).
    filled: u64,
    /// Rotation requests issued so far (valid request ids).
    rotations: HashSet<u64>,
    rotation_generation: u64,
    /// Heights whose rotations are in the global schedule (from the first honest execution).
    global_applied: u64,
    checker: Checker,
    trace: blake3::Hasher,
    verify_cache: HashMap<[u8; 32], Option<VerifiedMessage>>,
    events: u64,
    /// The highest stable checkpoint certificate any honest replica reached.
    latest_stable: Option<tetrad_consensus::CheckpointCertificate>,
    /// Validators whose genesis key an honest owner has erased (the attacker holds it).
    leaked: std::collections::BTreeSet<u16>,
    /// Forged view-changes and new-views the key-compromise attacker sent.
    pub(crate) forgeries: u64,
}

fn validator_key(index: u16) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..2].copy_from_slice(&index.to_le_bytes());
    seed[2] = 0x51;
    SecretKey::from_seed(seed)
}

/// The node's check of a proposal's transactions: issued client requests (or nothing).
pub fn valid_payload(batch: &Batch, issued: u64, rotations: &HashSet<u64>) -> bool {
    batch.payload.is_empty()
        || borsh::from_slice::<Vec<u64>>(&batch.payload)
            .is_ok_and(|ids| !ids.is_empty() && ids.iter().all(|id| *id < issued || rotations.contains(id)))
}

/// The "application": a batch is valid if its proposer is the primary of its view and its
/// payload lists client requests that were issued, or is empty: a new view's empty batch, or an
/// idle primary's fill up to the checkpoint boundary (which carries the primary's timestamp;
/// the node's backups accept an empty payload from the primary like any other).
pub fn valid_batch(batch: &Batch, set: &ValidatorSet, issued: u64, rotations: &HashSet<u64>) -> bool {
    if batch.proposer != set.primary(batch.view) {
        return false;
    }
    if batch.payload.is_empty() {
        return true;
    }
    match borsh::from_slice::<Vec<u64>>(&batch.payload) {
        Ok(ids) => !ids.is_empty() && ids.iter().all(|id| *id < issued || rotations.contains(id)),
        Err(_) => false,
    }
}

impl World {
    pub fn new(scenario: Scenario, seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let n = scenario.n;
        let genesis = Digest::of(format!("simulator/{n}").as_bytes());
        let keys: Vec<SecretKey> = (0..n).map(validator_key).collect();
        let set =
            ValidatorSet::new(genesis, keys.iter().map(SecretKey::public_key).collect()).expect("valid set");
        let schedule = ValidatorSchedule::new(set);
        let config = ReplicaConfig::new(
            CHECKPOINT_INTERVAL,
            WINDOW,
            VIEW_CHANGE_TIMEOUT_MS,
            VIEW_CHANGE_TIMEOUT_MAX_MS,
        );
        let drop_rate = scenario.drop_max * (rng.range(0, 100) as f64 / 100.0);
        let duplicate_rate = scenario.duplicate_max * (rng.range(0, 100) as f64 / 100.0);
        let mut instances = Vec::new();
        for index in 0..n {
            let behavior = scenario.byzantine.iter().find(|(i, _)| *i == index).map(|(_, b)| *b);
            let copies = if scenario.twins.contains(&index) { 2 } else { 1 };
            for copy in 0..copies {
                instances.push(Instance {
                    index: ValidatorIndex(index),
                    key: keys[usize::from(index)].clone(),
                    replica: None,
                    epoch: 0,
                    store: BTreeMap::new(),
                    chain: Vec::new(),
                    header: genesis,
                    state: genesis,
                    behavior,
                    twin: copies == 2,
                    counted_honest: behavior == Some(Behavior::Amnesia) && scenario.amnesia_counted_honest,
                    seen_view_changes: BTreeMap::new(),
                    group: copy,
                    committed_requests: HashSet::new(),
                    first_uncommitted: 0,
                    in_flight: HashMap::new(),
                    replay_memory: Vec::new(),
                    schedule: schedule.clone(),
                    keys: vec![(Height::GENESIS, keys[usize::from(index)].clone())],
                    clock_skew_ms: rng.range(0, 2 * CLOCK_SKEW_MAX_MS) as i64 - CLOCK_SKEW_MAX_MS as i64,
                });
            }
        }
        let honest_validators: Vec<bool> = (0..n)
            .map(|index| instances.iter().filter(|i| i.index.0 == index).all(Instance::honest))
            .collect();
        let checker = Checker::new(
            schedule.clone(),
            instances.iter().map(Instance::honest).collect(),
            honest_validators,
        );
        let mut world = World {
            scenario,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            instances,
            schedule,
            config,
            drop_rate,
            duplicate_rate,
            one_way: None,
            healed: false,
            issued: 0,
            filled: 0,
            rotations: HashSet::new(),
            rotation_generation: 0,
            global_applied: 0,
            checker,
            trace: blake3::Hasher::new(),
            verify_cache: HashMap::new(),
            events: 0,
            latest_stable: None,
            leaked: Default::default(),
            forgeries: 0,
        };
        for id in 0..world.instances.len() {
            world.instances[id].schedule.set_horizon(horizon(Height::GENESIS));
            world.boot(id);
        }
        world.push(0, Event::ClientTick);
        world.push(FAULT_TICK_MS, Event::FaultTick);
        world.push(world.scenario.chaos_ms, Event::Heal);
        world
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Queued { at, seq: self.seq, event });
    }

    /// Starts (or restarts) an instance from its persisted safety records and chain.
    fn boot(&mut self, id: usize) {
        if self.instances[id].behavior == Some(Behavior::Amnesia) {
            self.instances[id].store.clear();
        }
        let instance = &self.instances[id];
        let restored = restore(instance.store.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
            .expect("records decode");
        let mut replica = Replica::new(
            self.config.clone(),
            instance.index,
            instance.keys.clone(),
            Arc::new(instance.schedule.clone()),
            Height(instance.height()),
            restored,
        );
        let actions = replica.start(self.now);
        self.instances[id].replica = Some(replica);
        self.apply(id, actions);
    }

    fn crash(&mut self, id: usize) {
        let instance = &mut self.instances[id];
        if instance.replica.take().is_some() {
            instance.epoch += 1;
            instance.in_flight.clear();
            let at = self.now + self.rng.range(50, 800);
            self.push(at, Event::Restart { instance: id });
        }
    }

    /// Runs until the end of the scenario or the first violation.
    pub fn run(mut self) -> Report {
        let end = self.scenario.chaos_ms + self.scenario.heal_ms;
        while let Some(Queued { at, event, .. }) = self.queue.pop() {
            if at > end || self.checker.violation().is_some() {
                break;
            }
            self.now = at;
            self.events += 1;
            self.step(event);
        }
        self.checker.check_liveness(self.now, &self.heights());
        if self.checker.violation().is_some() && std::env::var_os("TETRAD_SIM_TRACE").is_some() {
            for (id, instance) in self.instances.iter().enumerate() {
                let state =
                    instance.replica.as_ref().map(Replica::describe).unwrap_or_else(|| "crashed".into());
                eprintln!("instance {id} (height {}): {state}", instance.height());
            }
        }
        let honest: Vec<u64> = self.instances.iter().filter(|i| i.honest()).map(Instance::height).collect();
        Report {
            trace_hash: Digest(*self.trace.finalize().as_bytes()),
            violation: self.checker.violation().map(str::to_string),
            min_honest_height: honest.iter().copied().min().unwrap_or(0),
            max_height: self.instances.iter().map(Instance::height).max().unwrap_or(0),
            view_changes: self
                .instances
                .iter()
                .filter_map(|i| i.replica.as_ref())
                .map(|r| r.counters().view_changes)
                .sum(),
            events: self.events,
            rotations: self.schedule.epochs().len() - 1,
            forgeries: self.forgeries,
            empty_fills: self.filled,
        }
    }

    fn heights(&self) -> Vec<u64> {
        self.instances.iter().map(Instance::height).collect()
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Deliver { to, from, bytes } => {
                self.trace.update(&[1]);
                self.trace.update(&self.now.to_le_bytes());
                self.trace.update(&(to as u64).to_le_bytes());
                self.trace.update(blake3::hash(&bytes).as_bytes());
                self.deliver(to, from, bytes);
            }
            Event::Timer { instance, epoch, timer } => {
                if self.instances[instance].epoch != epoch || self.instances[instance].replica.is_none() {
                    return;
                }
                self.trace.update(&[2]);
                self.trace.update(&(instance as u64).to_le_bytes());
                self.handle(instance, Input::Timer(timer));
            }
            Event::Blocks { to, epoch, from, blocks } => {
                if self.instances[to].epoch != epoch || self.instances[to].replica.is_none() {
                    return;
                }
                let verified: Vec<VerifiedBlock> = blocks
                    .into_iter()
                    .filter_map(|block| {
                        VerifiedBlock::verify(block.batch, block.certificate, &self.instances[to].schedule)
                            .ok()
                    })
                    .collect();
                self.trace.update(&[3]);
                self.trace.update(&(verified.len() as u64).to_le_bytes());
                self.handle(to, Input::Blocks { source: BlockSource::Peer(from), blocks: verified });
            }
            Event::ClientTick => self.client_tick(),
            Event::FaultTick => self.fault_tick(),
            Event::Restart { instance } => {
                if self.instances[instance].replica.is_none() {
                    self.trace.update(&[4]);
                    self.boot(instance);
                }
            }
            Event::Heal => self.heal(),
        }
    }

    /// The wall clock of instance `id`'s machine.
    fn wall_clock(&self, id: usize) -> u64 {
        (WALL_CLOCK_BASE_MS + self.now).saturating_add_signed(self.instances[id].clock_skew_ms)
    }

    fn handle(&mut self, id: usize, input: Input) {
        let now = self.now;
        let unix_ms = self.wall_clock(id);
        let Some(replica) = self.instances[id].replica.as_mut() else { return };
        // The driver passes the wall clock before every input, as the node's does.
        let clock = replica.handle(now, Input::WallClock { unix_ms });
        debug_assert!(clock.is_empty());
        let actions = replica.handle(now, input);
        self.apply(id, actions);
    }

    /// Carries out a replica's actions the way the node's driver does.
    fn apply(&mut self, id: usize, actions: Actions) {
        let Actions {
            persist,
            send_after_persist,
            send,
            committed,
            stable_checkpoints,
            timers,
            fetch_blocks,
            diverged,
        } = actions;
        // The simulated execution is deterministic: an honest replica never diverges.
        if let Some(divergence) = diverged
            && self.instances[id].honest()
        {
            self.checker.fail(format!("instance {id}: {divergence}"));
        }
        for write in &persist {
            for op in write.to_ops() {
                match op {
                    KeyValueOp::Put { key, value } => {
                        self.instances[id].store.insert(key, value);
                    }
                    KeyValueOp::DeleteRange { from, to } => {
                        let doomed: Vec<Vec<u8>> =
                            self.instances[id].store.range(from..to).map(|(k, _)| k.clone()).collect();
                        for key in doomed {
                            self.instances[id].store.remove(&key);
                        }
                    }
                }
            }
        }
        // A crash right after the records are durable, before the messages leave.
        if self.scenario.crashes && !self.healed && !persist.is_empty() && self.rng.chance(0.002) {
            self.crash(id);
            return;
        }
        for outgoing in send_after_persist.into_iter().chain(send) {
            if self.instances[id].honest() {
                self.checker.observe_sent(id, self.instances[id].index.0, &outgoing.message);
            }
            self.send(id, outgoing.to, outgoing.message);
        }
        let epoch = self.instances[id].epoch;
        for timer in timers {
            if let TimerAction::Set { timer, at_ms } = timer {
                self.push(at_ms.max(self.now), Event::Timer { instance: id, epoch, timer });
            }
        }
        for certificate in &stable_checkpoints {
            self.checker.check_checkpoint(id, certificate);
            let higher = self
                .latest_stable
                .as_ref()
                .is_none_or(|latest| latest.statement.height < certificate.statement.height);
            if self.instances[id].honest() && higher {
                self.latest_stable = Some(certificate.clone());
            }
        }
        for fetch in fetch_blocks {
            self.serve_blocks(id, fetch.peer, fetch.from, fetch.to);
        }
        for block in committed {
            if self.instances[id].replica.is_none() {
                break;
            }
            self.execute(id, block);
        }
    }

    /// Appends a committed block to the instance's chain and "executes" it.
    fn execute(&mut self, id: usize, block: tetrad_consensus::Committed) {
        let set = self.schedule.at(block.height).clone();
        let issued = self.issued;
        // Besides its contents, a committed batch's time may not run ahead of every clock.
        let latest_clock = WALL_CLOCK_BASE_MS + self.now + CLOCK_SKEW_MAX_MS;
        let valid = valid_batch(&block.batch, &set, issued, &self.rotations)
            && block.batch.timestamp_ms <= latest_clock + self.config.timestamp_skew_max_ms;
        self.checker.check_committed(self.now, id, &block, valid);
        let ids: Vec<u64> = borsh::from_slice::<Vec<u64>>(&block.batch.payload).unwrap_or_default();
        let instance = &mut self.instances[id];
        assert_eq!(block.height.0, instance.height() + 1, "delivery out of order");
        instance.header = Digest::of(
            &[instance.header.0.as_slice(), &block.height.0.to_le_bytes(), block.batch.digest().as_bytes()]
                .concat(),
        );
        instance.state = Digest::of(&[instance.state.0.as_slice(), &block.batch.payload].concat());
        for request in &ids {
            instance.committed_requests.insert(*request);
            instance.in_flight.remove(request);
        }
        while instance.committed_requests.contains(&instance.first_uncommitted) {
            instance.first_uncommitted += 1;
        }
        // Key rotations, as the ledger executes them, and the schedule horizon this height gives.
        let scheduled = apply_rotations(&mut instance.schedule, block.height, &ids);
        instance.schedule.set_horizon(horizon(block.height));
        let mut new_keys = Vec::new();
        for (first, validator, generation) in &scheduled {
            if *validator == instance.index.0 {
                // A replica with a stale key keeps its old one for the new epoch.
                let key = if instance.behavior == Some(Behavior::StaleKey) {
                    instance.keys[instance.keys.len() - 1].1.clone()
                } else {
                    rotated_key(*validator, *generation)
                };
                instance.keys.push((*first, key.clone()));
                new_keys.push((*first, key));
            }
        }
        let schedule = Arc::new(instance.schedule.clone());
        let (header_hash, state_root) = (instance.header, instance.state);
        instance.chain.push(Block { batch: block.batch, certificate: block.certificate });
        // The checker's schedule follows the first honest replica to execute each height.
        if self.instances[id].honest() && block.height.0 > self.global_applied {
            self.global_applied = block.height.0;
            apply_rotations(&mut self.schedule, block.height, &ids);
            self.checker.set_schedule(self.schedule.clone());
        }
        self.trace.update(&[5]);
        self.trace.update(header_hash.as_bytes());
        self.handle(id, Input::Schedule(schedule));
        for (from, key) in new_keys {
            self.handle(id, Input::AddKey { from, key });
        }
        self.handle(id, Input::Executed { height: block.height, header_hash, state_root });
    }

    fn reachable(&self, from: usize, to: usize) -> bool {
        if self.healed {
            return true;
        }
        if let Some(from_ms) = self.scenario.split_halves_from_ms {
            if self.now < from_ms {
                return true;
            }
            let half = |id: usize| self.instances[id].index.0 < self.scenario.n / 2;
            return half(from) == half(to);
        }
        if let Some(isolated) = self.scenario.isolated {
            let cut = |id: usize| self.instances[id].index.0 == isolated;
            return cut(from) == cut(to);
        }
        if !self.scenario.partitions && self.scenario.twins.is_empty() {
            return true;
        }
        let (a, b) = (self.instances[from].group, self.instances[to].group);
        if let Some((cut_from, cut_to)) = self.one_way {
            return !(a == cut_from && b == cut_to);
        }
        a == b
    }

    fn send(&mut self, from: usize, to: Recipient, message: Message) {
        let targets: Vec<usize> = (0..self.instances.len())
            .filter(|&target| {
                let index = self.instances[target].index;
                index != self.instances[from].index
                    && match to {
                        Recipient::All => true,
                        Recipient::One(one) => one == index,
                    }
            })
            .collect();
        let behavior = self.instances[from].behavior;
        for target in targets {
            if let Some((kind, rate)) = self.scenario.lose_kind
                && !self.healed
                && message.kind() == kind
                && self.rng.chance(rate)
            {
                continue;
            }
            let message = match behavior {
                Some(behavior) => match self.corrupt(from, target, behavior, &message) {
                    Some(message) => message,
                    None => continue,
                },
                None => message.clone(),
            };
            let bytes = Arc::new(message.encode());
            if behavior == Some(Behavior::DelayPrePrepares) && matches!(message, Message::PrePrepare { .. }) {
                // Just under the view-change timeout: slow, but never slow enough to be replaced.
                self.transmit_after(from, target, bytes, VIEW_CHANGE_TIMEOUT_MS * 9 / 10);
                continue;
            }
            self.transmit(from, target, bytes);
            if let Some(behavior) = behavior {
                self.misbehave(from, target, behavior);
            }
        }
    }

    /// Puts bytes on the wire: maybe dropped, maybe duplicated, always delayed.
    fn transmit(&mut self, from: usize, to: usize, bytes: Arc<Vec<u8>>) {
        self.transmit_after(from, to, bytes, 0);
    }

    /// [`Self::transmit`] with `extra_ms` of delay on top of the network's.
    fn transmit_after(&mut self, from: usize, to: usize, bytes: Arc<Vec<u8>>, extra_ms: u64) {
        if !self.reachable(from, to) {
            return;
        }
        if !self.healed && self.rng.chance(self.drop_rate) {
            return;
        }
        let copies = if !self.healed && self.rng.chance(self.duplicate_rate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self.rng.range(1, self.scenario.delay_max_ms) + extra_ms;
            self.push(self.now + delay, Event::Deliver { to, from, bytes: bytes.clone() });
        }
    }

    fn deliver(&mut self, to: usize, from: usize, bytes: Arc<Vec<u8>>) {
        if self.instances[to].replica.is_none() {
            return;
        }
        if self.instances[to].behavior == Some(Behavior::Replay)
            && self.instances[to].replay_memory.len() < REPLAY_MEMORY
        {
            self.instances[to].replay_memory.push(bytes.clone());
        }
        // Verification is pure in (bytes, schedule): cache by the bytes and the schedule's
        // epochs (identical for every honest replica that executed them); the horizon is
        // checked by `verify` itself, so a cached verdict is only reused within it.
        let schedule = &self.instances[to].schedule;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&bytes);
        hasher.update(&(schedule.epochs().len() as u64).to_le_bytes());
        hasher.update(&schedule.horizon().0.to_le_bytes());
        let key = *hasher.finalize().as_bytes();
        let verified = match self.verify_cache.get(&key) {
            Some(cached) => cached.clone(),
            None => {
                let verified =
                    Message::decode(&bytes).ok().and_then(|message| verify(message, schedule, WINDOW).ok());
                if self.verify_cache.len() >= VERIFY_CACHE_MAX {
                    self.verify_cache.clear();
                }
                self.verify_cache.insert(key, verified.clone());
                verified
            }
        };
        let Some(verified) = verified else {
            self.checker.count_rejected();
            return;
        };
        // The node's check of a proposal's transactions, before the replica sees it (the
        // batch's metadata is the replica's to check).
        if let Message::PrePrepare { batch, .. } = verified.message()
            && !valid_payload(batch, self.issued, &self.rotations)
        {
            self.checker.count_rejected();
            return;
        }
        if self.instances[to].behavior.is_some() {
            self.remember_view_changes(to, verified.message());
        }
        let from = self.instances[from].index;
        self.handle(to, Input::Message { from, message: verified });
    }

    /// A state-transfer request: the first live, reachable instance of `peer` answers from
    /// its chain after a network delay. A forging peer tampers with what it serves.
    fn serve_blocks(&mut self, id: usize, peer: ValidatorIndex, from: Height, to: Height) {
        let server = (0..self.instances.len()).find(|&s| {
            self.instances[s].index == peer
                && self.instances[s].replica.is_some()
                && self.reachable(id, s)
                && self.reachable(s, id)
        });
        let Some(server) = server else { return };
        // A view churner's commits would reach the others inside the certificates it serves.
        if self.instances[server].behavior == Some(Behavior::ViewChurn) {
            return;
        }
        if !self.healed && self.rng.chance(self.drop_rate) {
            return;
        }
        let chain = &self.instances[server].chain;
        let start = (from.0.max(1) - 1) as usize;
        let end = (to.0 as usize).min(chain.len());
        let mut blocks: Vec<Block> = if start < end { chain[start..end].to_vec() } else { Vec::new() };
        if self.instances[server].behavior == Some(Behavior::LyingSync) {
            // Genuine blocks, but not the ones asked for: far ahead, shifted, or none at all.
            let length = chain.len();
            blocks = match self.rng.range(0, 2) {
                0 => chain[end.min(length)..length.min(end + 300)].to_vec(),
                1 => chain[start.saturating_sub(8)..end.saturating_sub(8).max(start.saturating_sub(8))]
                    .to_vec(),
                _ => Vec::new(),
            };
        }
        if self.instances[server].behavior == Some(Behavior::Forge) {
            for block in &mut blocks {
                let mut batch = (*block.batch).clone();
                batch.timestamp_ms ^= 1;
                block.batch = Arc::new(batch);
            }
        }
        let epoch = self.instances[id].epoch;
        let delay = self.rng.range(1, self.scenario.delay_max_ms * 2);
        self.push(self.now + delay, Event::Blocks { to: id, epoch, from: peer, blocks });
    }

    fn client_tick(&mut self) {
        self.push(self.now + CLIENT_TICK_MS, Event::ClientTick);
        if self.scenario.key_compromise && self.now % 100 < CLIENT_TICK_MS {
            self.key_compromise_attack();
        }
        // New requests arrive throughout the run, so progress is always possible.
        let arrivals = self.rng.range(1, 3);
        let every = self.scenario.request_every_ms;
        if every == 0 || self.now % every < CLIENT_TICK_MS {
            self.issued += arrivals;
        }
        let every = self.scenario.rotation_every_ms;
        if every > 0 && self.now > 0 && self.now % every < CLIENT_TICK_MS {
            // A third of the rotations are of the current primary.
            let n = u64::from(self.scenario.n);
            let validator = if self.rng.chance(0.33) {
                self.instances
                    .iter()
                    .filter_map(|i| i.replica.as_ref())
                    .map(|r| u64::from(r.primary().0))
                    .max()
                    .unwrap_or(0)
            } else {
                self.rng.range(0, n - 1)
            };
            self.rotation_generation += 1;
            self.rotations.insert(ROTATION_FLAG | self.rotation_generation << 16 | validator);
        }
        for id in 0..self.instances.len() {
            let Some(replica) = self.instances[id].replica.as_ref() else { continue };
            let instance = &self.instances[id];
            // Bounded: when nothing commits for minutes, requests pile up by the ten thousand.
            let mut pending: Vec<u64> = (instance.first_uncommitted..self.issued)
                .filter(|request| !instance.committed_requests.contains(request))
                .take(REQUESTS_PER_BATCH_MAX * 64)
                .collect();
            let mut rotations: Vec<u64> = self
                .rotations
                .iter()
                .filter(|request| !instance.committed_requests.contains(request))
                .copied()
                .collect();
            rotations.sort();
            pending.extend(rotations);
            let waiting = !pending.is_empty();
            let can_propose = replica.can_propose();
            self.handle(id, Input::RequestsPending(waiting));
            if !can_propose {
                continue;
            }
            let now = self.now;
            let instance = &mut self.instances[id];
            instance.in_flight.retain(|_, at| now.saturating_sub(*at) < 4 * VIEW_CHANGE_TIMEOUT_MS);
            let batch: Vec<u64> = pending
                .into_iter()
                .filter(|request| !instance.in_flight.contains_key(request))
                .take(REQUESTS_PER_BATCH_MAX)
                .collect();
            if batch.is_empty() {
                if !waiting {
                    self.fill_to_checkpoint(id);
                }
                continue;
            }
            for request in &batch {
                instance.in_flight.insert(*request, now);
            }
            let payload = borsh::to_vec(&batch).expect("encode");
            // Twins and distinct instances propose with distinct timestamps, so their batches differ.
            let timestamp_ms = self.wall_clock(id) + id as u64;
            self.handle(id, Input::Propose { payload, timestamp_ms });
        }
    }

    /// An idle primary proposes empty batches up to the next checkpoint boundary, as the node's
    /// driver does (without its quiet delay: here the fill races the next client tick).
    fn fill_to_checkpoint(&mut self, id: usize) {
        let Some(target) = self.instances[id].replica.as_ref().and_then(|r| r.checkpoint_fill_target())
        else {
            return;
        };
        loop {
            let Some(replica) = self.instances[id].replica.as_ref() else { return };
            let next = replica.next_height();
            if !replica.can_propose() || next > target {
                return;
            }
            let timestamp_ms = self.wall_clock(id) + id as u64;
            self.handle(id, Input::Propose { payload: Vec::new(), timestamp_ms });
            self.filled += 1;
            if self.instances[id].replica.as_ref().is_none_or(|r| r.next_height() == next) {
                return;
            }
        }
    }

    fn fault_tick(&mut self) {
        if self.healed {
            return;
        }
        let next = self.now + FAULT_TICK_MS + self.rng.range(0, FAULT_TICK_MS);
        self.push(next, Event::FaultTick);
        if self.scenario.partitions || !self.scenario.twins.is_empty() {
            self.repartition();
        }
        // Amnesiacs crash at half the fault ticks (and forget their safety records).
        for id in 0..self.instances.len() {
            if self.instances[id].behavior == Some(Behavior::Amnesia)
                && self.instances[id].replica.is_some()
                && self.rng.chance(0.5)
            {
                self.crash(id);
            }
        }
        if self.scenario.crashes && self.rng.chance(0.3) {
            let alive: Vec<usize> = (0..self.instances.len())
                .filter(|&id| self.instances[id].replica.is_some() && self.instances[id].behavior.is_none())
                .collect();
            if let Some(victim) = self.rng.pick(&alive) {
                self.crash(victim);
            }
        }
    }

    /// Random split, isolated primary, one-way cut, or healed; twins always apart.
    fn repartition(&mut self) {
        self.one_way = None;
        let count = self.instances.len();
        let choice = self.rng.range(0, 4);
        let primary = self
            .instances
            .iter()
            .filter_map(|i| i.replica.as_ref())
            .map(|r| r.primary())
            .max_by_key(|p| p.0)
            .unwrap_or(ValidatorIndex(0));
        for id in 0..count {
            let group = match choice {
                0 => 0,
                1 => u8::from(self.instances[id].index == primary),
                _ => (self.rng.next_u64() % 2) as u8,
            };
            self.instances[id].group = group;
        }
        if choice == 3 {
            self.one_way = Some((0, 1));
        }
        // Twins: the two copies of a validator always sit in different partitions.
        let mut seen = HashSet::new();
        for id in 0..count {
            if self.instances[id].twin {
                let index = self.instances[id].index;
                let first = seen.insert(index);
                self.instances[id].group = if first { 0 } else { 1 };
                self.one_way = None;
            }
        }
    }

    fn heal(&mut self) {
        self.healed = true;
        self.one_way = None;
        for id in 0..self.instances.len() {
            self.instances[id].group = 0;
            if self.instances[id].replica.is_none() {
                self.boot(id);
            }
        }
        if std::env::var_os("TETRAD_SIM_DEBUG").is_some() {
            for instance in &self.instances {
                let state = instance.replica.as_ref().map(Replica::describe).unwrap_or_default();
                eprintln!("at heal {} ms: {}", self.now, &state[..state.len().min(200)]);
            }
        }
        let heights = self.heights();
        self.checker.healed(self.now, self.scenario.liveness_bound_ms, &heights);
    }

    /// Rewrites (or suppresses) a message on its way from a Byzantine instance.
    fn corrupt(&mut self, from: usize, to: usize, behavior: Behavior, message: &Message) -> Option<Message> {
        let key = self.instances[from].key.clone();
        let me = self.instances[from].index;
        match (behavior, message) {
            (Behavior::Silent, _) => None,
            (
                Behavior::ViewChurn,
                Message::PrePrepare { .. } | Message::Prepare(_) | Message::Commit(_) | Message::Batch { .. },
            ) => None,
            (Behavior::Equivocate, Message::PrePrepare { pre_prepare, batch }) if to % 2 == 1 => {
                let mut other = (**batch).clone();
                other.timestamp_ms = other.timestamp_ms.wrapping_add(1 + to as u64);
                let other = Arc::new(other);
                let body = PrePrepare { digest: other.digest(), ..pre_prepare.body.clone() };
                let set = self.schedule.at(body.height);
                Some(Message::PrePrepare { pre_prepare: Signed::sign(body, me, &key, set), batch: other })
            }
            (Behavior::BadMetadata, Message::PrePrepare { pre_prepare, batch }) => {
                let mut other = (**batch).clone();
                let n = u64::from(self.scenario.n);
                match self.rng.range(0, 4) {
                    0 => other.proposer = ValidatorIndex(((u64::from(me.0) + 1) % n) as u16),
                    1 => other.view = View(other.view.0 + n),
                    2 => other.timestamp_ms = u64::MAX,
                    3 => other.timestamp_ms = self.wall_clock(from) + 10 * self.config.timestamp_skew_max_ms,
                    _ => other.timestamp_ms = self.wall_clock(from) - 10 * self.config.timestamp_skew_max_ms,
                }
                let other = Arc::new(other);
                let body = PrePrepare { digest: other.digest(), ..pre_prepare.body.clone() };
                let set = self.schedule.at(body.height);
                Some(Message::PrePrepare { pre_prepare: Signed::sign(body, me, &key, set), batch: other })
            }
            (Behavior::StaleCertificates, Message::ViewChange(view_change)) if view_change.signer == me => {
                Some(self.stale_view_change(from, view_change))
            }
            (Behavior::WithholdNewView, Message::NewView(new_view)) if new_view.signer == me => None,
            (Behavior::SplitNewView, Message::NewView(new_view)) if new_view.signer == me => {
                Some(self.split_new_view(from, to, new_view))
            }
            (Behavior::WithholdPrePrepares, Message::PrePrepare { .. }) if to.is_multiple_of(2) => None,
            (Behavior::DoubleVote, Message::Prepare(prepare)) if self.rng.chance(0.5) => {
                let body = Prepare {
                    digest: Digest::of(&self.rng.next_u64().to_le_bytes()),
                    ..prepare.body.clone()
                };
                let set = self.schedule.at(body.height);
                Some(Message::Prepare(Signed::sign(body, me, &key, set)))
            }
            (Behavior::DoubleVote, Message::Commit(commit)) if self.rng.chance(0.5) => {
                let mut body = commit.body.clone();
                body.digest = Digest::of(&self.rng.next_u64().to_le_bytes());
                let set = self.schedule.at(body.height);
                Some(Message::Commit(Signed::sign(body, me, &key, set)))
            }
            _ => Some(message.clone()),
        }
    }

    /// Extra traffic from a Byzantine instance, alongside what it sends.
    fn misbehave(&mut self, from: usize, to: usize, behavior: Behavior) {
        match behavior {
            Behavior::Forge if self.rng.chance(0.2) => {
                let choice = self.rng.range(0, 2);
                let bytes = match choice {
                    0 => (0..self.rng.range(0, 300)).map(|_| self.rng.next_u64() as u8).collect(),
                    1 => self.forged_commit(from, true),
                    _ => self.forged_commit(from, false),
                };
                self.transmit(from, to, Arc::new(bytes));
            }
            Behavior::Replay if self.rng.chance(0.3) => {
                let memory = &self.instances[from].replay_memory;
                if !memory.is_empty() {
                    let pick = (self.rng.next_u64() % memory.len() as u64) as usize;
                    let bytes = memory[pick].clone();
                    self.transmit(from, to, bytes);
                }
            }
            Behavior::FakeViewChange if self.rng.chance(0.05) => {
                let message = self.fabricated_view_change(from);
                self.transmit(from, to, Arc::new(message.encode()));
            }
            Behavior::DoubleVote if self.rng.chance(0.1) => {
                // A second commit vote for a made-up digest at some height in the window.
                let bytes = self.forged_commit(from, true);
                self.transmit(from, to, Arc::new(bytes));
            }
            _ => {}
        }
    }

    /// A commit for a random digest: validly signed by the forger (`valid`), or claiming to be
    /// another validator with the forger's signature.
    fn forged_commit(&mut self, from: usize, valid: bool) -> Vec<u8> {
        let me = self.instances[from].index;
        let key = self.instances[from].key.clone();
        let view = self.instances[from].replica.as_ref().map(|r| r.view()).unwrap_or_default();
        let height = Height(self.rng.range(1, self.instances[from].height() + WINDOW));
        let body =
            tetrad_consensus::Commit { view, height, digest: Digest::of(&self.rng.next_u64().to_le_bytes()) };
        let set = self.schedule.at(height);
        let mut signed = Signed::sign(body, me, &key, set);
        if !valid {
            signed.signer = ValidatorIndex(((me.0 as u64 + 1) % self.scenario.n as u64) as u16);
        }
        Message::Commit(signed).encode()
    }

    /// A view-change for the next view whose prepared certificate is made up: the forger signs
    /// the pre-prepare and every prepare itself.
    fn fabricated_view_change(&mut self, from: usize) -> Message {
        let me = self.instances[from].index;
        let key = self.instances[from].key.clone();
        let view = self.instances[from].replica.as_ref().map(|r| r.view()).unwrap_or_default();
        let low = self.instances[from].replica.as_ref().map(|r| r.low_watermark()).unwrap_or_default();
        let height = low.next();
        let set = self.schedule.at(height).clone();
        let digest = Digest::of(&self.rng.next_u64().to_le_bytes());
        let pre_prepare = Signed::sign(PrePrepare { view, height, digest }, set.primary(view), &key, &set);
        let prepare = Signed::sign(Prepare { view, height, digest }, me, &key, &set);
        let prepares = (0..set.n() as u16)
            .map(ValidatorIndex)
            .filter(|i| *i != set.primary(view))
            .take(set.quorum() - 1)
            .map(|i| (i, prepare.signature))
            .collect();
        let body = ViewChange {
            new_view: View(view.0 + 1),
            checkpoint: None,
            prepared: vec![PreparedCertificate { pre_prepare, prepares }],
        };
        Message::ViewChange(Signed::sign(body, me, &key, &set))
    }
}

/// Runs one seed of a scenario.
pub fn run(scenario: &Scenario, seed: u64) -> Report {
    World::new(scenario.clone(), seed).run()
}
