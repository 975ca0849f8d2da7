#!/bin/sh
# One entry point for a fresh Debian 12 machine (run as root, or with sudo
# available): installs what is missing, builds, and runs.
#
#   deploy/setup.sh install   Debian packages for build, tests and benchmarks
#   deploy/setup.sh build     install + Release build in ./build
#   deploy/setup.sh test      build + every test: ctest, then the tests again
#                             under ASan+UBSan (including the end-to-end server
#                             tests) and the concurrent core tests under TSan
#   deploy/setup.sh run       build + start slimvecd on 127.0.0.1:50051 (flags and
#                             SLIMVEC_* variables pass through; see slimvecd --help)
#   deploy/setup.sh bench     build + the benchmark's quick set (founding data)
#
# Idempotent: packages already present are not touched, builds are incremental.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=$(nproc 2>/dev/null || echo 2)

PACKAGES="build-essential cmake pkg-config libjemalloc-dev check zlib1g-dev \
libgrpc-dev protobuf-compiler protobuf-compiler-grpc protobuf-c-compiler libprotobuf-c-dev \
grpc-proto libmicrohttpd-dev python3-grpcio python3-protobuf \
prometheus python3-prometheus-client \
python3 python3-numpy python3-hnswlib dataset-fashion-mnist"

install() {
    missing=""
    for p in $PACKAGES; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
            missing="$missing $p"
        fi
    done
    if [ -n "$missing" ]; then
        echo "setup: installing$missing"
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
    fi
    # npm dependencies of the Node.js smoke test (ctest e2e_node). Node and npm
    # are not Debian packages here: without them the test is skipped.
    nodedir="$ROOT/tests/e2e/node"
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "setup: node/npm not found, skipping npm ci in tests/e2e/node (e2e_node will be skipped)"
    elif [ ! -f "$nodedir/package-lock.json" ]; then
        echo "setup: no tests/e2e/node/package-lock.json, skipping npm ci (e2e_node will be skipped)"
    elif [ ! -f "$nodedir/node_modules/.package-lock.json" ] ||
        [ "$nodedir/package-lock.json" -nt "$nodedir/node_modules/.package-lock.json" ]; then
        echo "setup: npm ci in tests/e2e/node"
        (cd "$nodedir" && npm ci --no-audit --no-fund)
    fi
}

# build DIR [cmake options...]
build() {
    dir=$1
    shift
    cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j "$JOBS"
}

run_tests() {
    build "$ROOT/build"
    (cd "$ROOT/build" && ctest --output-on-failure -j "$JOBS")
    echo "setup: tests again under ASan+UBSan"
    build "$ROOT/build-asan" -DSV_ASAN=ON
    (cd "$ROOT/build-asan" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        ctest --output-on-failure -j "$JOBS")
    # gRPC and abseil from Debian are not TSan-instrumented: under TSan the
    # server reports races inside them, so the server is checked under ASan
    # and the engine's concurrent tests under TSan.
    echo "setup: concurrent tests under TSan"
    build "$ROOT/build-tsan" -DSV_TSAN=ON
    (cd "$ROOT/build-tsan" && TSAN_OPTIONS=halt_on_error=1 \
        ctest --output-on-failure -R 'test_concurrency|test_kernels|test_collection|test_durable')
}

cmd=${1:-}
case "$cmd" in
install) install ;;
build) install && build "$ROOT/build" ;;
test) install && run_tests ;;
run)
    shift
    install && build "$ROOT/build" && exec "$ROOT/build/service/slimvecd" "$@"
    ;;
bench) install && build "$ROOT/build" && "$ROOT/build/tests/bench/slimvec-bench" --quick ;;
*)
    echo "usage: deploy/setup.sh install|build|test|run|bench" >&2
    exit 2
    ;;
esac
