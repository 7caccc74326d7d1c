#!/usr/bin/env bash
# Makes the base image that Dockerfile names (debian:bookworm-slim) from Debian's packages,
# for a Docker engine that reaches no image registry: debootstrap --variant=minbase into a scratch
# folder, trimmed (apt lists and caches, docs, man pages, locales), then `docker import`.
# Idempotent: does nothing when the engine already has the image (pulled or made here).
# Environment:
#   TETRAD_DOCKER_BASE     the tag to make (default: debian:bookworm-slim, the Dockerfile's FROM)
#   TETRAD_DEBIAN_MIRROR   the Debian mirror (default: the first deb.debian.org-style URI apt uses
#                          here, else http://deb.debian.org/debian)
set -euo pipefail

base="${TETRAD_DOCKER_BASE:-debian:bookworm-slim}"
suite="bookworm"

if ! docker info >/dev/null 2>&1; then
    echo "docker-base: the Docker engine is not reachable (docker info failed); is dockerd running?" >&2
    exit 1
fi
if docker image inspect "$base" >/dev/null 2>&1; then
    echo "docker-base: $base is already in the engine; nothing to do" >&2
    exit 0
fi

mirror="${TETRAD_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    # The mirror apt already uses here (deb822 "URIs:" or one-line "deb URI suite"), if any.
    mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -n -e 's/^URIs:[[:space:]]*\(http[^[:space:]]*\/debian\)[[:space:]]*$/\1/p' \
                 -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\(http[^[:space:]]*\/debian\)[[:space:]]\+bookworm[[:space:]].*/\2/p' \
        | head -n 1 || true)"
    mirror="${mirror:-http://deb.debian.org/debian}"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || { echo "docker-base: need debootstrap (apt-get install debootstrap) or root to install it" >&2; exit 1; }
    echo "docker-base: installing debootstrap with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "docker-base: debootstrap needs root (it creates device nodes and chroots)" >&2
    exit 1
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/tetrad-docker-base.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
root="$scratch/rootfs"
started=$(date +%s)
echo "docker-base: debootstrap --variant=minbase $suite from $mirror (a few minutes)" >&2
if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$scratch/debootstrap.log" 2>&1; then
    tail -n 30 "$scratch/debootstrap.log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
    echo "docker-base: debootstrap failed" >&2
    exit 1
fi
# What a slim image leaves out: package caches and lists, documentation, locales, logs.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
    "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/* "$root"/debootstrap
printf 'deb %s %s main\n' "$mirror" "$suite" >"$root/etc/apt/sources.list"
tar --numeric-owner -C "$root" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'LABEL org.opencontainers.image.description="Debian bookworm minbase, made locally by tetrad scripts/docker-base.sh"' \
    - "$base" >/dev/null
echo "docker-base: made $base ($(docker image inspect -f '{{.Size}}' "$base" | awk '{printf "%.0f MB", $1/1e6}')) in $(( $(date +%s) - started )) s" >&2
