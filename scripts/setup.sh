#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test Tetrad: clang and libclang (the rocksdb
# crate's bindgen needs them), curl and strace. Debian/Ubuntu only; does nothing when they are already there.
set -euo pipefail

have_libclang() {
    ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' \
        || ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1
}

packages=()
command -v clang >/dev/null 2>&1 && have_libclang || packages+=(clang libclang-dev)
# curl: the README's session and the RPC tests use it.
command -v curl >/dev/null 2>&1 || packages+=(curl)
# strace: ledger/tests/dir_durability.rs checks which directories are synced.
command -v strace >/dev/null 2>&1 || packages+=(strace)
if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi

echo "setup: installing ${packages[*]} with apt-get" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: need root or sudo to apt-get install clang libclang-dev" >&2; exit 1; }
    sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
