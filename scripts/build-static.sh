#!/usr/bin/env bash
# Builds a statically linked `kvstore` and the image kompact-kv:latest (FROM scratch)
# around it. Nothing is pulled: the image holds only the binary and docker/conf/.
#
# Usage: scripts/build-static.sh [--no-image] [--tag IMAGE]
#   --no-image   build the binary only
#   --tag IMAGE  tag the image IMAGE instead of kompact-kv:latest
#
# The static build uses its own target directory, target/static, because it needs
# different RUSTFLAGS (which would otherwise invalidate target/release). The binary
# ends up in target/static/x86_64-unknown-linux-gnu/release/kvstore.
set -euo pipefail
cd "$(dirname "$0")/.."

image="kompact-kv:latest"
build_image=1
while [ $# -gt 0 ]; do
    case "$1" in
        --no-image) build_image=0 ;;
        --tag) shift; image="${1:?--tag needs a value}" ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "build-static.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

triple="x86_64-unknown-linux-gnu"
echo "== static kvstore ($triple, +crt-static, target/static)"
CARGO_TARGET_DIR=target/static RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$triple" -p kvstore
bin="target/static/$triple/release/kvstore"

# A static binary has no program interpreter; refuse to put anything else into a
# scratch image, where it could not start.
if command -v file >/dev/null 2>&1 && file -L "$bin" | grep -q 'dynamically linked'; then
    if ! file -L "$bin" | grep -q 'static-pie'; then
        echo "build-static.sh: $bin is dynamically linked" >&2
        exit 1
    fi
fi

[ "$build_image" = 1 ] || { echo "$bin"; exit 0; }

ctx="target/docker/context"
rm -rf "$ctx"
mkdir -p "$ctx"
cp docker/Dockerfile "$ctx/Dockerfile"
# The release profile keeps line tables (debug = 1): 60 MB. The image gets a copy
# without debug information but with symbols, so that a panic's backtrace names
# functions (about 11 MB); the full binary stays in target/.
if command -v strip >/dev/null 2>&1; then
    strip --strip-debug -o "$ctx/kvstore" "$bin"
else
    cp "$bin" "$ctx/kvstore"
fi
cp -r docker/conf "$ctx/conf"
echo "== docker build -t $image"
# The legacy builder needs nothing from a registry for FROM scratch; BuildKit
# (when the CLI has it) does not either.
docker build -q -t "$image" "$ctx"
echo "image $image ready"
