#!/usr/bin/env bash
# The test command (README): set up a fresh machine, then format check, clippy and every test.
# Everything builds in the release profile only: one RocksDB build, shared by clippy, the tests
# and the binaries the cluster tests start.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check

echo "== cargo clippy (release, all targets, -D warnings)" >&2
cargo clippy --release --workspace --all-targets --locked -- -D warnings

# The light client (tetrad_ledger::light and the types and proofs it uses) must build without
# RocksDB, tokio and libp2p, so that a wallet can embed it (README "Prove it").
echo "== the light client builds without RocksDB, tokio and libp2p" >&2
if cargo tree -p tetrad-ledger --no-default-features -e normal --prefix none --locked \
    | grep -iE '^(rocksdb|librocksdb-sys|tokio|libp2p|axum) '; then
    echo "tetrad-ledger without default features depends on the crates above" >&2
    exit 1
fi
cargo build --release -p tetrad-ledger --no-default-features --lib --locked

# The Byzantine validator's misbehaviour (cargo feature `byzantine`, node/src/daemon/byzantine.rs)
# is for the fault campaign only: the released binary must not contain it. Built the way a release
# is (no feature), `tetrad` must not hold the module's marker string; the tetrad-byzantine build
# (its own binary; --bin keeps target/release/tetrad as it is) must hold it, so the check can fail.
echo "== the released tetrad holds no Byzantine misbehaviour" >&2
cargo build --release --locked -p tetrad-node --bin tetrad
cargo build --release --locked -p tetrad-node --features byzantine --bin tetrad-byzantine
byzantine_marker="tetrad-byzantine: misbehaviour compiled in"
if grep -q "$byzantine_marker" "$CARGO_TARGET_DIR/release/tetrad"; then
    echo "target/release/tetrad contains the Byzantine misbehaviour (feature byzantine leaked into it)" >&2
    exit 1
fi
grep -q "$byzantine_marker" "$CARGO_TARGET_DIR/release/tetrad-byzantine" \
    || { echo "tetrad-byzantine lacks the marker: the check above would prove nothing" >&2; exit 1; }
if TETRAD_BYZANTINE=all "$CARGO_TARGET_DIR/release/tetrad" --version 2>&1 | grep -q "$byzantine_marker"; then
    echo "tetrad reacts to TETRAD_BYZANTINE" >&2
    exit 1
fi

echo "== tests (release)" >&2
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --release --workspace --locked --no-fail-fast
else
    cargo test --release --workspace --locked --no-fail-fast
fi

# A short fault campaign on real processes, each node in its own network namespace (issue 15):
# fixed seed, every fault kind once, then the checker (lost and duplicated must be 0) and its
# negative controls. Needs root; bounded (the campaign itself stops after duration + 900 s).
# No --allow-replayed-copies: a transaction in the chain twice fails the run (the last re-proposal
# duplicate, a new primary cutting before it had fetched a re-proposed batch, is fixed).
echo "== fault campaign (scripts/chaos.sh --seed ${TETRAD_TEST_CHAOS_SEED:-1} --duration ${TETRAD_TEST_CHAOS_SECONDS:-60})" >&2
bash scripts/chaos.sh --seed "${TETRAD_TEST_CHAOS_SEED:-1}" --duration "${TETRAD_TEST_CHAOS_SECONDS:-60}" \
    --json "$CARGO_TARGET_DIR/chaos-test.json"
# The same with a Byzantine validator (v0, the first primary, runs tetrad-byzantine with every
# misbehaviour: equivocation, double votes, view churn, silence, lying sync answers, a flood),
# alone and with a killed primary; the honest nodes must agree, lose nothing and resume. About
# 60 s of wall time once built.
echo "== fault campaign with a Byzantine validator (scripts/chaos.sh --byzantine all)" >&2
bash scripts/chaos.sh --seed "${TETRAD_TEST_CHAOS_SEED:-1}" --duration "${TETRAD_TEST_BYZANTINE_SECONDS:-30}" \
    --faults quiet,kill-primary --byzantine all \
    --json "$CARGO_TARGET_DIR/chaos-byzantine-test.json"

# Coverage-guided fuzzing (libFuzzer) of every decoder that reads bytes from a peer or a client:
# each target for TETRAD_TEST_FUZZ_SECONDS (10 s) from the committed corpus in fuzz/corpus/.
# New inputs go to a scratch directory only; a crash, panic or oversized allocation fails here.
# The fuzz crate builds without RocksDB into its own target dir (~/.cache/tetrad/target-fuzz).
echo "== fuzz (scripts/fuzz.sh ${TETRAD_TEST_FUZZ_SECONDS:-10})" >&2
bash scripts/fuzz.sh "${TETRAD_TEST_FUZZ_SECONDS:-10}"

# The image, built from the release binary above, and a 4-validator + full node network of its
# containers (kill, pause, disconnect, SIGTERM, down -v). Needs the Docker engine: a missing or
# stopped engine fails here, it is not skipped. Bounded (TETRAD_COMPOSE_TEST_TIMEOUT_S, 600 s).
echo "== containers (scripts/compose-test.sh, scripts/operator-test.sh)" >&2
bash scripts/compose-test.sh
# The README's four validators on four machines, with the machines played by containers.
bash scripts/operator-test.sh
