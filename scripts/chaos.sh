#!/usr/bin/env bash
# A fault campaign on real tetrad processes (issue 15): every node (4 validators, 1 full node)
# in its own network namespace at its own address on a bridge, a seeded schedule of faults,
# clients that record every answer, and a checker that a lost transaction cannot pass.
#
#   scripts/chaos.sh [--seed S] [--duration SECONDS] [--faults all|KIND,...] [--json FILE]
#                    [--clients N] [--keep] [--allow-replayed-copies]
#                    [--byzantine MODES] [--byzantine-node v0]
#
# Needs root (namespaces, veth, iptables, tc; NFQUEUE for link faults). Installs iproute2 and
# iptables with apt-get when they are missing. Everything it makes (namespaces tchaos-*, the link
# tchaos-host, the rules inside the namespaces, the processes: nodes and link delayers) is removed
# on exit, also on failure and Ctrl-C. The
# network is 10.77.0.0/24 (nodes .1-.5, the host .254; override with TETRAD_CHAOS_SUBNET=10.x.y).
# Exit status 0 only if the checker passed and every liveness bound held; a failure prints the
# seed and the command that replays it. The node logs stay in the printed directory on failure.
# --allow-replayed-copies lets a transaction that is in the chain twice pass when it executed
# once and its other copy failed its nonce check (the known re-proposal issue); it is still
# counted and listed.
# --byzantine MODES runs one validator (v0, the first primary, unless --byzantine-node) as tetrad-byzantine, the node
# built with the misbehaviour of the cargo feature `byzantine` (never in the released tetrad),
# with TETRAD_BYZANTINE=MODES (all, or a list of equivocate, double-vote, view-churn, silence,
# lying-sync, flood, replay); the checker then holds the honest nodes to every rule. `--faults quiet`
# injects nothing (the Byzantine validator alone).
set -euo pipefail
cd "$(dirname "$0")/.."

seed=1
duration=120
faults=all
json=""
clients=6
keep=0
byzantine=""
byzantine_node=v0
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seed) seed="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --faults) faults="$2"; shift 2 ;;
        --json) json="$2"; shift 2 ;;
        --clients) clients="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        --allow-replayed-copies) extra+=(--allow-replayed-copies); shift ;;
        --byzantine) byzantine="$2"; shift 2 ;;
        --byzantine-node) byzantine_node="$2"; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "chaos.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "chaos.sh: needs root (network namespaces, veth links, iptables and tc inside them)" >&2
    exit 2
fi

# Tools: ip and tc (iproute2), iptables, libfaketime (clock faults), mount and dd (coreutils,
# util-linux: the small disk).
faketime_lib() { ls /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1 2>/dev/null | head -1 || true; }
missing=()
command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
[ -n "$(faketime_lib)" ] || missing+=(faketime)
if [ ${#missing[@]} -gt 0 ]; then
    echo "chaos.sh: missing ${missing[*]}; installing with apt-get" >&2
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "chaos.sh: no apt-get: install ${missing[*]} yourself" >&2
        exit 2
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in ip tc iptables mount umount dd flock timeout; do
    command -v "$tool" >/dev/null 2>&1 || { echo "chaos.sh: $tool is missing" >&2; exit 2; }
done
faketime="$(faketime_lib)"
[ -n "$faketime" ] || { echo "chaos.sh: libfaketime.so.1 not found after installing faketime" >&2; exit 2; }

subnet="${TETRAD_CHAOS_SUBNET:-10.77.0}"
prefix=tchaos-
hub="${prefix}hub"
host_link="${prefix}host"
names=(v0 v1 v2 v3 full0)

# One campaign at a time on this machine: the namespace names are fixed.
exec 9>/run/tetrad-chaos.lock
if ! flock -w 600 9; then
    echo "chaos.sh: another campaign holds /run/tetrad-chaos.lock (waited 10 min)" >&2
    exit 2
fi

# Binaries: built here (release), unless TETRAD_BIN and TETRAD_CHAOS_BIN name them.
if [ -z "${TETRAD_BIN:-}" ] || [ -z "${TETRAD_CHAOS_BIN:-}" ]; then
    source scripts/env.sh
    echo "== chaos: cargo build --release -p tetrad-node -p tetrad-chaos" >&2
    cargo build --release --locked -p tetrad-node -p tetrad-chaos
    TETRAD_BIN="$CARGO_TARGET_DIR/release/tetrad"
    TETRAD_CHAOS_BIN="$CARGO_TARGET_DIR/release/tetrad-chaos"
fi
# The Byzantine validator's binary: a build of its own (--bin: target/release/tetrad stays the
# one without the feature), unless TETRAD_BYZANTINE_BIN names it.
if [ -n "$byzantine" ] && [ -z "${TETRAD_BYZANTINE_BIN:-}" ]; then
    source scripts/env.sh
    echo "== chaos: cargo build --release -p tetrad-node --features byzantine --bin tetrad-byzantine" >&2
    cargo build --release --locked -p tetrad-node --features byzantine --bin tetrad-byzantine
    TETRAD_BYZANTINE_BIN="$CARGO_TARGET_DIR/release/tetrad-byzantine"
fi
if [ -n "$byzantine" ]; then
    extra+=(--byzantine "$byzantine" --byzantine-node "$byzantine_node" --tetrad-byzantine "$TETRAD_BYZANTINE_BIN")
fi

work=$(mktemp -d /tmp/tetrad-chaos.XXXXXX)
campaign_pid=""
small_disk_dir=""
status=2

remove_all() {
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${prefix}" || true); do
        # Whatever still runs in a namespace of ours (nodes, link delayers) dies first, and is
        # gone before the namespace is deleted (a process would keep the namespace alive).
        local tries=0
        while [ -n "$(ip netns pids "$ns" 2>/dev/null)" ] && [ "$tries" -lt 50 ]; do
            ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
            sleep 0.1
            tries=$((tries + 1))
        done
        if [ -n "$(ip netns pids "$ns" 2>/dev/null)" ]; then
            echo "chaos.sh: processes $(ip netns pids "$ns" | tr '\n' ' ')still run in $ns after kill -9" >&2
        fi
        ip netns delete "$ns" 2>/dev/null || true
    done
    ip link delete "$host_link" 2>/dev/null || true
}

cleanup() {
    # A second Ctrl-C must not stop the cleanup half-way.
    trap '' INT TERM
    trap - EXIT
    if [ -n "$campaign_pid" ] && kill -0 "$campaign_pid" 2>/dev/null; then
        kill -TERM "$campaign_pid" 2>/dev/null || true
        sleep 1
        kill -KILL "$campaign_pid" 2>/dev/null || true
    fi
    remove_all
    if [ -n "$small_disk_dir" ] && mountpoint -q "$small_disk_dir" 2>/dev/null; then
        umount "$small_disk_dir" 2>/dev/null || umount -l "$small_disk_dir" 2>/dev/null || true
    fi
    if [ "$status" -eq 0 ] && [ "$keep" -eq 0 ]; then
        rm -rf "$work"
    else
        echo "chaos.sh: node homes, logs and the client record are in $work" >&2
    fi
    if ip netns list 2>/dev/null | grep -q "^${prefix}" || ip link show "$host_link" >/dev/null 2>&1; then
        echo "chaos.sh: could not remove everything (see ip netns list, ip link show $host_link)" >&2
        [ "$status" -ne 0 ] || status=1
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'status=130; cleanup' INT
trap 'status=143; cleanup' TERM

# Leftovers of a campaign that was killed with -9 (ours only: the tchaos- prefix, and the small
# disk's tmpfs, whose source is named tchaos-disk).
remove_all
findmnt -rn -S tchaos-disk -o TARGET 2>/dev/null | xargs -r -n1 umount -l 2>/dev/null || true
if ! [[ "$subnet" =~ ^10\.[0-9]{1,3}\.[0-9]{1,3}$ ]]; then
    echo "chaos.sh: TETRAD_CHAOS_SUBNET must be three octets of 10.0.0.0/8, like 10.77.0" >&2
    exit 2
fi
if ip -4 addr show | grep -q " ${subnet//./\\.}\." || ip -4 route show | grep -q "^${subnet//./\\.}\."; then
    echo "chaos.sh: ${subnet}.0/24 is already used on this machine; set TETRAD_CHAOS_SUBNET=10.x.y" >&2
    exit 2
fi

echo "== chaos: namespaces ${prefix}{${names[*]// /,}} on a bridge in ${hub}, ${subnet}.0/24" >&2
ip netns add "$hub"
ip -n "$hub" link set lo up
ip -n "$hub" link add br0 type bridge
ip -n "$hub" link set br0 up
# The host (the clients and the checker) on the bridge as .254.
ip link add "$host_link" type veth peer name host netns "$hub"
ip -n "$hub" link set host master br0 up
ip addr add "${subnet}.254/24" dev "$host_link"
ip link set "$host_link" up
hosts=()
for index in "${!names[@]}"; do
    name=${names[$index]}
    ns="${prefix}${name}"
    ip="${subnet}.$((index + 1))"
    ip netns add "$ns"
    ip link add "tc-${name}" type veth peer name eth0 netns "$ns"
    ip link set "tc-${name}" netns "$hub"
    ip -n "$hub" link set "tc-${name}" master br0 up
    ip -n "$ns" addr add "${ip}/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    hosts+=("$ip")
done
# Probe what the kernel offers for link faults. This kernel family has no netem, so delay, jitter
# and reordering come from a userspace delayer (tetrad-chaos delay) fed by an NFQUEUE rule; link
# faults need NFQUEUE, and a campaign with link faults fails here rather than run without delays.
if [ "$faults" = all ] || [[ ",${faults// /}," == *,link,* ]]; then
    if ip netns exec "${prefix}v0" iptables -A OUTPUT -d "${subnet}.2" -j NFQUEUE --queue-num 1 --queue-bypass 2>/dev/null \
        && ip netns exec "${prefix}v0" iptables -D OUTPUT -d "${subnet}.2" -j NFQUEUE --queue-num 1 --queue-bypass \
        && ip netns exec "${prefix}v0" "$TETRAD_CHAOS_BIN" delay --queue 1 --check >/dev/null; then
        echo "chaos: note: links get loss (iptables statistic), duplication (iptables TEE), throttling (htb), and delay, jitter and reordering (NFQUEUE and tetrad-chaos delay, no netem)" >&2
    else
        echo "chaos.sh: link faults need NFQUEUE (CONFIG_NETFILTER_NETLINK_QUEUE, CONFIG_NETFILTER_XT_TARGET_NFQUEUE) for their delays; this kernel or iptables lacks it. Run without link faults (--faults with other kinds)" >&2
        exit 2
    fi
fi

echo "== chaos: tetrad testnet --hosts $(IFS=,; echo "${hosts[*]}")" >&2
"$TETRAD_BIN" testnet --validators 4 --accounts 24 --dir "$work/net" --chain-id tetrad-chaos \
    --view-change-timeout-ms 1000 --hosts "$(IFS=,; echo "${hosts[*]}")" >/dev/null

# v3's data/ on a filesystem of its own, small enough to fill (disk-full faults). What the node
# had there (the genesis state) is copied onto it.
small_disk_dir="$work/net/v3/data"
mv "$small_disk_dir" "$work/v3-data-init"
mkdir "$small_disk_dir"
mount -t tmpfs -o size=256m tchaos-disk "$small_disk_dir"
cp -a "$work/v3-data-init/." "$small_disk_dir/"
rm -rf "$work/v3-data-init"

args=(run --net "$work/net" --tetrad "$TETRAD_BIN" --prefix "$prefix" --seed "$seed"
      --duration "$duration" --faults "$faults" --clients "$clients"
      --faketime-lib "$faketime" --small-disk v3 ${extra[@]+"${extra[@]}"})
[ -n "$json" ] && args+=(--json "$json")
# Bounded: the faults, the clients' last answers, convergence and the check.
limit=$((duration + 900))
set +e
timeout --signal=TERM --kill-after=10 "$limit" "$TETRAD_CHAOS_BIN" "${args[@]}" 9>&- &
campaign_pid=$!
wait "$campaign_pid"
status=$?
set -e
campaign_pid=""
if [ "$status" -eq 124 ]; then
    echo "chaos.sh: the campaign did not finish within ${limit} s (seed $seed)" >&2
fi
if [ "$status" -ne 0 ]; then
    echo "chaos.sh: FAILED (exit $status), seed $seed: replay with scripts/chaos.sh --seed $seed --duration $duration --faults $faults${byzantine:+ --byzantine $byzantine --byzantine-node $byzantine_node}" >&2
fi
