"""What the Python peers share: TEXMEX readers, RSS, recall and percentiles.

Needs numpy only (imported by the caller's interpreter, /usr/bin/python3).
"""

import ctypes
import gc
import math
import os
import sys

import numpy as np

from peers.runners import DEFAULT_EFS  # noqa: F401 (the peers' --ef default)

K = 10


def die(prog, msg):
    sys.exit(f"{prog}: {msg}")


def read_vecs(path, dtype, prog):
    """A TEXMEX .fvecs (float32) or .ivecs (int32) file as a C-contiguous
    rows x dim array. Checks the file size against the first header and
    every record's header, naming the file and byte offset of the first bad
    record (or value, for floats that are not finite)."""
    kind = "fvecs" if dtype == np.float32 else "ivecs"
    try:
        raw = np.fromfile(path, dtype=np.int32)
    except OSError as e:
        die(prog, f"{path}: cannot read: {e.strerror}")
    size = os.path.getsize(path)
    if size < 4 or size % 4 != 0:
        die(prog, f"{path}: file size {size} is not a whole number of 4-byte values with a header "
                  f"(not a {kind} file?)")
    dim = int(raw[0])
    if dim <= 0 or dim > (1 << 20):
        die(prog, f"{path}: offset 0: dimension header {dim} is not in 1..{1 << 20}")
    rec = dim + 1
    if raw.size % rec != 0:
        die(prog, f"{path}: file size {size} is not a multiple of the record size {4 * rec} "
                  f"(4 + 4 x dimension {dim}): truncated, or not a {kind} file")
    table = raw.reshape(-1, rec)
    bad = np.nonzero(table[:, 0] != dim)[0]
    if bad.size:
        r = int(bad[0])
        die(prog, f"{path}: record {r} at offset {r * 4 * rec} has dimension header {int(table[r, 0])}, "
                  f"expected {dim}")
    data = np.ascontiguousarray(table[:, 1:])
    if dtype == np.float32:
        data = data.view(np.float32)
        finite = np.isfinite(data)
        if not finite.all():
            r, j = (int(x) for x in np.argwhere(~finite)[0])
            die(prog, f"{path}: record {r}, value {j} at offset {r * 4 * rec + 4 + 4 * j} is not finite")
    return data


def add_peer_args(ap, ef_default):
    """The options every peer takes (compare.py passes them alike)."""
    ap.add_argument("--base", required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--metric", choices=["l2", "ip", "cosine"], default="l2")
    ap.add_argument("--threads", type=int, default=0, help="build threads, 0 = all cores")
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef", default=ef_default, help=f"ef values to sweep (values below k={K} are dropped)")
    ap.add_argument("--dataset", help="dataset name, recorded in the JSON")
    ap.add_argument("--json", help="write the results here")


def load(args, prog):
    """base, query, gt from --base/--query/--gt, checked against each other;
    unit rows for cosine (which the peers then search by inner product)."""
    base = read_vecs(args.base, np.float32, prog)
    query = read_vecs(args.query, np.float32, prog)
    gt = read_vecs(args.gt, np.int32, prog)
    if query.shape[1] != base.shape[1]:
        die(prog, f"{args.base} has dimension {base.shape[1]} but {args.query} has {query.shape[1]}")
    if gt.shape[0] != query.shape[0] or gt.shape[1] < K:
        die(prog, f"{args.gt}: {gt.shape[0]} rows of {gt.shape[1]} ids; need one row of >= {K} per query")
    if base.shape[0] < K:
        die(prog, f"{args.base}: need at least {K} base vectors")
    if args.metric == "cosine":
        for m in (base, query):
            norms = np.linalg.norm(m, axis=1, keepdims=True)
            m /= np.where(norms > 0, norms, 1)
    return base, query, gt


def read_rss():
    """VmRSS of this process in bytes (/proc/self/status), after the
    collector has run and glibc has handed its free heap pages back (else an
    index could reuse freed but still resident pages, and its RSS delta
    would come out short)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmRSS")


def parse_efs(text, prog):
    """'10,20,...' -> the values >= k (a search never looks at fewer)."""
    values = []
    for tok in text.split(","):
        tok = tok.strip()
        if not tok.isdigit() or int(tok) < 1:
            die(prog, f"--ef: '{tok}' is not a positive whole number")
        values.append(int(tok))
    kept = [v for v in values if v >= K]
    if not kept:
        die(prog, f"--ef: no value >= k={K}")
    return kept


def recall_at_k(found, gt):
    """|found top k ∩ exact top k| / k, averaged over the queries."""
    hits = sum(len(set(row[:K].tolist()) & set(truth[:K].tolist())) for row, truth in zip(found, gt))
    return hits / (K * len(gt))


def percentile(sorted_values, q):
    """Nearest-rank percentile, as hnswlib_bench.py and slimvec-bench take it."""
    return float(sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)])


def peer_result(args, engine, n, dim, nq, build_seconds, rss_before, rss_after, bpv_rss, points, **extra):
    """The JSON object every peer writes (compare.py reads it); `extra`
    keys go in after the engine's name."""
    result = {"engine": engine}
    result.update(extra)
    result.update({
        "dataset": args.dataset,
        "files": {"base": args.base, "query": args.query, "gt": args.gt},
        "metric": args.metric,
        "M": args.M,
        "ef_construction": args.ef_construction,
        "threads": args.threads,
        "cores": os.cpu_count(),
        "k": K,
        "n": int(n),
        "dim": int(dim),
        "n_queries": int(nq),
        "build_seconds": build_seconds,
        "insert_rate": n / build_seconds,
        "rss_bytes_delta": rss_after - rss_before,
        "bytes_per_vector_arena": None,
        "bytes_per_vector_rss": bpv_rss,
        "avg_degree": None,
        "avg_edge_slots": None,
        "points": points,
    })
    return result


def write_result(path, result):
    if path:
        import json
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"\nwrote {path}")
