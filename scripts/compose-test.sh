#!/usr/bin/env bash
# The container test (a step of scripts/test.sh): builds the image, starts the compose network of
# scripts/compose.sh (4 validators + 1 full node, each its own container, address and volume) and
# checks, through the RPC ports the containers publish on the host:
#   1. a transfer submitted to one container commits and every other node shows its effect;
#   2. `docker kill` of a validator: the rest commit; after `docker start` it catches up;
#   3. `docker pause` of the primary: the rest change view and commit; after `unpause` it catches up;
#   4. `docker network disconnect` of a validator: the rest commit; after `connect` it catches up;
#   5. `docker stop` (SIGTERM) stops a node cleanly (exit code 0, within the grace period);
#   6. `docker compose down -v` leaves no container, network or volume of the project.
# Every wait is bounded; the whole run is bounded by TETRAD_COMPOSE_TEST_TIMEOUT_S (default 600).
# A missing or stopped Docker engine is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

started=$SECONDS
limit_s="${TETRAD_COMPOSE_TEST_TIMEOUT_S:-600}"
# Re-run under `timeout` so that nothing can hang past the limit (the trap below still cleans up).
if [ -z "${TETRAD_COMPOSE_TEST_BOUNDED:-}" ]; then
    TETRAD_COMPOSE_TEST_BOUNDED=1 exec timeout --signal=TERM --kill-after=60 "$limit_s" bash "$0" "$@"
fi

fail() { echo "compose-test: FAIL: $*" >&2; exit 1; }
step() { echo "== compose-test [$((SECONDS - started)) s] $*" >&2; }

command -v docker >/dev/null 2>&1 || fail "the docker command is missing: this test needs a Docker engine (and Compose)"
docker info >/dev/null 2>&1 || fail "the Docker engine is not running or not reachable (docker info failed)"
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 \
    || fail "Docker Compose is missing (neither \`docker compose\` nor docker-compose)"
command -v python3 >/dev/null 2>&1 || fail "python3 is missing (it reads the RPC's JSON here)"

# A project, subnet and port range of our own, so that a second run beside this one (or a network
# started by hand with scripts/compose.sh) does not collide.
project="tetradtest$$"
used_subnets="$(docker network ls -q | xargs -r docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null || true)"
subnet=""
for third in $(seq 100 140); do
    candidate="172.29.$third.0/24"
    case " $used_subnets " in *" $candidate "*) continue ;; esac
    subnet="$candidate"
    break
done
[ -n "$subnet" ] || fail "no free /24 in 172.29.100-140.0 for the compose network"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
base_port=""
for candidate in $(seq 27700 20 28300); do
    free=1
    for offset in 1 3 5 7 9; do port_free $((candidate + offset)) || { free=0; break; }; done
    [ $free = 1 ] && { base_port=$candidate; break; }
done
[ -n "$base_port" ] || fail "no free RPC ports between 27700 and 28310"

dir="$(mktemp -d "${TMPDIR:-/tmp}/tetrad-compose-test.XXXXXX")"
rmdir "$dir"
export TETRAD_COMPOSE_DIR="$dir" TETRAD_COMPOSE_PROJECT="$project" TETRAD_COMPOSE_SUBNET="$subnet" \
    TETRAD_BASE_PORT="$base_port" TETRAD_IMAGE="${TETRAD_IMAGE:-tetrad:local}" RUST_LOG="${RUST_LOG:-info,libp2p=warn}"
tetrad="$CARGO_TARGET_DIR/release/tetrad"
nodes=(v0 v1 v2 v3 full0)
network="${project}_tetrad"

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -p "$project" -f "$dir/compose.yaml" "$@"
    else
        docker-compose -p "$project" -f "$dir/compose.yaml" "$@"
    fi
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ $status -ne 0 ] && [ -f "$dir/compose.yaml" ]; then
        echo "compose-test: the last log lines of every node:" >&2
        for node in "${nodes[@]}"; do
            echo "--- $node" >&2
            compose logs --no-color --tail 15 "$node" >&2 2>/dev/null || true
        done
    fi
    if [ -f "$dir/compose.yaml" ]; then
        compose down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
    fi
    # Whatever compose could not remove, by the project's label.
    docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker volume ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker volume rm -f >/dev/null 2>&1 || true
    docker network ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker network rm >/dev/null 2>&1 || true
    rm -rf "$dir"
    exit $status
}
trap cleanup EXIT
trap 'exit 143' INT TERM

index_of() {
    local i
    for i in "${!nodes[@]}"; do [ "${nodes[$i]}" = "$1" ] && { echo "$i"; return; }; done
    fail "no node $1"
}
rpc_of() { echo "http://127.0.0.1:$((base_port + 2 * $(index_of "$1") + 1))"; }
container_of() { compose ps -q "$1" | head -n 1; }
# A field of a node's JSON answer at PATH, or nothing (no answer, no field).
field() {
    curl -s --max-time 3 "$(rpc_of "$1")$2" 2>/dev/null \
        | python3 -c 'import json, sys
try:
    value = json.load(sys.stdin)
    for key in sys.argv[1].split("."):
        value = value[key]
    print(value)
except Exception:
    pass' "$3" || true
}
balance() { field "$1" "/accounts/$recipient" balance; }

# Waits up to $1 seconds until every node in the rest of the arguments shows $expected_balance.
wait_balance() {
    local within=$1 deadline node behind
    shift
    deadline=$((SECONDS + within))
    while :; do
        behind=()
        for node in "$@"; do
            [ "$(balance "$node")" = "$expected_balance" ] || behind+=("$node:$(balance "$node")")
        done
        [ ${#behind[@]} -eq 0 ] && return 0
        [ $SECONDS -ge $deadline ] && fail "within ${within}s not every node shows balance $expected_balance: ${behind[*]}"
        sleep 1
    done
}

# Submits a transfer of $2 from account $1 to the recipient through node $3 and waits for its
# commit (proven final from the genesis file by `tx transfer --wait`); the nodes that must then show it
# follow.
transfer() {
    local account=$1 amount=$2 via=$3
    shift 3
    local output
    output="$("$tetrad" tx transfer --key "$dir/accounts/account-$account.json" --to "$recipient" --amount "$amount" \
        --genesis "$dir/genesis.json" --rpc "$(rpc_of "$via")" --wait --timeout-ms 60000 2>&1)" \
        || fail "transfer through $via did not commit: $output"
    echo "$output" | grep -q '^committed at height' || fail "transfer through $via: $output"
    expected_balance=$((expected_balance + amount))
    echo "   transfer of $amount through $via: $(echo "$output" | head -n 1)" >&2
    wait_balance 30 "$@"
}

step "image and network up (project $project, subnet $subnet, RPC ports from $((base_port + 1)))"
bash scripts/compose.sh up >&2
for node in "${nodes[@]}"; do
    [ -n "$(container_of "$node")" ] || fail "no container for $node"
done
# Every node in its own container at its own address, with its own volume.
addresses="$(for node in "${nodes[@]}"; do docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$(container_of "$node")"; done | sort -u | wc -l)"
[ "$addresses" = ${#nodes[@]} ] || fail "expected ${#nodes[@]} distinct container addresses, found $addresses"
volumes="$(for node in "${nodes[@]}"; do docker inspect -f '{{range .Mounts}}{{if eq .Destination "/var/lib/tetrad"}}{{.Name}}{{end}}{{end}}' "$(container_of "$node")"; done | sort -u | wc -l)"
[ "$volumes" = ${#nodes[@]} ] || fail "expected ${#nodes[@]} distinct home volumes, found $volumes"
[ "$(docker inspect -f '{{.Config.User}}' "$(container_of v0)")" = "10001:10001" ] || fail "the node does not run as user 10001"

[ "$(field full0 /status validating)" = False ] || fail "full0 is not a full node (its /status says validating)"
[ "$(field v0 /status validating)" = True ] || fail "v0 is not validating"
recipient="$("$tetrad" keys show "$dir/accounts/account-9.json" | awk '/public key/ {print $3}')"
expected_balance="$(balance v0)"
[ -n "$expected_balance" ] || fail "v0 does not answer /accounts/$recipient"

step "1. a transfer through v1 commits and every node shows it"
transfer 0 11 v1 v0 v1 v2 v3 full0

step "2. docker kill v3: the rest commit; after docker start it catches up"
docker kill "$(container_of v3)" >/dev/null
transfer 1 12 v0 v0 v1 v2 full0
docker start "$(container_of v3)" >/dev/null
wait_balance 90 v3

step "3. docker pause of the primary: the rest change view and commit; after unpause it catches up"
primary="v$(field v0 /status primary)"
[[ "$primary" =~ ^v[0-3]$ ]] || fail "v0's /status names no primary ($primary)"
view_before="$(field v0 /status view)"
others=()
for node in "${nodes[@]}"; do [ "$node" = "$primary" ] || others+=("$node"); done
docker pause "$(container_of "$primary")" >/dev/null
transfer 2 13 "${others[0]}" "${others[@]}"
view_after="$(field "${others[0]}" /status view)"
[ "$view_after" -gt "$view_before" ] || fail "the view did not change with the primary $primary paused ($view_before → $view_after)"
docker unpause "$(container_of "$primary")" >/dev/null
wait_balance 90 "$primary"
echo "   the primary was $primary; view $view_before → $view_after" >&2

step "4. docker network disconnect of a validator: the rest commit; after connect it catches up"
primary="v$(field v0 /status primary)"
cut=""
for node in v0 v1 v2 v3; do [ "$node" = "$primary" ] || { cut=$node; break; }; done
cut_ip="$(docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$(container_of "$cut")")"
others=()
for node in "${nodes[@]}"; do [ "$node" = "$cut" ] || others+=("$node"); done
docker network disconnect "$network" "$(container_of "$cut")"
transfer 3 14 "${others[0]}" "${others[@]}"
# Asked from inside its container (its published port is gone with the network): it is behind.
cut_balance="$(docker exec "$(container_of "$cut")" tetrad query account "$recipient" --rpc http://127.0.0.1:8545 --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["balance"])')" || fail "$cut does not answer from inside its container"
[ "$cut_balance" != "$expected_balance" ] || fail "$cut shows the transfer while disconnected: the cut did not cut"
docker network connect --ip "$cut_ip" "$network" "$(container_of "$cut")"
wait_balance 90 "$cut"

step "5. docker stop (SIGTERM) stops a node cleanly"
stop_started=$SECONDS
docker stop --time 20 "$(container_of v2)" >/dev/null
stop_s=$((SECONDS - stop_started))
exit_code="$(docker inspect -f '{{.State.ExitCode}}' "$(container_of v2)")"
[ "$exit_code" = 0 ] || fail "v2 exited with code $exit_code on SIGTERM (137 would mean it was killed after the grace period)"
[ $stop_s -lt 20 ] || fail "v2 took ${stop_s}s to stop on SIGTERM"
docker start "$(container_of v2)" >/dev/null
transfer 4 15 v0 v0 v1 v2 v3 full0
echo "   stopped in ${stop_s}s with exit code 0, restarted and caught up" >&2

step "6. docker compose down -v leaves nothing behind"
compose down -v --remove-orphans --timeout 20 >/dev/null 2>&1
left="$(docker ps -aq --filter "label=com.docker.compose.project=$project"; docker volume ls -q --filter "label=com.docker.compose.project=$project"; docker network ls -q --filter "label=com.docker.compose.project=$project")"
[ -z "$left" ] || fail "left behind after down -v: $left"
rm -rf "$dir"
echo "compose-test: passed in $((SECONDS - started)) s (image $(docker image inspect -f '{{.Size}}' "$TETRAD_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
