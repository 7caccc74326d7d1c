//! The fuzz targets of `fuzz/` on the stable toolchain, as a test: every input of the committed
//! corpus (`fuzz/corpus/<target>/`) and every generated seed, then seeded mutations of them for
//! a bounded time per target (`TETRAD_FUZZ_MS`, default 1500 ms). A failing input is printed in
//! hex with its seed, and the run repeats exactly with the same `TETRAD_FUZZ_SEED`.
//!
//! `scripts/fuzz.sh` runs the same targets under libFuzzer (coverage-guided, longer); this run
//! keeps every target's properties checked on each `scripts/test.sh`.
//! `TETRAD_WRITE_CORPUS=1` writes the generated seeds into the corpus directories.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::daemon::wire;

#[path = "../../../fuzz/src/checks.rs"]
mod checks;

/// Interesting 32-bit values for length prefixes and counts.
const INTERESTING: [u32; 10] = [0, 1, 2, 0x7f, 0xff, 0xffff, 1 << 20, 1 << 24, 0x7fff_ffff, 0xffff_ffff];
/// Largest input a mutation makes.
const INPUT_BYTES_MAX: usize = 1 << 16;

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        if bound == 0 { 0 } else { (self.next() % bound as u64) as usize }
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(16)).min(len);
                input.drain(at..end);
            }
            4 => input.truncate(rng.below(len + 1)),
            5 if len >= 4 => {
                let at = rng.below(len - 3);
                let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                input[at..at + 4].copy_from_slice(&value);
            }
            6 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let at = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                let chunk = input[at..end].to_vec();
                let to = rng.below(input.len() + 1);
                input.splice(to..to, chunk);
            }
            _ => input.push(rng.next() as u8),
        }
    }
    input.truncate(INPUT_BYTES_MAX);
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

/// The committed corpus of `target` (file name order), then its generated seeds.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .map(|entries| entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect())
        .unwrap_or_default();
    files.sort();
    let mut inputs: Vec<Vec<u8>> = files.iter().filter_map(|path| std::fs::read(path).ok()).collect();
    inputs.extend(checks::seeds(target));
    inputs
}

fn run_one(target: &str, check: fn(&[u8]), input: &[u8], seed: u64) {
    if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
        let shown: String = input.iter().take(4096).map(|byte| format!("{byte:02x}")).collect();
        panic!("fuzz target {target} panicked (TETRAD_FUZZ_SEED={seed}) on {} bytes: {shown}", input.len());
    }
}

#[test]
fn every_decoder_survives_its_corpus_and_mutations() {
    let budget = Duration::from_millis(
        std::env::var("TETRAD_FUZZ_MS").ok().and_then(|ms| ms.parse().ok()).unwrap_or(1500),
    );
    let seed: u64 =
        std::env::var("TETRAD_FUZZ_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or(0x7e7a_d000);
    let write = std::env::var_os("TETRAD_WRITE_CORPUS").is_some();
    let mut report = Vec::new();
    for (target, check) in checks::TARGETS {
        if write {
            let dir = corpus_dir(target);
            std::fs::create_dir_all(&dir).expect("corpus directory");
            for (index, input) in checks::seeds(target).iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{index}")), input).expect("write a seed");
            }
        }
        let corpus = corpus(target);
        assert!(!corpus.is_empty(), "{target} has no corpus and no seed");
        for input in &corpus {
            run_one(target, check, input, seed);
        }
        let mut rng = Rng(seed ^ (target.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let started = Instant::now();
        let mut runs = 0u64;
        while started.elapsed() < budget {
            let mut input = corpus[rng.below(corpus.len())].clone();
            mutate(&mut rng, &mut input, &corpus);
            run_one(target, check, &input, seed);
            runs += 1;
        }
        report.push(format!("{target}: {} corpus inputs, {runs} mutations", corpus.len()));
    }
    eprintln!("{}", report.join("\n"));
}
