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
#   deploy/setup.sh cluster   build + a local cluster in the foreground: three
#                             nats-server, three etcd and 2 shards x 2 replicas of slimvecd
#                             (deploy/cluster/local.sh)
#
#   deploy/setup.sh install-build     only the Debian packages that compiling needs
#   deploy/setup.sh package DIR       install-build + the same build of ./build as
#                                     "test" + cmake --install into DIR (the
#                                     container image's build stage runs this)
#   deploy/setup.sh runtime-packages  the Debian packages the binaries need at run
#                                     time (the image's runtime stage installs them)
#
# SV_DRY_RUN=1 prints each command (apt-get, npm, cmake, ctest, ...) as
# "+ command" instead of running it; tests/deploy/test_image.py compares what
# "package" and "test" build that way.
#
# Idempotent: packages already present are not touched, builds are incremental.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=$(nproc 2>/dev/null || echo 2)
DRY=${SV_DRY_RUN:-0}

# What compiling needs (check: CMake requires it at configure time; python3:
# the build finds it for the generated stubs; json-c: the slimvec client's
# payloads and filters).
BUILD_PACKAGES="build-essential cmake pkg-config libjemalloc-dev check \
libgrpc-dev protobuf-compiler protobuf-compiler-grpc protobuf-c-compiler libprotobuf-c-dev \
grpc-proto libmicrohttpd-dev libsodium-dev libssl-dev libnats-dev libjson-c-dev python3"

# Only for tests, benchmarks and the deploy checks.
TEST_PACKAGES="zlib1g-dev python3-grpcio python3-protobuf \
prometheus python3-prometheus-client \
python3-numpy python3-hnswlib libhnswlib-dev python3-faiss g++ dataset-fashion-mnist \
docker-compose yamllint openssl nats-server etcd-server"

# What slimvecd and slimvec link against (their DT_NEEDED libraries), less
# libc6 which every Debian image has. apt brings the rest (abseil, c-ares,
# re2, OpenSSL, GnuTLS, zlib, ...) as their dependencies; test_image.py
# checks every library ldd lists against this list's dependency closure.
RUNTIME_PACKAGES="libgrpc29 libprotobuf-c1 libmicrohttpd12 libjemalloc2 libsodium23 libssl3 libnats3.4 libjson-c5"

# x CMD...: run CMD, or print it under SV_DRY_RUN=1.
x() {
    if [ "$DRY" = 1 ]; then
        echo "+ $*"
    else
        "$@"
    fi
}

# x_in DIR CMD...: the same, in DIR.
x_in() {
    d=$1
    shift
    if [ "$DRY" = 1 ]; then
        echo "+ (cd $d && $*)"
    else
        (cd "$d" && "$@")
    fi
}

# install_packages PACKAGE...: apt-get install those not installed yet.
install_packages() {
    missing=""
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
            missing="$missing $p"
        fi
    done
    if [ -n "$missing" ]; then
        echo "setup: installing$missing"
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO=sudo
        x $SUDO apt-get update -qq
        # shellcheck disable=SC2086
        x $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    fi
}

# npm_ci DIR NAME: npm ci in DIR when it has a package-lock.json (its Node.js
# test NAME fails otherwise).
npm_ci() {
    nodedir=$1
    rel=${nodedir#"$ROOT"/}
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "setup: node/npm not found, skipping npm ci in $rel ($2 will be skipped)"
    elif [ ! -f "$nodedir/package-lock.json" ]; then
        echo "setup: no $rel/package-lock.json, skipping npm ci ($2 will be skipped)"
    elif [ ! -f "$nodedir/node_modules/.package-lock.json" ] ||
        [ "$nodedir/package-lock.json" -nt "$nodedir/node_modules/.package-lock.json" ]; then
        echo "setup: npm ci in $rel"
        x_in "$nodedir" npm ci --no-audit --no-fund
    fi
}

install_build() {
    # shellcheck disable=SC2086
    install_packages $BUILD_PACKAGES
}

install() {
    # shellcheck disable=SC2086
    install_packages $BUILD_PACKAGES $TEST_PACKAGES
    # The Node.js tests need node and npm: Debian's (18.x) when none is there.
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        install_packages nodejs npm
    fi
    npm_ci "$ROOT/tests/e2e/node" e2e_node
    npm_ci "$ROOT/tests/deploy/k8s" "the Kubernetes manifest test"
}

# build DIR [cmake options...]
build() {
    dir=$1
    shift
    if [ "$DRY" = 1 ]; then
        echo "+ cmake -S $ROOT -B $dir -DCMAKE_BUILD_TYPE=RelWithDebInfo${*:+ $*}"
    else
        cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    fi
    x cmake --build "$dir" -j "$JOBS"
}

# package DIR: the build "test" does first, installed under DIR.
package() {
    install_build
    build "$ROOT/build"
    x cmake --install "$ROOT/build" --prefix "$1"
}

run_tests() {
    build "$ROOT/build"
    x_in "$ROOT/build" ctest --output-on-failure -j "$JOBS"
    echo "setup: tests again under ASan+UBSan"
    build "$ROOT/build-asan" -DSV_ASAN=ON
    x_in "$ROOT/build-asan" env ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        ctest --output-on-failure -j "$JOBS"
    # gRPC and abseil from Debian are not TSan-instrumented: under TSan the
    # server reports races inside them, so the server is checked under ASan
    # and the engine's concurrent tests under TSan.
    echo "setup: concurrent tests under TSan"
    build "$ROOT/build-tsan" -DSV_TSAN=ON
    x_in "$ROOT/build-tsan" env TSAN_OPTIONS=halt_on_error=1 \
        ctest --output-on-failure -R 'test_concurrency|test_kernels|test_collection|test_durable|test_service|test_auth|test_filtered_concurrent|test_upsert_concurrent'
}

cmd=${1:-}
case "$cmd" in
install) install ;;
install-build) install_build ;;
build) install && build "$ROOT/build" ;;
test) install && run_tests ;;
package)
    if [ $# -ne 2 ] || [ -z "$2" ]; then
        echo "usage: deploy/setup.sh package DIR" >&2
        exit 2
    fi
    package "$2"
    ;;
runtime-packages) echo "$RUNTIME_PACKAGES" | tr ' ' '\n' ;;
cluster)
    install && build "$ROOT/build"
    x "$ROOT/deploy/cluster/local.sh" "$ROOT/build/service/slimvecd"
    ;;
run)
    shift
    install && build "$ROOT/build"
    if [ "$DRY" = 1 ]; then
        echo "+ $ROOT/build/service/slimvecd $*"
    else
        exec "$ROOT/build/service/slimvecd" "$@"
    fi
    ;;
bench) install && build "$ROOT/build" && x "$ROOT/build/tests/bench/slimvec-bench" --quick ;;
*)
    echo "usage: deploy/setup.sh install|install-build|build|test|run|bench|package DIR|runtime-packages" >&2
    exit 2
    ;;
esac
