#!/usr/bin/env bash
# The README's "Four validators on four machines", run with the image (a step of scripts/test.sh,
# after scripts/compose-test.sh has built it): four "machines" are four containers on a bridge
# network, each with its own address and its own volume. On each, the operator makes the keys in
# the volume (the secrets never leave it) and sends out only the public key and peer id; a
# coordinator builds the genesis from those with the machines' addresses; each operator inits and
# runs the node; a transfer through one machine commits and is seen on another.
# Bounded by TETRAD_OPERATOR_TEST_TIMEOUT_S (default 300); leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

started=$SECONDS
if [ -z "${TETRAD_OPERATOR_TEST_BOUNDED:-}" ]; then
    TETRAD_OPERATOR_TEST_BOUNDED=1 exec timeout --signal=TERM --kill-after=30 "${TETRAD_OPERATOR_TEST_TIMEOUT_S:-300}" bash "$0" "$@"
fi

fail() { echo "operator-test: FAIL: $*" >&2; exit 1; }
step() { echo "== operator-test [$((SECONDS - started)) s] $*" >&2; }

command -v docker >/dev/null 2>&1 || fail "the docker command is missing: this test needs a Docker engine"
docker info >/dev/null 2>&1 || fail "the Docker engine is not running or not reachable (docker info failed)"
image="${TETRAD_IMAGE:-tetrad:local}"
docker image inspect "$image" >/dev/null 2>&1 || TETRAD_IMAGE="$image" bash scripts/docker-image.sh
tetrad="$CARGO_TARGET_DIR/release/tetrad"

label="tetrad.operator-test=$$"
prefix="tetradops$$"
used_subnets="$(docker network ls -q | xargs -r docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null || true)"
net_prefix=""
for third in $(seq 160 200); do
    case " $used_subnets " in *" 172.29.$third.0/24 "*) continue ;; esac
    net_prefix="172.29.$third"
    break
done
[ -n "$net_prefix" ] || fail "no free /24 in 172.29.160-200.0"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
rpc_port=""
for candidate in $(seq 28400 10 28800); do
    free=1
    for offset in 0 1 2 3; do port_free $((candidate + offset)) || { free=0; break; }; done
    [ $free = 1 ] && { rpc_port=$candidate; break; }
done
[ -n "$rpc_port" ] || fail "no free ports between 28400 and 28803"

work="$(mktemp -d "${TMPDIR:-/tmp}/tetrad-operator-test.XXXXXX")"
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ $status -ne 0 ]; then
        for i in 0 1 2 3; do
            echo "--- machine $i" >&2
            docker logs --tail 15 "$prefix-m$i" >&2 2>/dev/null || true
        done
    fi
    docker ps -aq --filter "label=$label" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker volume ls -q --filter "label=$label" | xargs -r docker volume rm -f >/dev/null 2>&1 || true
    docker network ls -q --filter "label=$label" | xargs -r docker network rm >/dev/null 2>&1 || true
    rm -rf "$work"
    exit $status
}
trap cleanup EXIT
trap 'exit 143' INT TERM

docker network create --label "$label" --subnet "$net_prefix.0/24" "$prefix" >/dev/null
# What "machine i" runs: the image with its own volume as the node home.
on_machine() {
    local i=$1
    shift
    docker run --rm --label "$label" -v "$prefix-m$i:/var/lib/tetrad" "$@"
}

step "on each machine: keys made in the node's volume; only the public halves are printed"
declare -a consensus_keys peer_ids
for i in 0 1 2 3; do
    docker volume create --label "$label" "$prefix-m$i" >/dev/null
    out="$(on_machine "$i" "$image" keys generate --out /var/lib/tetrad/consensus_key.json)"
    consensus_keys[$i]="$(awk '/^public key/ {print $3}' <<<"$out")"
    out="$(on_machine "$i" "$image" keys generate --out /var/lib/tetrad/network_key.json)"
    peer_ids[$i]="$(awk '/^peer id/ {print $3}' <<<"$out")"
    [[ "${consensus_keys[$i]}" =~ ^[0-9a-f]{64}$ ]] || fail "machine $i: no public key in: $out"
    [[ "${peer_ids[$i]}" =~ ^12D3Koo ]] || fail "machine $i: no peer id in: $out"
done

step "the coordinator: genesis from the public keys and the machines' addresses"
coordinator() { docker run --rm --label "$label" --user "$(id -u):$(id -g)" -v "$work:/work" -w /work "$image" "$@"; }
coordinator genesis new --chain-id tetrad-ops --out genesis.json >/dev/null
for i in 0 1 2 3; do
    coordinator genesis add-validator --genesis genesis.json --name "v$i" --consensus-key "${consensus_keys[$i]}" \
        --peer-id "${peer_ids[$i]}" --p2p-address "/ip4/$net_prefix.$((10 + i))/tcp/26000" >/dev/null
done
# An account holder's key, made where its holder keeps it (here: the test's host).
"$tetrad" keys generate --out "$work/account.json" >/dev/null
account="$("$tetrad" keys show "$work/account.json" | awk '/^public key/ {print $3}')"
coordinator genesis add-account --genesis genesis.json --address "$account" --balance 1000000 >/dev/null
validated="$(coordinator genesis validate genesis.json)" || fail "genesis validate: $validated"
echo "$validated" | grep -q "genesis.json: valid" || fail "genesis validate: $validated"

step "on each machine: init with the genesis, then run the node"
for i in 0 1 2 3; do
    out="$(on_machine "$i" -v "$work/genesis.json:/genesis.json:ro" "$image" init --home /var/lib/tetrad \
        --genesis /genesis.json --p2p-listen /ip4/0.0.0.0/tcp/26000 --rpc-listen 0.0.0.0:8545)"
    echo "$out" | grep -q "role            validator $i (v$i)" || fail "machine $i: init did not find its validator slot: $out"
    docker run -d --label "$label" --name "$prefix-m$i" --network "$prefix" --ip "$net_prefix.$((10 + i))" \
        -p "127.0.0.1:$((rpc_port + i)):8545" -v "$prefix-m$i:/var/lib/tetrad" "$image" >/dev/null
done
deadline=$((SECONDS + 120))
for i in 0 1 2 3; do
    while [ "$(docker inspect -f '{{.State.Health.Status}}' "$prefix-m$i")" != healthy ]; do
        [ $SECONDS -lt $deadline ] || fail "machine $i not healthy within 120 s"
        sleep 1
    done
done

step "a transfer through machine 0 commits and machine 3 shows it"
out="$("$tetrad" tx transfer --key "$work/account.json" --to "${consensus_keys[0]}" --amount 7 \
    --genesis "$work/genesis.json" --rpc "http://127.0.0.1:$rpc_port" --wait --timeout-ms 60000 2>&1)" \
    || fail "transfer: $out"
echo "$out" | grep -q 'proven final by the checkpoint at height' || fail "transfer: $out"
deadline=$((SECONDS + 30))
until curl -s --max-time 3 "http://127.0.0.1:$((rpc_port + 3))/accounts/$account" | grep -q '"balance":999993'; do
    [ $SECONDS -lt $deadline ] || fail "machine 3 does not show the transfer within 30 s"
    sleep 1
done
echo "operator-test: passed in $((SECONDS - started)) s" >&2
