# Sourced by the scripts: one shared target directory outside the clone, so every clone on this
# machine (and CI, which runs on it) reuses the same compiled RocksDB instead of spending
# 10+ minutes rebuilding it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tetrad/target}"
mkdir -p "$CARGO_TARGET_DIR"
