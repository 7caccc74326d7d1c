#!/usr/bin/env bash
# Issue 17's saturation check: consecutive open-loop runs of `tetrad bench`, each one its own
# network, with or without one core kept busy by another process (stress-ng --cpu 1, installed
# from Debian when missing). Prints one line per run (committed tx/s, p50/p99, view changes,
# ratio to the in-run bound, peak RSS) and writes every run's JSON to the output directory.
#
#   scripts/bench-saturation.sh [--runs N] [--busy-core] [--keep] [--out DIR] [-- tetrad bench args]
#
# --keep keeps each run's network (homes, node.log, a final /metrics) in DIR/run-N/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

runs=5
busy=0
keep=0
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --busy-core) busy=1; shift ;;
        --keep) keep=1; shift ;;
        --out) out="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "bench-saturation: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
    esac
done
out="${out:-$(mktemp -d /tmp/tetrad-saturation.XXXX)}"
mkdir -p "$out"

bash scripts/setup.sh
cargo build --release --locked -p tetrad-node --bin tetrad >&2
tetrad="$CARGO_TARGET_DIR/release/tetrad"

stress_pid=""
cleanup() { [ -n "$stress_pid" ] && pkill -P "$stress_pid" 2>/dev/null; [ -n "$stress_pid" ] && kill "$stress_pid" 2>/dev/null || true; }
trap cleanup EXIT
if [ "$busy" = 1 ]; then
    if ! command -v stress-ng >/dev/null 2>&1; then
        echo "bench-saturation: installing stress-ng with apt-get" >&2
        sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq stress-ng >/dev/null
    fi
    # One core's worth of CPU load for as long as the runs take (killed on exit).
    stress-ng --cpu 1 --cpu-method int64 --quiet 2>/dev/null &
    stress_pid=$!
    stress_started=$(date +%s)
    sleep 1
fi

echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit $(git rev-parse --short HEAD)  busy core: $busy  runs: $runs  out: $out"
failed=0
for run in $(seq 1 "$runs"); do
    json="$out/run-$run.json"
    kept=()
    [ "$keep" = 1 ] && kept=(--keep-dir "$out/run-$run")
    "$tetrad" bench --json "$json" "${kept[@]}" "$@" > "$out/run-$run.log" 2>&1 || { echo "run $run failed: $out/run-$run.log"; failed=1; continue; }
    python3 - "$json" "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
# A figure the run could not measure is null in the JSON (NaN): shown as nan, never a failure.
r = {k: (float("nan") if v is None else v) for k, v in r.items()}
rss = max(n["peak_rss_mb"] for n in r["nodes"])
print(f"run {sys.argv[2]}: {r['committed_tx_per_s']:.0f} tx/s, p50 {r['latency_ms_p50']:.0f} / p99 {r['latency_ms_p99']:.0f} ms, "
      f"view changes {r['view_changes']}, busy refusals {r['busy_refusals']}, "
      f"verify {r['verify_single_per_core']:.0f} single / {r['verify_batched_per_core']:.0f} batched-64 / "
      f"{r['verify_in_run_per_core']:.0f} in-run (batches of {r['verify_in_run_batch_mean']:.0f}) per core, "
      f"÷ bound {r['ratio_to_bound']:.2f}, ÷ in-run bound {r['ratio_to_in_run_bound']:.2f}, "
      f"checks + execution {r['check_and_execute_cpu_us_per_tx']:.0f} µs/tx (÷ that bound {r['ratio_to_check_and_execute_bound']:.2f}), "
      f"peak RSS {rss:.0f} MB")
PY
done
if [ -n "$stress_pid" ]; then
    # What the busy core really took: stress-ng's worker competes with every node thread for
    # its fair share, so it gets what the scheduler gives it, not a whole core.
    worker=$(pgrep -P "$stress_pid" | head -1 || true)
    if [ -n "$worker" ] && [ -r "/proc/$worker/stat" ]; then
        ticks=$(awk '{print $14 + $15}' "/proc/$worker/stat")
        elapsed=$(( $(date +%s) - stress_started ))
        python3 -c "import os,sys; t=int(sys.argv[1])/os.sysconf('SC_CLK_TCK'); print(f'stress-ng worker: {t:.0f} s of CPU in {sys.argv[2]} s ({100*t/max(1,int(sys.argv[2])):.0f}% of a core)')" "$ticks" "$elapsed"
    fi
fi
exit "$failed"
