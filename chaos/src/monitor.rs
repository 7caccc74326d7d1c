//! Watches the height of every node (`/status`, one thread per node, every 100 ms) and keeps
//! the times at which the highest height among them rose: the campaign's liveness record.

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
            }
            std::thread::sleep(POLL);
        }
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

    /// The first time at or after `since_ms` when the highest height rose above `above`.
    pub fn rose_after(&self, since_ms: u64, above: u64) -> Option<u64> {
        let rises = self.rises.lock().ok()?;
        rises.iter().find(|(at, height)| *at >= since_ms && *height > above).map(|(at, _)| *at)
    }

    /// The longest time without a new highest height within `[from_ms, to_ms]`.
    pub fn longest_gap(&self, from_ms: u64, to_ms: u64) -> u64 {
        let Ok(rises) = self.rises.lock() else { return 0 };
        let mut last = from_ms;
        let mut longest = 0;
        for (at, _) in rises.iter().filter(|(at, _)| *at > from_ms && *at <= to_ms) {
            longest = longest.max(at - last);
            last = *at;
        }
        longest.max(to_ms.saturating_sub(last))
    }
}
