#!/usr/bin/env bash
# Ledger benchmark: execute + persist transfers on one core, signatures excluded.
# Extra arguments go to `tetrad bench ledger` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh
cargo build --release --locked -p tetrad-node --bin tetrad >&2
exec taskset -c 0 "$CARGO_TARGET_DIR/release/tetrad" bench ledger "$@"
