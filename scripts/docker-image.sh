#!/usr/bin/env bash
# Builds the runtime image (Dockerfile) from the release binary of the project's own build:
# cargo build --release (a no-op when it is fresh) into $CARGO_TARGET_DIR (scripts/env.sh), then
# `docker build` on a scratch context that holds only the Dockerfile and the binary. Makes the base
# image first where no registry can give it (scripts/docker-base.sh). Prints the image's size.
# Environment:
#   TETRAD_IMAGE            the tag to build (default: tetrad:local)
#   TETRAD_SKIP_CARGO=1     use the binary already in $CARGO_TARGET_DIR/release (do not run cargo)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
image="${TETRAD_IMAGE:-tetrad:local}"

if ! docker info >/dev/null 2>&1; then
    echo "docker-image: the Docker engine is not reachable (docker info failed); is dockerd running?" >&2
    exit 1
fi
if [ "${TETRAD_SKIP_CARGO:-0}" != 1 ]; then
    bash scripts/setup.sh
    cargo build --release --locked -p tetrad-node --bin tetrad >&2
fi
binary="$CARGO_TARGET_DIR/release/tetrad"
[ -x "$binary" ] || { echo "docker-image: $binary is missing (cargo build --release -p tetrad-node --bin tetrad)" >&2; exit 1; }

base="$(sed -n 's/^FROM[[:space:]]\+\([^[:space:]]\+\).*/\1/p' Dockerfile | head -n 1)"
if ! docker image inspect "$base" >/dev/null 2>&1; then
    TETRAD_DOCKER_BASE="$base" bash scripts/docker-base.sh
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/tetrad-docker-image.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
context="$scratch/context"
mkdir "$context"
cp Dockerfile "$context/Dockerfile"
cp "$binary" "$context/tetrad"
# The binary as built carries symbols; the image does not need them.
if command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$context/tetrad" 2>/dev/null || true
fi
chmod 0755 "$context/tetrad"
previous="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
# The classic builder: it needs no buildx plugin (this machine's client has none) and uses the
# local base image without asking a registry. Its deprecation notice is shown only on failure.
if ! DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build --quiet \
    --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    -t "$image" "$context" >"$scratch/build.log" 2>&1; then
    cat "$scratch/build.log" >&2
    echo "docker-image: docker build failed" >&2
    exit 1
fi
# The image this build replaced would stay behind untagged, one per build: remove it (unless a
# container still uses it).
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
    docker rmi "$previous" >/dev/null 2>&1 || true
fi
size="$(docker image inspect -f '{{.Size}}' "$image")"
echo "docker-image: built $image ($(awk -v s="$size" 'BEGIN {printf "%.0f MB", s/1e6}'); base $base, binary $(du -h "$context/tetrad" | cut -f1))" >&2
