#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, AddressSanitizer) of every decoder that reads
# bytes from a peer or a client, for a bounded time:
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s each, every target)
#
# Targets are in fuzz/fuzz_targets/ (what each does: fuzz/src/checks.rs). Each run starts from
# the committed corpus fuzz/corpus/TARGET/, which this script only reads: new inputs go to a
# scratch directory that is deleted at the end. With TETRAD_FUZZ_UPDATE_CORPUS=1 (by hand, never
# in the test command) the new inputs are merged into fuzz/corpus/TARGET/ and the result is
# minimised (`cargo fuzz cmin`).
#
# A crash, a panic, a timeout (30 s on one input) or any single allocation over 16 MiB
# (-malloc_limit_mb: no length prefix may make a decoder allocate more than a frame may hold)
# is a failure: the input lands in fuzz/artifacts/TARGET/ (gitignored), the remaining targets
# still run, and the script exits 1 naming each failure and how to reproduce it. Otherwise 0.
#
# Compiler: the toolchain the workspace uses (stable) with RUSTC_BOOTSTRAP=1 for the -Z flags
# cargo-fuzz passes; TETRAD_FUZZ_TOOLCHAIN=nightly to use a nightly instead. The fuzz crate
# builds without RocksDB (tetrad-ledger without its `rocksdb` feature), from fuzz/Cargo.lock
# (--locked), into $TETRAD_FUZZ_TARGET_DIR (default ~/.cache/tetrad/target-fuzz).
# The test suite also runs the same checks without libFuzzer (node/src/daemon/fuzzing.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
case "$seconds" in
    '' | *[!0-9]*)
        echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
        exit 2
        ;;
esac
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for file in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi
for target in "${targets[@]}"; do
    [ -f "fuzz/fuzz_targets/$target.rs" ] || { echo "fuzz: no target $target in fuzz/fuzz_targets/" >&2; exit 2; }
done

cargo_fuzz_version=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $cargo_fuzz_version" >&2
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi
toolchain=()
if [ -n "${TETRAD_FUZZ_TOOLCHAIN:-}" ]; then
    toolchain=("+$TETRAD_FUZZ_TOOLCHAIN")
else
    export RUSTC_BOOTSTRAP=1
fi
target_dir="${TETRAD_FUZZ_TARGET_DIR:-$HOME/.cache/tetrad/target-fuzz}"
# Only the fuzz crate's own flags: nothing the workspace's builds set.
unset CARGO_TARGET_DIR RUSTFLAGS CARGO_BUILD_RUSTFLAGS

# Fails if fuzz/Cargo.lock does not match fuzz/Cargo.toml (cargo-fuzz has no --locked).
cargo "${toolchain[@]}" metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

started=$(date +%s)
echo "== building ${#targets[@]} fuzz targets (target dir $target_dir)" >&2
for target in "${targets[@]}"; do
    cargo "${toolchain[@]}" fuzz build --fuzz-dir fuzz --target-dir "$target_dir" "$target"
done
echo "== built in $(($(date +%s) - started)) s" >&2

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
summary=()
for target in "${targets[@]}"; do
    echo "== fuzzing $target for $seconds s" >&2
    mkdir -p "fuzz/artifacts/$target" "$scratch/$target"
    corpus=()
    [ -d "fuzz/corpus/$target" ] && corpus=("fuzz/corpus/$target")
    # The first corpus directory is the one libFuzzer writes to: the scratch one.
    status=0
    cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz --target-dir "$target_dir" "$target" \
        "$scratch/$target" "${corpus[@]}" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=30 -malloc_limit_mb=16 -rss_limit_mb=2048 \
        -artifact_prefix="fuzz/artifacts/$target/" -print_final_stats=1 2>&1 \
        | tee "$scratch/$target.log" >&2 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$target.log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$scratch/$target.log" | tail -1)
    if [ "$status" -ne 0 ]; then
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$scratch/$target.log" | tail -1)
        failed+=("$target: ${artifact:-see the log above} (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --target-dir $target_dir $target ${artifact:-ARTIFACT})")
        summary+=("$target: FAILED after ${runs:-?} runs")
        continue
    fi
    summary+=("$target: ${runs:-?} runs, ${speed:-?} exec/s, $(find "$scratch/$target" -type f | wc -l) new inputs")
    if [ "${TETRAD_FUZZ_UPDATE_CORPUS:-0}" = 1 ]; then
        mkdir -p "fuzz/corpus/$target"
        find "$scratch/$target" -type f -exec cp -n {} "fuzz/corpus/$target/" \;
        cargo "${toolchain[@]}" fuzz cmin --fuzz-dir fuzz --target-dir "$target_dir" "$target" \
            "fuzz/corpus/$target" -- -max_len=65536 -timeout=30 -rss_limit_mb=2048 >&2
        echo "== fuzz/corpus/$target: $(find "fuzz/corpus/$target" -type f | wc -l) inputs" >&2
    fi
done

echo "== fuzz summary ($seconds s per target, $(($(date +%s) - started)) s in all)" >&2
printf '   %s\n' "${summary[@]}" >&2
if [ ${#failed[@]} -gt 0 ]; then
    echo "== FUZZING FOUND ${#failed[@]} FAILING INPUT(S):" >&2
    printf '   %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "== no crash, panic, timeout or oversized allocation in ${#targets[@]} targets" >&2
