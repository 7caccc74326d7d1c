//! The fault schedule: a pure function of (seed, duration, fault kinds, network shape), so the
//! same seed replays the same faults. Targets that depend on the running network (the primary
//! of the current view) are named by role here and resolved when the fault is injected.

use std::fmt;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::rng::Rng;

/// Every kind of fault the campaign injects, in the order `--faults all` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The primary cut off from every other node (both directions).
    IsolatePrimary,
    /// Two validators (and maybe the full node) on each side: no quorum anywhere.
    Split,
    /// One node hears nothing from its peers (or cannot reach them) while the other direction
    /// still works.
    OneWay,
    /// Per-link packet loss, duplication, a throttled (slow) link, and delay with jitter (which
    /// reorders packets).
    Link,
    /// SIGSTOP of the primary, SIGCONT at the end.
    PausePrimary,
    /// kill -9 of a random node (validator or full node), restarted at the end.
    Kill,
    /// kill -9 of the primary, restarted at the end.
    KillPrimary,
    /// f + 1 validators killed at once: the chain must stop (and never fork), then resume.
    CrashQuorum,
    /// Every node killed with -9, all restarted.
    RestartAll,
    /// One node restarted with its wall clock skewed by minutes (libfaketime), forward or back,
    /// then restarted with the right time.
    Clock,
    /// The small filesystem that holds one node's data/ filled up, then space given back.
    DiskFull,
    /// Nothing injected for a while: the network as it is (with `--byzantine`, the Byzantine
    /// validator alone). Not part of `all` (so `all` keeps every seed's schedule).
    Quiet,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::IsolatePrimary,
        FaultKind::Split,
        FaultKind::OneWay,
        FaultKind::Link,
        FaultKind::PausePrimary,
        FaultKind::Kill,
        FaultKind::KillPrimary,
        FaultKind::CrashQuorum,
        FaultKind::RestartAll,
        FaultKind::Clock,
        FaultKind::DiskFull,
    ];

    /// Kinds that may be named but are not part of `all`.
    pub const EXTRA: [FaultKind; 1] = [FaultKind::Quiet];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::IsolatePrimary => "isolate-primary",
            FaultKind::Split => "split",
            FaultKind::OneWay => "one-way",
            FaultKind::Link => "link",
            FaultKind::PausePrimary => "pause-primary",
            FaultKind::Kill => "kill",
            FaultKind::KillPrimary => "kill-primary",
            FaultKind::CrashQuorum => "crash-quorum",
            FaultKind::RestartAll => "restart-all",
            FaultKind::Clock => "clock",
            FaultKind::DiskFull => "disk-full",
            FaultKind::Quiet => "quiet",
        }
    }

    /// `all`, or a comma-separated list of names.
    pub fn parse_list(list: &str) -> Result<Vec<FaultKind>> {
        if list.trim() == "all" {
            return Ok(FaultKind::ALL.to_vec());
        }
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim).filter(|name| !name.is_empty()) {
            let Some(kind) = FaultKind::ALL.iter().chain(&FaultKind::EXTRA).find(|kind| kind.name() == name)
            else {
                let known: Vec<&str> =
                    FaultKind::ALL.iter().chain(&FaultKind::EXTRA).map(|kind| kind.name()).collect();
                bail!("--faults: unknown fault {name:?}; known: all, {}", known.join(", "));
            };
            if !kinds.contains(kind) {
                kinds.push(*kind);
            }
        }
        if kinds.is_empty() {
            bail!("--faults: no fault named");
        }
        Ok(kinds)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who a fault hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Target {
    /// The primary of the current view, asked of the validators when the fault starts.
    Primary,
    /// These nodes (indices into the network: validators first, then full nodes).
    Nodes { nodes: Vec<usize> },
    /// Two sides that cannot reach each other.
    Sides { left: Vec<usize>, right: Vec<usize> },
    /// One node; `inbound` true: it receives nothing from its peers; false: it sends nothing.
    OneWay { node: usize, inbound: bool },
    /// Links between pairs of nodes, each with its own damage.
    Links { links: Vec<LinkDamage> },
    /// Every node.
    All,
    /// One node's wall clock off by `skew_s` seconds.
    Clock { node: usize, skew_s: i64 },
    /// The node whose data/ is on the campaign's small filesystem.
    SmallDisk,
}

/// What happens on one link (both directions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkDamage {
    pub a: usize,
    pub b: usize,
    /// Packets dropped, percent.
    pub loss_percent: u64,
    /// Packets sent twice, percent.
    pub duplicate_percent: u64,
    /// The link throttled to this many kbit/s (0: not throttled); queueing makes it slow.
    pub throttle_kbit: u64,
    /// Every packet held this long (0: not delayed), each way, by `tetrad-chaos delay`.
    pub delay_ms: u64,
    /// Plus or minus up to this, uniform, per packet: packets closer together than the jitter
    /// come out of order.
    pub jitter_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub index: usize,
    pub kind: FaultKind,
    pub target: Target,
    /// How long the fault lasts before it is healed.
    pub duration_ms: u64,
    /// Quiet time after recovery before the next fault.
    pub gap_ms: u64,
}

/// The shape of the network a schedule is for.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub validators: usize,
    pub full_nodes: usize,
}

impl Shape {
    pub fn nodes(&self) -> usize {
        self.validators + self.full_nodes
    }

    /// f of n = 3f + 1.
    pub fn f(&self) -> usize {
        (self.validators - 1) / 3
    }
}

/// The faults of a campaign of `duration_ms`: rounds of every kind in `kinds`, each round in a
/// seeded order, until the faults and the gaps between them fill the duration (the campaign
/// stops injecting once `duration_ms` has passed, so the tail may not run). The first round
/// always runs whole, so every kind named is injected at least once.
pub fn generate(seed: u64, duration_ms: u64, kinds: &[FaultKind], shape: Shape) -> Vec<Fault> {
    assert!(!kinds.is_empty(), "no fault kinds");
    assert!(shape.validators >= 4, "a schedule needs n >= 4 validators");
    let mut rng = Rng::new(seed);
    // Link delays come from a stream of their own, so that adding them left every other draw
    // (and so each seed's faults) as it was.
    let mut delays = Rng::new(seed).fork(DELAY_SALT);
    let mut faults = Vec::new();
    let mut planned_ms = 0;
    let mut round = 0;
    loop {
        let mut order = kinds.to_vec();
        rng.shuffle(&mut order);
        for kind in order {
            if round > 0 && planned_ms >= duration_ms {
                return faults;
            }
            let fault = make(&mut rng, &mut delays, faults.len(), kind, shape);
            // No time is planned for recoveries: the campaign stops injecting at `duration` anyway, and a
            // schedule that ran out early would make a campaign shorter than asked.
            planned_ms += fault.duration_ms + fault.gap_ms;
            faults.push(fault);
        }
        round += 1;
        if planned_ms >= duration_ms {
            return faults;
        }
    }
}

/// Salt of the link delays' random stream.
const DELAY_SALT: u64 = 0xde1a7;

/// A link's delay and jitter: delayed on about half the damaged links, 20-200 ms, jitter up to
/// the delay.
fn link_delay(delays: &mut Rng) -> (u64, u64) {
    if !delays.chance(50) {
        return (0, 0);
    }
    let delay_ms = delays.range(20, 200);
    (delay_ms, delays.range(0, delay_ms))
}

fn make(rng: &mut Rng, delays: &mut Rng, index: usize, kind: FaultKind, shape: Shape) -> Fault {
    let nodes = shape.nodes();
    let validators = shape.validators;
    let gap_ms = rng.range(500, 2_000);
    let (target, duration_ms) = match kind {
        // Some partitions outlast many view-change timeouts (the campaign's genesis uses 1 s).
        FaultKind::IsolatePrimary => (Target::Primary, rng.range(2_000, 12_000)),
        FaultKind::Split => {
            let mut order: Vec<usize> = (0..validators).collect();
            rng.shuffle(&mut order);
            let half = validators / 2;
            let mut left = order[..half].to_vec();
            let mut right = order[half..].to_vec();
            for full in validators..nodes {
                if rng.chance(50) { left.push(full) } else { right.push(full) }
            }
            left.sort_unstable();
            right.sort_unstable();
            (Target::Sides { left, right }, rng.range(2_000, 12_000))
        }
        FaultKind::OneWay => {
            let node = rng.below(nodes as u64) as usize;
            (Target::OneWay { node, inbound: rng.chance(50) }, rng.range(2_000, 8_000))
        }
        FaultKind::Link => {
            let mut links = Vec::new();
            for a in 0..nodes {
                for b in a + 1..nodes {
                    if rng.chance(40) {
                        let (delay_ms, jitter_ms) = link_delay(delays);
                        links.push(LinkDamage {
                            a,
                            b,
                            loss_percent: rng.range(0, 30),
                            duplicate_percent: rng.range(0, 20),
                            throttle_kbit: if rng.chance(30) { rng.range(64, 512) } else { 0 },
                            delay_ms,
                            jitter_ms,
                        });
                    }
                }
            }
            if links.is_empty() {
                let (delay_ms, jitter_ms) = link_delay(delays);
                links.push(LinkDamage {
                    a: 0,
                    b: 1,
                    loss_percent: 20,
                    duplicate_percent: 10,
                    throttle_kbit: 0,
                    delay_ms,
                    jitter_ms,
                });
            }
            (Target::Links { links }, rng.range(3_000, 10_000))
        }
        FaultKind::PausePrimary => (Target::Primary, rng.range(1_000, 8_000)),
        FaultKind::Kill => {
            (Target::Nodes { nodes: vec![rng.below(nodes as u64) as usize] }, rng.range(500, 5_000))
        }
        FaultKind::KillPrimary => (Target::Primary, rng.range(500, 5_000)),
        FaultKind::CrashQuorum => {
            let mut order: Vec<usize> = (0..validators).collect();
            rng.shuffle(&mut order);
            let mut crashed = order[..shape.f() + 1].to_vec();
            crashed.sort_unstable();
            (Target::Nodes { nodes: crashed }, rng.range(3_000, 8_000))
        }
        FaultKind::RestartAll => (Target::All, rng.range(500, 3_000)),
        FaultKind::Clock => {
            let node = rng.below(nodes as u64) as usize;
            let minutes = rng.range(1, 10) as i64;
            let skew_s = if rng.chance(50) { minutes * 60 } else { -minutes * 60 };
            (Target::Clock { node, skew_s }, rng.range(3_000, 10_000))
        }
        FaultKind::DiskFull => (Target::SmallDisk, rng.range(2_000, 8_000)),
        FaultKind::Quiet => (Target::All, rng.range(3_000, 10_000)),
    };
    Fault { index, kind, target, duration_ms, gap_ms }
}

impl Fault {
    /// One line for the log, with node names.
    pub fn describe(&self, names: &[String]) -> String {
        let name = |index: &usize| names.get(*index).cloned().unwrap_or_else(|| format!("#{index}"));
        let list = |nodes: &[usize]| nodes.iter().map(name).collect::<Vec<_>>().join(" ");
        let target = match &self.target {
            Target::Primary => "the primary".to_string(),
            Target::Nodes { nodes } => list(nodes),
            Target::Sides { left, right } => format!("[{} | {}]", list(left), list(right)),
            Target::OneWay { node, inbound } => {
                format!("{} {}", name(node), if *inbound { "hears nothing" } else { "sends nothing" })
            }
            Target::Links { links } => links
                .iter()
                .map(|link| {
                    format!(
                        "{}-{} loss {}% dup {}%{}{}",
                        name(&link.a),
                        name(&link.b),
                        link.loss_percent,
                        link.duplicate_percent,
                        if link.throttle_kbit > 0 {
                            format!(" {} kbit/s", link.throttle_kbit)
                        } else {
                            String::new()
                        },
                        if link.delay_ms > 0 {
                            format!(" delay {}±{} ms", link.delay_ms, link.jitter_ms)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            Target::All => "every node".to_string(),
            Target::Clock { node, skew_s } => format!("{} clock {skew_s:+} s", name(node)),
            Target::SmallDisk => "the node on the small disk".to_string(),
        };
        format!("#{} {} {} for {:.1} s", self.index, self.kind, target, self.duration_ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape { validators: 4, full_nodes: 1 };

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let first = generate(42, 120_000, &FaultKind::ALL, SHAPE);
        assert_eq!(first, generate(42, 120_000, &FaultKind::ALL, SHAPE));
        assert_ne!(first, generate(43, 120_000, &FaultKind::ALL, SHAPE));
    }

    #[test]
    fn every_kind_named_is_injected_even_in_a_short_campaign() {
        for seed in 0..20 {
            let faults = generate(seed, 1_000, &FaultKind::ALL, SHAPE);
            for kind in FaultKind::ALL {
                assert!(faults.iter().any(|fault| fault.kind == kind), "seed {seed}: no {kind}");
            }
        }
    }

    #[test]
    fn crash_quorum_kills_f_plus_one_validators_and_split_leaves_no_quorum() {
        for seed in 0..50 {
            for fault in generate(seed, 200_000, &FaultKind::ALL, SHAPE) {
                match (&fault.kind, &fault.target) {
                    (FaultKind::CrashQuorum, Target::Nodes { nodes }) => {
                        assert_eq!(nodes.len(), 2);
                        assert!(nodes.iter().all(|node| *node < 4));
                    }
                    (FaultKind::Split, Target::Sides { left, right }) => {
                        assert_eq!(left.iter().filter(|node| **node < 4).count(), 2);
                        assert_eq!(right.iter().filter(|node| **node < 4).count(), 2);
                        assert_eq!(left.len() + right.len(), 5);
                    }
                    (FaultKind::CrashQuorum | FaultKind::Split, target) => panic!("{target:?}"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn about_half_the_damaged_links_are_delayed_within_bounds() {
        let (mut links, mut delayed) = (0, 0);
        for seed in 0..100 {
            for fault in generate(seed, 60_000, &[FaultKind::Link], SHAPE) {
                let Target::Links { links: damaged } = &fault.target else { panic!("{fault:?}") };
                for link in damaged {
                    links += 1;
                    if link.delay_ms > 0 {
                        delayed += 1;
                        assert!((20..=200).contains(&link.delay_ms), "{link:?}");
                        assert!(link.jitter_ms <= link.delay_ms, "{link:?}");
                        assert!(fault.describe(&[]).contains(&format!("delay {}±", link.delay_ms)));
                    } else {
                        assert_eq!(link.jitter_ms, 0);
                    }
                }
            }
        }
        assert!(delayed * 10 > links * 4 && delayed * 10 < links * 6, "{delayed} of {links} delayed");
    }

    #[test]
    fn link_delays_leave_the_rest_of_a_schedule_as_it_was() {
        // The faults of seed 1 before delays were added (kinds, targets, durations, gaps):
        // the delays come from a stream of their own.
        let undelayed = |faults: Vec<Fault>| -> Vec<Fault> {
            faults
                .into_iter()
                .map(|mut fault| {
                    if let Target::Links { links } = &mut fault.target {
                        for link in links {
                            link.delay_ms = 0;
                            link.jitter_ms = 0;
                        }
                    }
                    fault
                })
                .collect()
        };
        let faults = generate(1, 60_000, &FaultKind::ALL, SHAPE);
        let names: Vec<String> = ["v0", "v1", "v2", "v3", "full0"].map(String::from).to_vec();
        let lines: Vec<String> = undelayed(faults).iter().map(|fault| fault.describe(&names)).collect();
        assert_eq!(lines, SEED_1_BEFORE_DELAYS);
    }

    /// `tetrad-chaos schedule --seed 1 --duration 60` at dce6a78 (before link delays).
    const SEED_1_BEFORE_DELAYS: &[&str] = &[
        "#0 crash-quorum v0 v1 for 6.9 s",
        "#1 kill-primary the primary for 1.4 s",
        "#2 pause-primary the primary for 4.2 s",
        "#3 split [v1 v3 | v0 v2 full0] for 3.6 s",
        "#4 isolate-primary the primary for 3.2 s",
        "#5 one-way v1 sends nothing for 2.7 s",
        "#6 kill v3 for 3.3 s",
        "#7 restart-all every node for 2.8 s",
        "#8 link v1-full0 loss 27% dup 1%, v2-v3 loss 12% dup 17%, v2-full0 loss 27% dup 6% for 4.2 s",
        "#9 disk-full the node on the small disk for 7.3 s",
        "#10 clock v0 clock +600 s for 6.7 s",
    ];

    #[test]
    fn fault_lists_parse() {
        assert_eq!(FaultKind::parse_list("all").ok(), Some(FaultKind::ALL.to_vec()));
        assert_eq!(
            FaultKind::parse_list("kill,split,kill").ok(),
            Some(vec![FaultKind::Kill, FaultKind::Split])
        );
        assert!(FaultKind::parse_list("kill,meteor").is_err());
    }
}
