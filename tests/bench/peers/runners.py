"""How compare.py runs each peer: its command line, and the native build.

Every peer takes --base --query --gt --metric --threads --M
--ef-construction --ef --dataset --json and writes JSON in the shape of
hnswlib_bench.py's; with compare.py --filter-selectivity each also gets
--filter-dir (slimvec-bench --filter-out's files) and --filter-selectivity
and adds a `filtered` series (FAISS with an IDSelectorBitmap, hnswlib 0.6.2
with the failing rows marked deleted).
"""

import hashlib
import os
import shutil
import subprocess

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE_SRC = os.path.join(BENCH_DIR, "peers", "hnswlib_native.cpp")
NATIVE_FLAGS = ["-O3", "-march=native", "-std=c++17", "-pthread"]
HNSWLIB_HEADERS = "/usr/include/hnswlib"

class PeerError(Exception):
    """A peer that cannot be run here; compare.py reports it and goes on."""


# The sweep for all engines unless told otherwise (compare.py --efs).
DEFAULT_EFS = "10,16,20,32,40,50,64,80,100,128,160,200,256,400,512"
PEERS = ("hnswlib-native", "faiss", "hnswlib-debian")
NOTES = {
    "hnswlib-native": "hnswlib-native: Debian's hnswlib 0.6.2 headers compiled here with g++ "
                      "-O3 -march=native (its widest SIMD kernels); per-query QPS from C++, "
                      "no interpreter in the loop.",
    "faiss": "faiss: IndexHNSWSQ8 (8-bit scalar quantiser per dimension, no re-ranking) from "
             "Debian's python3-faiss 1.7.3, built generic (no AVX2 kernels); one search call per "
             "query from Python ('batch call': one single-thread call over all queries).",
    "hnswlib-debian": "hnswlib-debian: Debian's python3-hnswlib, built without AVX (SSE only); one "
                      "knn_query call per query from Python ('batch call': one single-thread call).",
}


def cache_dir(explicit=None):
    """Where compiled peers are kept: --peer-cache, $SLIMVEC_BENCH_CACHE,
    or $XDG_CACHE_HOME (~/.cache)/slimvec-bench."""
    if explicit:
        return explicit
    if os.environ.get("SLIMVEC_BENCH_CACHE"):
        return os.environ["SLIMVEC_BENCH_CACHE"]
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "slimvec-bench")


def _native_key(cxx):
    """What the binary depends on: the source, the compiler, the flags, the
    hnswlib headers and this CPU's features (-march=native)."""
    h = hashlib.sha256()
    with open(NATIVE_SRC, "rb") as f:
        h.update(f.read())
    h.update(" ".join(NATIVE_FLAGS).encode())
    h.update(subprocess.run([cxx, "--version"], capture_output=True).stdout)
    if os.path.isdir(HNSWLIB_HEADERS):
        for name in sorted(os.listdir(HNSWLIB_HEADERS)):
            with open(os.path.join(HNSWLIB_HEADERS, name), "rb") as f:
                h.update(name.encode() + f.read())
    try:
        with open("/proc/cpuinfo") as f:
            h.update(next((l for l in f if l.startswith("flags")), "").encode())
    except OSError:
        pass
    return h.hexdigest()[:16]


def native_binary(cache):
    """The hnswlib-native binary for this source and CPU, compiled into the
    cache on first use. PeerError, with a hint, when it cannot be built."""
    cxx = os.environ.get("CXX") or "g++"
    if not shutil.which(cxx):
        raise PeerError(f"{cxx} not found: install g++ (Debian: apt-get install g++ libhnswlib-dev)")
    path = os.path.join(cache, f"hnswlib-native-{_native_key(cxx)}")
    if os.access(path, os.X_OK):
        return path
    os.makedirs(cache, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    cmd = [cxx, *NATIVE_FLAGS, "-o", tmp, NATIVE_SRC]
    print("$ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise PeerError("could not compile hnswlib_native.cpp (needs Debian's libhnswlib-dev and g++; "
                        "or pass --hnswlib-native PATH, or leave the peer out of --peers)")
    os.replace(tmp, path)
    return path


def peer_command(name, args, files, out_json):
    """The command line that runs peer name on slimvec's files."""
    common = ["--base", files["base"], "--query", files["query"], "--gt", files["gt"],
              "--metric", args.metric, "--threads", str(args.threads),
              "--M", str(args.hnsw_M), "--ef-construction", str(args.hnsw_efc),
              "--ef", args.efs, "--json", out_json]
    if args.dataset:
        common += ["--dataset", args.dataset]
    if getattr(args, "filter_dir", None):
        common += ["--filter-dir", args.filter_dir, "--filter-selectivity", args.filter_selectivity]
    if name == "hnswlib-native":
        return [args.hnswlib_native or native_binary(cache_dir(args.peer_cache))] + common
    if name == "faiss":
        return [args.python, os.path.join(BENCH_DIR, "peers", "faiss_bench.py")] + common
    if name == "hnswlib-debian":
        return [args.python, os.path.join(BENCH_DIR, "hnswlib_bench.py")] + common
    raise ValueError(name)
