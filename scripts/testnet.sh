#!/usr/bin/env bash
# The run command (README): builds tetrad (release) and starts a local 4-validator network.
# Ctrl-C stops every validator. Environment:
#   TETRAD_TESTNET_DIR   where the network lives (default: /tmp/tetrad-testnet); an existing
#                        network there is started again with its data
#   TETRAD_BASE_PORT     validator i uses base+2i (p2p) and base+2i+1 (RPC); default 26600
#   TETRAD_VALIDATORS    default 4
#   TETRAD_ACCOUNTS      funded accounts (keys in DIR/accounts/), default 10
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh
cargo build --release --locked -p tetrad-node --bin tetrad >&2
dir="${TETRAD_TESTNET_DIR:-/tmp/tetrad-testnet}"
exec "$CARGO_TARGET_DIR/release/tetrad" testnet --start --dir "$dir" \
    --validators "${TETRAD_VALIDATORS:-4}" --accounts "${TETRAD_ACCOUNTS:-10}" \
    --base-port "${TETRAD_BASE_PORT:-26600}"
