#!/usr/bin/env bash
# A 4-validator + 1 full node network in containers on this machine, with Docker Compose:
#   scripts/compose.sh up       build tetrad and its image, generate the network (once), start it,
#                               wait until every container is healthy, print the RPC URLs
#   scripts/compose.sh status   each container's state and health, and each node's /health
#   scripts/compose.sh down     remove the containers, the network, the volumes and the directory
# Each node is its own container with its own address on the compose network and its own volume;
# node i's RPC is published on 127.0.0.1:BASE+2i+1. The network is made by
#   tetrad testnet --dir DIR --hosts A.B.C.10,…,A.B.C.13,A.B.C.20 --compose …
# Environment:
#   TETRAD_COMPOSE_DIR       where the network's files live (default: /tmp/tetrad-compose)
#   TETRAD_COMPOSE_PROJECT   the compose project name (default: tetrad); containers are PROJECT_v0_1 …
#   TETRAD_COMPOSE_SUBNET    an IPv4 /24 for the compose network (default: 172.28.0.0/24)
#   TETRAD_BASE_PORT         host ports of RPC: BASE+1, BASE+3, … (default: 26700)
#   TETRAD_IMAGE             default tetrad:local
#   TETRAD_VIEW_CHANGE_TIMEOUT_MS   the genesis view-change timeout (default: the genesis default)
#   TETRAD_SKIP_CARGO=1      use the binary already in $CARGO_TARGET_DIR/release
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

dir="${TETRAD_COMPOSE_DIR:-/tmp/tetrad-compose}"
project="${TETRAD_COMPOSE_PROJECT:-tetrad}"
subnet="${TETRAD_COMPOSE_SUBNET:-172.28.0.0/24}"
base_port="${TETRAD_BASE_PORT:-26700}"
image="${TETRAD_IMAGE:-tetrad:local}"
tetrad="$CARGO_TARGET_DIR/release/tetrad"
nodes=(v0 v1 v2 v3 full0)
healthy_within_s="${TETRAD_COMPOSE_HEALTHY_WITHIN_S:-120}"

die() { echo "compose: $*" >&2; exit 1; }

# Compose v2 (`docker compose`) where installed, else Compose v1 (`docker-compose`).
compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -p "$project" -f "$dir/compose.yaml" "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose -p "$project" -f "$dir/compose.yaml" "$@"
    else
        die "neither \`docker compose\` nor docker-compose is installed"
    fi
}

need_engine() {
    docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed); is dockerd running?"
}

# The container of a service (empty if it has none).
container_of() {
    compose ps -q "$1" 2>/dev/null | head -n 1
}

rpc_of() {
    local index=$1
    echo "http://127.0.0.1:$((base_port + 2 * index + 1))"
}

generate() {
    [[ "$subnet" =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/24$ ]] || die "TETRAD_COMPOSE_SUBNET=$subnet: expected A.B.C.0/24"
    local prefix="${BASH_REMATCH[1]}"
    local hosts="$prefix.10,$prefix.11,$prefix.12,$prefix.13,$prefix.20"
    local extra=()
    [ -n "${TETRAD_VIEW_CHANGE_TIMEOUT_MS:-}" ] && extra+=(--view-change-timeout-ms "$TETRAD_VIEW_CHANGE_TIMEOUT_MS")
    "$tetrad" testnet --dir "$dir" --validators 4 --accounts "${TETRAD_ACCOUNTS:-10}" --hosts "$hosts" \
        --compose --subnet "$subnet" --image "$image" --base-port "$base_port" \
        --chain-id tetrad-compose "${extra[@]}"
}

wait_healthy() {
    local deadline=$((SECONDS + healthy_within_s)) waiting
    while :; do
        waiting=()
        for node in "${nodes[@]}"; do
            local id state
            id="$(container_of "$node")"
            state="$( [ -n "$id" ] && docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null || echo missing/)"
            [ "$state" = running/healthy ] || waiting+=("$node:$state")
        done
        [ ${#waiting[@]} -eq 0 ] && return 0
        if [ $SECONDS -ge $deadline ]; then
            echo "compose: not healthy within ${healthy_within_s}s: ${waiting[*]}" >&2
            return 1
        fi
        sleep 1
    done
}

up() {
    need_engine
    TETRAD_IMAGE="$image" bash scripts/docker-image.sh
    if [ -f "$dir/compose.yaml" ]; then
        echo "compose: starting the network in $dir again (scripts/compose.sh down removes it)" >&2
    else
        generate
    fi
    compose up -d
    if ! wait_healthy; then
        compose ps >&2 || true
        exit 1
    fi
    echo "network $project up: chain $(sed -n 's/.*"chain_id": "\(.*\)".*/\1/p' "$dir/testnet.json" | head -n 1), files in $dir"
    local index=0
    for node in "${nodes[@]}"; do
        echo "  $node  rpc $(rpc_of $index)  container $(docker inspect -f '{{.Name}}' "$(container_of "$node")" | tr -d /)"
        index=$((index + 1))
    done
    echo "try: $tetrad tx transfer --key $dir/accounts/account-0.json --to $dir/accounts/account-1.json --amount 5 --genesis $dir/genesis.json --rpc $(rpc_of 0) --wait"
}

status() {
    need_engine
    [ -f "$dir/compose.yaml" ] || die "no network in $dir (scripts/compose.sh up)"
    local index=0
    for node in "${nodes[@]}"; do
        local id state health
        id="$(container_of "$node")"
        state="$( [ -n "$id" ] && docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null || echo "no container")"
        health="$("$tetrad" health --rpc "$(rpc_of $index)" --timeout-ms 2000 2>&1 | head -n 1)" || true
        printf '%-6s %-22s %s\n' "$node" "$state" "$health"
        index=$((index + 1))
    done
}

down() {
    need_engine
    if [ -f "$dir/compose.yaml" ]; then
        compose down -v --remove-orphans --timeout 20
    fi
    rm -rf "$dir"
    echo "network $project removed (containers, network, volumes, $dir)"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: scripts/compose.sh up|down|status" >&2; exit 2 ;;
esac
