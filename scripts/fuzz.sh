#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every decoder that reads bytes from a peer
# or a client, for a bounded time:
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s each, every target)
#
# Targets are in fuzz/fuzz_targets/, their committed corpus in fuzz/corpus/TARGET/ (read
# only: new inputs go to a scratch directory; copy the interesting ones in by hand). A crash
# lands in fuzz/artifacts/TARGET/ and stops the script with a non-zero exit. Any single
# allocation over 16 MiB counts as a crash (-malloc_limit_mb): no length prefix may make a
# decoder allocate more than a frame may hold.
#
# cargo-fuzz needs nightly compiler flags: the nightly toolchain if rustup has one, else the
# stable one with RUSTC_BOOTSTRAP=1. RocksDB's C++ is not compiled again with the fuzzing flags:
# the library the workspace's release build made is linked (ROCKSDB_LIB_DIR), when there is one.
# The test suite runs the same checks without libFuzzer (node/src/daemon/fuzzing.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for file in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
export CARGO_TARGET_DIR="${TETRAD_FUZZ_TARGET_DIR:-$HOME/.cache/tetrad/target-fuzz}"
rocksdb=$(ls -t "${CARGO_TARGET_DIR_WORKSPACE:-$HOME/.cache/tetrad/target}"*/release/build/librocksdb-sys-*/out/librocksdb.a \
    2>/dev/null | head -1 || true)
if [ -n "$rocksdb" ]; then
    export ROCKSDB_LIB_DIR
    ROCKSDB_LIB_DIR=$(dirname "$rocksdb")
    export ROCKSDB_STATIC=1
    echo "== linking RocksDB from $ROCKSDB_LIB_DIR" >&2
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    echo "== fuzzing $target for $seconds s" >&2
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target" "$scratch/$target"
    cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -malloc_limit_mb=16 -rss_limit_mb=2048 \
        -artifact_prefix="fuzz/artifacts/$target/" -print_final_stats=1
done
echo "== no crash in ${#targets[@]} targets" >&2
