#!/usr/bin/env bash
# The benchmark (README): builds tetrad (release) and runs `tetrad bench` on a local network.
# Arguments go to `tetrad bench` (see --help), e.g. `scripts/bench.sh --rate 1000 --txs 20000`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh
cargo build --release --locked -p tetrad-node --bin tetrad >&2
exec "$CARGO_TARGET_DIR/release/tetrad" bench "$@"
