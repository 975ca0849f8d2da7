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

PROG = "hnswlib_bench.py"
K = common.K
DEFAULT_EFS = [10, 16, 20, 32, 40, 50, 64, 80, 100, 128, 160, 200, 256]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_peer_args(ap, ",".join(str(e) for e in DEFAULT_EFS))
    ap.add_argument("--seed", type=int, default=100)
    args = ap.parse_args()

    efs = common.parse_efs(args.ef, PROG)
    threads = args.threads if args.threads > 0 else (os.cpu_count() or 1)
    # (cosine: unit rows, which hnswlib's cosine space would make anyway)
    base, query, gt = common.load(args, PROG)
    n, dim = base.shape
    nq = query.shape[0]
    labels = np.arange(n, dtype=np.int64)
    rows = [query[i:i + 1] for i in range(nq)]

    print(f"hnswlib {args.metric}: n {n}, dim {dim}, queries {nq}, M {args.M}, "
          f"ef_construction {args.ef_construction}, threads {threads}", flush=True)

    # The inputs above are loaded (and so resident) before the baseline, and
    # stay alive to the end, so the delta is the index alone.
    rss_before = common.read_rss()
    t0 = time.perf_counter()
    index = hnswlib.Index(space=args.metric, dim=dim)
    index.init_index(max_elements=n, M=args.M, ef_construction=args.ef_construction,
                     random_seed=args.seed)
    index.set_num_threads(threads)
    index.add_items(base, labels, num_threads=threads)
    build_seconds = time.perf_counter() - t0
    rss_after = common.read_rss()
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
            "recall_at_10": common.recall_at_k(found, gt),
            "qps": nq / (lat.sum() / 1e6),
            "p50_us": common.percentile(lat, 0.50),
            "p99_us": common.percentile(lat, 0.99),
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
