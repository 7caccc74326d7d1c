//! Watches the height of every node (`/status`, one thread per node, every 100 ms) and keeps
//! the times at which the highest height among them rose: the campaign's liveness record.
//!
//! Commits "resume" only with a block that carries transactions: the closed-loop clients always
//! have some pending, and a view change's null batches or an idle primary's empty ones would
//! otherwise count as progress while no transaction commits. So each watcher also reads the
//! header of every new height (`/blocks/{h}`) for its transaction count; the campaign checks
//! those counts against the verified chain at the end ([`Monitor::disagreements`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http;
use crate::workload::Endpoint;

const POLL: Duration = Duration::from_millis(100);

pub struct Monitor {
    started: Instant,
    /// The last height each node reported.
    heights: Mutex<Vec<u64>>,
    /// `(ms since start, new highest height)`, each time the highest height rose.
    rises: Mutex<Vec<(u64, u64)>>,
    /// Of each height read so far: whether its block carries transactions, and which node said so.
    carries: Mutex<BTreeMap<u64, (bool, usize)>>,
    stop: AtomicBool,
}

impl Monitor {
    /// Watches every endpoint but those in `ignore` (a Byzantine node: its height counts for
    /// nothing).
    pub fn spawn(
        endpoints: &[Endpoint],
        ignore: &[usize],
        started: Instant,
    ) -> (Arc<Monitor>, Vec<JoinHandle<()>>) {
        let monitor = Arc::new(Monitor {
            started,
            heights: Mutex::new(vec![0; endpoints.len()]),
            rises: Mutex::new(Vec::new()),
            carries: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
        });
        let handles = endpoints
            .iter()
            .cloned()
            .enumerate()
            .filter(|(index, _)| !ignore.contains(index))
            .map(|(index, endpoint)| {
                let monitor = Arc::clone(&monitor);
                std::thread::spawn(move || monitor.watch(index, &endpoint))
            })
            .collect();
        (monitor, handles)
    }

    fn watch(&self, index: usize, endpoint: &Endpoint) {
        let agent = http::agent(Duration::from_millis(500));
        let url = format!("{}/status", endpoint.rpc);
        while !self.stop.load(Ordering::Relaxed) {
            if let Ok((200, status)) = http::get(&agent, &url)
                && let Some(height) = status["height"].as_u64()
            {
                self.report(index, height);
                self.read_blocks(&agent, index, endpoint, height);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Reads the transaction count of every height up to `height` that no watcher read yet,
    /// from this node (which has them). Stops at the first that does not answer (next poll).
    fn read_blocks(&self, agent: &ureq::Agent, index: usize, endpoint: &Endpoint, height: u64) {
        let unread: Vec<u64> = match self.carries.lock() {
            Ok(carries) => (1..=height).filter(|h| !carries.contains_key(h)).collect(),
            Err(_) => return,
        };
        for h in unread {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok((200, block)) = http::get(agent, &format!("{}/blocks/{h}", endpoint.rpc)) else { return };
            let Some(count) = block["header"]["tx_count"].as_u64() else { return };
            if let Ok(mut carries) = self.carries.lock() {
                carries.entry(h).or_insert((count > 0, index));
            }
        }
    }

    /// When each height was first seen: the first rise of the highest height to it or above.
    fn first_seen(&self, height: u64) -> Option<u64> {
        let rises = self.rises.lock().ok()?;
        rises.iter().find(|(_, highest)| *highest >= height).map(|(at, _)| *at)
    }

    /// The times at which heights that carry transactions were first seen, in order.
    fn carrying_rises(&self) -> Vec<u64> {
        let heights: Vec<u64> = match self.carries.lock() {
            Ok(carries) => carries.iter().filter(|(_, (carries, _))| *carries).map(|(h, _)| *h).collect(),
            Err(_) => return Vec::new(),
        };
        heights.into_iter().filter_map(|height| self.first_seen(height)).collect()
    }

    /// Heights where what a node told the monitor (transactions or none) is not what the
    /// verified chain holds: `carries[h - 1]` for height h.
    pub fn disagreements(&self, carries: &[bool], names: &[String]) -> Vec<String> {
        let Ok(seen) = self.carries.lock() else { return vec!["the monitor's lock is poisoned".to_string()] };
        seen.iter()
            .filter(|(height, (said, _))| carries.get(**height as usize - 1).is_some_and(|held| held != said))
            .map(|(height, (said, node))| {
                format!(
                    "{} told the monitor that block {height} carries {} transactions, the verified chain says otherwise",
                    names.get(*node).map_or("a node", String::as_str),
                    if *said { "some" } else { "no" }
                )
            })
            .collect()
    }

    fn report(&self, index: usize, height: u64) {
        let now = self.now_ms();
        let Ok(mut heights) = self.heights.lock() else { return };
        heights[index] = height;
        let highest = heights.iter().copied().max().unwrap_or(0);
        drop(heights);
        if let Ok(mut rises) = self.rises.lock()
            && rises.last().is_none_or(|(_, last)| highest > *last)
        {
            rises.push((now, highest));
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The highest height any node reported.
    pub fn highest(&self) -> u64 {
        self.heights.lock().map(|heights| heights.iter().copied().max().unwrap_or(0)).unwrap_or(0)
    }

    /// The highest height among `nodes`.
    pub fn highest_of(&self, nodes: &[usize]) -> u64 {
        self.heights
            .lock()
            .map(|heights| nodes.iter().filter_map(|index| heights.get(*index)).copied().max().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The first time at or after `since_ms` when a height above `above` that carries
    /// transactions was first seen (empty blocks do not count as commits resuming).
    pub fn rose_after(&self, since_ms: u64, above: u64) -> Option<u64> {
        let first = match self.carries.lock() {
            Ok(carries) => carries.range(above + 1..).find(|(_, (carries, _))| *carries).map(|(h, _)| *h)?,
            Err(_) => return None,
        };
        self.first_seen(first).map(|at| at.max(since_ms))
    }

    /// The longest time without a new block that carries transactions within `[from_ms, to_ms]`.
    pub fn longest_gap(&self, from_ms: u64, to_ms: u64) -> u64 {
        let mut last = from_ms;
        let mut longest = 0;
        for at in self.carrying_rises().into_iter().filter(|at| *at > from_ms && *at <= to_ms) {
            longest = longest.max(at - last);
            last = at;
        }
        longest.max(to_ms.saturating_sub(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor() -> Monitor {
        Monitor {
            started: Instant::now(),
            heights: Mutex::new(vec![0; 2]),
            rises: Mutex::new(Vec::new()),
            carries: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
        }
    }

    #[test]
    fn empty_blocks_after_a_heal_are_not_commits_resuming() {
        let monitor = monitor();
        // Height 10 at 1 s (with transactions); the heal at 5 s; a view change's empty blocks
        // 11 and 12 at 6 s and 7 s; the first block with transactions, 13, at 9 s.
        for (at, height, carries) in
            [(1_000, 10, true), (6_000, 11, false), (7_000, 12, false), (9_000, 13, true)]
        {
            monitor.rises.lock().expect("lock").push((at, height));
            monitor.carries.lock().expect("lock").insert(height, (carries, 0));
        }
        assert_eq!(monitor.rose_after(5_000, 10), Some(9_000));
        assert_eq!(monitor.longest_gap(0, 9_000), 8_000);
        // Nothing with transactions above 13 yet.
        assert_eq!(monitor.rose_after(9_500, 13), None);
    }

    #[test]
    fn a_node_that_lied_to_the_monitor_is_named() {
        let monitor = monitor();
        monitor.carries.lock().expect("lock").insert(1, (true, 1));
        monitor.carries.lock().expect("lock").insert(2, (false, 0));
        let names = vec!["v0".to_string(), "v1".to_string()];
        let found = monitor.disagreements(&[false, false], &names);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("v1"));
    }
}
