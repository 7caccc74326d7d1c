//! `tetrad-chaos delay`: a userspace link delayer for kernels without netem.
//!
//! Run inside the sending node's namespace (`ip netns exec NS tetrad-chaos delay --queue N
//! ...`) with a rule there that hands it the packets for one peer:
//! `iptables -A OUTPUT -d PEER -j NFQUEUE --queue-num N --queue-bypass` (bypass: with no
//! delayer bound, the packets flow). Every packet is held for the delay plus or minus a uniform
//! jitter and then accepted. Verdicts go out in release-time order, not arrival order, so a
//! jitter larger than the gap between two packets reorders them: that is the reordering fault.
//!
//! Bounded: with more than [`MAX_PENDING`] packets held, a new one is accepted at once (and
//! counted). On SIGTERM or SIGINT every held packet is accepted at once, the queue unbound, and
//! the counters printed on stdout (one line, `delay: ...`). The first line on stdout,
//! `delay: bound queue N`, says the delayer is ready (the campaign adds its rule after it).

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeSet, BinaryHeap};
use std::io::{ErrorKind, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::rng::Rng;

/// Packets held at most; past this a packet is accepted at once.
pub const MAX_PENDING: usize = 4096;
/// The kernel's queue length for our queue (packets handed to us and not yet given a verdict);
/// above what we hold, so that the bound above is the one that acts. Fail-open: a full kernel
/// queue accepts rather than drops.
const KERNEL_QUEUE: u32 = 2 * MAX_PENDING as u32;
/// Longest sleep between two looks at the socket (the delay is late by at most about this).
const POLL: Duration = Duration::from_millis(1);
/// Packets taken from the socket before due packets are released again.
const RECEIVE_BATCH: usize = 256;

/// What the delayer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets held and released.
    pub delayed: u64,
    /// Packets released while a packet that arrived before them was still held.
    pub reordered: u64,
    /// Packets accepted at once because [`MAX_PENDING`] were held.
    pub overflowed: u64,
    /// Verdicts the kernel refused (the packet is then lost, as on a real link).
    pub verdict_errors: u64,
}

struct Entry<T> {
    release: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.release, self.seq) == (other.release, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// Reversed: the heap's top is the earliest release (ties: the earliest arrival).
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.release, other.seq).cmp(&(self.release, self.seq))
    }
}

/// The pure part of the delayer: items held until their release time, handed back in release
/// order, at most `bound` at a time.
pub struct Held<T> {
    heap: BinaryHeap<Entry<T>>,
    /// Arrival numbers of the items held (the smallest tells whether a release reorders).
    pending: BTreeSet<u64>,
    next_seq: u64,
    bound: usize,
    pub counts: Counts,
}

impl<T> Held<T> {
    pub fn new(bound: usize) -> Held<T> {
        Held {
            heap: BinaryHeap::new(),
            pending: BTreeSet::new(),
            next_seq: 0,
            bound,
            counts: Counts::default(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Holds `item` (arrived now, after every item held before) until `release`. With `bound`
    /// items already held it is handed back, to be let through at once (counted).
    pub fn hold(&mut self, item: T, release: Instant) -> Result<(), T> {
        if self.heap.len() >= self.bound {
            self.counts.overflowed += 1;
            return Err(item);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(seq);
        self.heap.push(Entry { release, seq, item });
        Ok(())
    }

    /// When the next item is due.
    pub fn next_release(&self) -> Option<Instant> {
        self.heap.peek().map(|entry| entry.release)
    }

    /// The next item due at `now` (the earliest release first).
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.heap.peek()?.release > now {
            return None;
        }
        self.pop_next()
    }

    /// The next item in release order, due or not (shutting down).
    pub fn pop_next(&mut self) -> Option<T> {
        let entry = self.heap.pop()?;
        self.pending.remove(&entry.seq);
        self.counts.delayed += 1;
        if self.pending.first().is_some_and(|earliest| *earliest < entry.seq) {
            self.counts.reordered += 1;
        }
        Some(entry.item)
    }
}

/// Delay plus or minus a uniform jitter (never below zero).
pub struct Jitter {
    delay: Duration,
    jitter: Duration,
    rng: Rng,
}

impl Jitter {
    pub fn new(delay: Duration, jitter: Duration, seed: u64) -> Jitter {
        Jitter { delay, jitter, rng: Rng::new(seed) }
    }

    /// How long a packet that arrives now is held.
    pub fn next_hold(&mut self) -> Duration {
        let jitter_us = self.jitter.as_micros() as u64;
        if jitter_us == 0 {
            return self.delay;
        }
        let offset = self.rng.range(0, 2 * jitter_us);
        (self.delay + Duration::from_micros(offset)).saturating_sub(self.jitter)
    }
}

pub struct Options {
    pub queue: u16,
    pub delay: Duration,
    pub jitter: Duration,
    pub seed: u64,
    /// Bind and unbind only: says whether this kernel and this process can use NFQUEUE.
    pub check: bool,
}

fn nfq_error(error: std::io::Error, what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what}: {error} (NFQUEUE needs CONFIG_NETFILTER_NETLINK_QUEUE and CAP_NET_ADMIN)")
}

/// Runs the delayer until SIGTERM or SIGINT; returns what it did.
pub fn run(options: &Options) -> Result<Counts> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing a signal handler")?;
    }
    let number = options.queue;
    let mut queue =
        nfq::Queue::open().map_err(|error| nfq_error(error, "opening a netfilter queue socket"))?;
    queue.bind(number).map_err(|error| nfq_error(error, &format!("binding queue {number}")))?;
    // Metadata only: the verdict needs the packet's id, not its bytes (and a held packet then
    // pins a small receive buffer, not 64 KiB).
    queue.set_copy_range(number, 0).map_err(|error| nfq_error(error, "setting the copy range"))?;
    queue.set_fail_open(number, true).map_err(|error| nfq_error(error, "setting fail-open"))?;
    queue
        .set_queue_max_len(number, KERNEL_QUEUE)
        .map_err(|error| nfq_error(error, "setting the queue length"))?;
    queue.set_nonblocking(true);
    let mut stdout = std::io::stdout();
    if options.check {
        queue.unbind(number).map_err(|error| nfq_error(error, "unbinding"))?;
        writeln!(stdout, "delay: queue {number} can be bound")?;
        return Ok(Counts::default());
    }
    writeln!(stdout, "delay: bound queue {number}")?;
    stdout.flush()?;
    let mut jitter = Jitter::new(options.delay, options.jitter, options.seed);
    let mut held: Held<nfq::Message> = Held::new(MAX_PENDING);
    let verdict = |queue: &mut nfq::Queue, mut message: nfq::Message, counts: &mut Counts| {
        message.set_verdict(nfq::Verdict::Accept);
        if queue.verdict(message).is_err() {
            counts.verdict_errors += 1;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..RECEIVE_BATCH {
            match queue.recv() {
                Ok(message) => {
                    let release = Instant::now() + jitter.next_hold();
                    if let Err(message) = held.hold(message, release) {
                        verdict(&mut queue, message, &mut held.counts);
                    }
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => break,
                // Messages the socket could not hold: those packets are lost (the kernel
                // gives up on them); keep going.
                Err(error) if error.raw_os_error() == Some(105) => break,
                Err(error) => {
                    // Let everything held through before giving up.
                    while let Some(message) = held.pop_next() {
                        verdict(&mut queue, message, &mut held.counts);
                    }
                    return Err(nfq_error(error, "receiving from the queue"));
                }
            }
        }
        let now = Instant::now();
        while let Some(message) = held.pop_due(now) {
            verdict(&mut queue, message, &mut held.counts);
        }
        let sleep =
            held.next_release().map_or(POLL, |at| at.saturating_duration_since(Instant::now()).min(POLL));
        std::thread::sleep(sleep);
    }
    while let Some(message) = held.pop_next() {
        verdict(&mut queue, message, &mut held.counts);
    }
    // What reached the socket after the last look (the rule is normally gone by now).
    for _ in 0..KERNEL_QUEUE {
        match queue.recv() {
            Ok(message) => verdict(&mut queue, message, &mut held.counts),
            Err(_) => break,
        }
    }
    let _ = queue.unbind(number);
    let counts = held.counts;
    writeln!(
        stdout,
        "delay: queue {number} delayed {} reordered {} overflowed {} verdict-errors {}",
        counts.delayed, counts.reordered, counts.overflowed, counts.verdict_errors
    )?;
    stdout.flush()?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn items_come_back_in_release_order_and_only_when_due() {
        let base = Instant::now();
        let mut held = Held::new(16);
        // Arrival order 0, 1, 2, 3; release order 2, 0, 3, 1.
        for (item, release) in [(0, 20), (1, 50), (2, 10), (3, 30)] {
            assert!(held.hold(item, at(base, release)).is_ok());
        }
        assert_eq!(held.next_release(), Some(at(base, 10)));
        assert_eq!(held.pop_due(at(base, 5)), None);
        let mut out = Vec::new();
        for now in [10, 25, 40, 60] {
            while let Some(item) = held.pop_due(at(base, now)) {
                out.push((now, item));
            }
        }
        assert_eq!(out, vec![(10, 2), (25, 0), (40, 3), (60, 1)]);
        assert_eq!(held.counts.delayed, 4);
        // 2 left before 0 and 1 were released; 3 before 1. 0 and 1 came out after everything
        // that arrived before them.
        assert_eq!(held.counts.reordered, 2);
        assert!(held.is_empty());
    }

    #[test]
    fn equal_release_times_keep_arrival_order() {
        let base = Instant::now();
        let mut held = Held::new(16);
        for item in 0..5 {
            assert!(held.hold(item, at(base, 7)).is_ok());
        }
        let out: Vec<i32> = std::iter::from_fn(|| held.pop_due(at(base, 7))).collect();
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
        assert_eq!(held.counts.reordered, 0);
    }

    #[test]
    fn the_bound_hands_items_back_and_counts_them() {
        let base = Instant::now();
        let mut held = Held::new(3);
        for item in 0..3 {
            assert!(held.hold(item, at(base, 100)).is_ok());
        }
        assert_eq!(held.hold(3, at(base, 1)), Err(3));
        assert_eq!(held.hold(4, at(base, 1)), Err(4));
        assert_eq!(held.counts.overflowed, 2);
        assert_eq!(held.len(), 3);
        assert_eq!(held.pop_due(at(base, 100)), Some(0));
        assert!(held.hold(5, at(base, 1)).is_ok());
        assert_eq!(held.len(), 3);
    }

    #[test]
    fn shutting_down_hands_back_everything_in_release_order() {
        let base = Instant::now();
        let mut held = Held::new(16);
        for (item, release) in [(0, 900), (1, 300), (2, 600)] {
            assert!(held.hold(item, at(base, release)).is_ok());
        }
        let out: Vec<i32> = std::iter::from_fn(|| held.pop_next()).collect();
        assert_eq!(out, vec![1, 2, 0]);
        assert_eq!(held.counts.delayed, 3);
    }

    #[test]
    fn jitter_stays_within_the_delay_plus_or_minus_the_jitter_and_varies() {
        let mut jitter = Jitter::new(Duration::from_millis(100), Duration::from_millis(40), 9);
        let holds: Vec<Duration> = (0..2000).map(|_| jitter.next_hold()).collect();
        assert!(holds.iter().all(|hold| (60..=140).contains(&hold.as_millis())), "{holds:?}");
        assert!(holds.iter().any(|hold| hold.as_millis() < 70));
        assert!(holds.iter().any(|hold| hold.as_millis() >= 130));
        // Jitter larger than the delay never goes below zero.
        let mut wide = Jitter::new(Duration::from_millis(10), Duration::from_millis(50), 9);
        assert!((0..1000).all(|_| wide.next_hold() <= Duration::from_millis(60)));
        let mut none = Jitter::new(Duration::from_millis(25), Duration::ZERO, 9);
        assert_eq!(none.next_hold(), Duration::from_millis(25));
    }
}
