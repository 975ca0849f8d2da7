#!/usr/bin/python3
"""hnswlib baseline for slimvec-bench: the same files, metric and threads.

Builds an hnswlib index (Debian's python3-hnswlib; M=16, ef_construction=200
by default) over a TEXMEX .fvecs base, measures the build time and the
process RSS delta per vector, then for a sweep of ef measures recall@10
against the .ivecs ground truth and single-thread latency, one query per
knn_query call on a 1-row array so that the per-query figures are comparable
with slimvec-bench's. A single-thread batch call over all queries is also
timed (qps_batch): it shows how much of the per-call time is Python's.

Writes JSON in the shape of slimvec-bench's (engine, files, metric, n, dim,
build_seconds, insert_rate, bytes_per_vector_rss, points[...]).

Note: Debian builds hnswlib without AVX (SSE only), so its distance kernels
are slower than those of a -march=native build.

Run with /usr/bin/python3 (the interpreter that has hnswlib and numpy).
"""

import argparse
import os
import sys
import time

try:
    import hnswlib
    import numpy as np
    from peers import common
except ImportError as e:
    sys.exit(f"hnswlib_bench.py: {e}: install Debian's python3-hnswlib and python3-numpy "
             "and run with /usr/bin/python3")

K = 10
DEFAULT_EFS = [10, 16, 20, 32, 40, 50, 64, 80, 100, 128, 160, 200, 256]


def read_vecs(path, dtype):
    """Reads a TEXMEX .fvecs/.ivecs file into a C-contiguous rows x dim array.

    Checks the file size against the first header and every record's header,
    naming the file and byte offset of the first bad record.
    """
    kind = "fvecs" if dtype == np.float32 else "ivecs"
    try:
        raw = np.fromfile(path, dtype=np.int32)
    except OSError as e:
        sys.exit(f"hnswlib_bench.py: {path}: cannot read: {e.strerror}")
    size = os.path.getsize(path)
    if size < 4 or size % 4 != 0:
        sys.exit(f"hnswlib_bench.py: {path}: file size {size} is not a whole number of "
                 f"4-byte values with a header (not a {kind} file?)")
    dim = int(raw[0])
    if dim <= 0 or dim > (1 << 20):
        sys.exit(f"hnswlib_bench.py: {path}: offset 0: dimension header {dim} is not in 1..{1 << 20}")
    rec = dim + 1
    if raw.size % rec != 0:
        sys.exit(f"hnswlib_bench.py: {path}: file size {size} is not a multiple of the record "
                 f"size {4 * rec} (4 + 4 x dimension {dim}): truncated, or not a {kind} file")
    table = raw.reshape(-1, rec)
    bad = np.nonzero(table[:, 0] != dim)[0]
    if bad.size:
        r = int(bad[0])
        sys.exit(f"hnswlib_bench.py: {path}: record {r} at offset {r * 4 * rec} has dimension "
                 f"header {int(table[r, 0])}, expected {dim}")
    data = np.ascontiguousarray(table[:, 1:])
    if dtype == np.float32:
        data = data.view(np.float32)
        finite = np.isfinite(data)
        if not finite.all():
            r, j = (int(x) for x in np.argwhere(~finite)[0])
            sys.exit(f"hnswlib_bench.py: {path}: record {r}, value {j} at offset "
                     f"{r * 4 * rec + 4 + 4 * j} is not finite")
    return data


def read_rss():
    """Resident set size in bytes, after free heap pages are handed back to
    the system (peers/common.py: the same reading as the other peers')."""
    return common.read_rss()


def parse_list(text):
    values = []
    for tok in text.split(","):
        tok = tok.strip()
        if not tok.isdigit() or int(tok) < 1:
            sys.exit(f"hnswlib_bench.py: --ef: '{tok}' is not a positive whole number")
        values.append(int(tok))
    kept = [v for v in values if v >= K]
    if not kept:
        sys.exit(f"hnswlib_bench.py: --ef: no value >= k={K}")
    return kept


def recall_at_k(labels, gt):
    """|result top k ∩ exact top k| / k, averaged over queries."""
    total = 0
    for row, truth in zip(labels, gt):
        total += len(set(int(x) for x in row[:K]) & set(int(x) for x in truth[:K]))
    return total / (K * len(gt))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--metric", choices=["l2", "ip", "cosine"], default="l2")
    ap.add_argument("--threads", type=int, default=0, help="build threads, 0 = all cores")
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--ef", default=",".join(str(e) for e in DEFAULT_EFS),
                    help="ef values to sweep (values below k=10 are dropped)")
    ap.add_argument("--dataset", help="dataset name, recorded in the JSON")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    efs = parse_list(args.ef)
    threads = args.threads if args.threads > 0 else (os.cpu_count() or 1)

    base = read_vecs(args.base, np.float32)
    query = read_vecs(args.query, np.float32)
    gt = read_vecs(args.gt, np.int32)
    n, dim = base.shape
    nq = query.shape[0]
    if query.shape[1] != dim:
        sys.exit(f"hnswlib_bench.py: {args.base} has dimension {dim} but {args.query} has {query.shape[1]}")
    if gt.shape[0] != nq or gt.shape[1] < K:
        sys.exit(f"hnswlib_bench.py: {args.gt}: {gt.shape[0]} rows of {gt.shape[1]} ids; "
                 f"need {nq} rows (one per query) of >= {K}")
    if n < K:
        sys.exit(f"hnswlib_bench.py: {args.base}: need at least {K} base vectors")
    labels = np.arange(n, dtype=np.int64)
    rows = [query[i:i + 1] for i in range(nq)]

    print(f"hnswlib {args.metric}: n {n}, dim {dim}, queries {nq}, M {args.M}, "
          f"ef_construction {args.ef_construction}, threads {threads}", flush=True)

    # The inputs above are loaded (and so resident) before the baseline, and
    # stay alive to the end, so the delta is the index alone.
    rss_before = read_rss()
    t0 = time.perf_counter()
    index = hnswlib.Index(space=args.metric, dim=dim)
    index.init_index(max_elements=n, M=args.M, ef_construction=args.ef_construction,
                     random_seed=args.seed)
    index.set_num_threads(threads)
    index.add_items(base, labels, num_threads=threads)
    build_seconds = time.perf_counter() - t0
    rss_after = read_rss()
    bpv_rss = (rss_after - rss_before) / n
    # Layer-0 bytes per element as hnswlib lays them out: 2M links + count,
    # the float vector, the 8-byte label. Upper layers, locks and the label
    # map come on top; the RSS figure has them all.
    bpv_level0 = (2 * args.M * 4 + 4) + dim * 4 + 8
    print(f"build: {build_seconds:.2f} s, {n / build_seconds:.0f} vectors/s")
    print(f"memory: RSS {bpv_rss:.1f} B/vector (layer 0 alone: {bpv_level0} B)")

    index.set_num_threads(1)
    points = []
    print(f"\nsearch (single thread, k={K}, {nq} queries, one knn_query per query, warm-up pass first):")
    print(f"{'ef':>12} {'recall@10':>12} {'QPS':>12} {'p50 us':>10} {'p99 us':>10} {'QPS batch':>12}")
    for ef in efs:
        index.set_ef(ef)
        for row in rows:
            index.knn_query(row, k=K)
        lat = np.empty(nq)
        found = np.empty((nq, K), dtype=np.int64)
        for i, row in enumerate(rows):
            a = time.perf_counter_ns()
            lab, _ = index.knn_query(row, k=K)
            b = time.perf_counter_ns()
            lat[i] = (b - a) / 1000.0
            found[i] = lab[0]
        a = time.perf_counter()
        index.knn_query(query, k=K, num_threads=1)
        batch_seconds = time.perf_counter() - a
        lat.sort()
        point = {
            "search_list": ef,
            "ef": ef,
            "recall_at_10": recall_at_k(found, gt),
            "qps": nq / (lat.sum() / 1e6),
            "p50_us": float(lat[max(0, int(np.ceil(0.50 * nq)) - 1)]),
            "p99_us": float(lat[max(0, int(np.ceil(0.99 * nq)) - 1)]),
            "qps_batch": nq / batch_seconds,
        }
        points.append(point)
        print(f"{ef:>12} {point['recall_at_10']:>12.4f} {point['qps']:>12.0f} "
              f"{point['p50_us']:>10.1f} {point['p99_us']:>10.1f} {point['qps_batch']:>12.0f}",
              flush=True)

    result = common.peer_result(args, "hnswlib", n, dim, nq, build_seconds, rss_before, rss_after, bpv_rss,
                                points, hnswlib_build="Debian python3-hnswlib, built without AVX (SSE only)",
                                storage="f32", seed=args.seed, bytes_per_vector_level0=bpv_level0)
    common.write_result(args.json, result)

if __name__ == "__main__":
    main()
