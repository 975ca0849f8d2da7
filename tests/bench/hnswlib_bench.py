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

With --filter-dir and --filter-selectivity (slimvec-bench --filter-out
writes the inputs: each row's class and u, the exact filtered answers of
the first 1,000 queries), the same filters as slimvec-bench's (0.1: class 3;
else u < 1000 x share), recall@10 against the filtered answers: JSON
`filtered`. Debian's hnswlib is 0.6.2, which has no filter argument (0.7.0
added one), so the rows failing a share's filter are marked deleted
(mark_deleted, not timed), the ef sweep runs, and they are unmarked
(unmark_deleted): in hnswlib the filter is checked exactly where deleted
elements are skipped, so this is 0.7's filtered search (see
peers/hnswlib_native.cpp and README.md).

Note: Debian builds hnswlib without AVX (SSE only), so its distance kernels
are slower than those of a -march=native build.

Run with /usr/bin/python3 (the interpreter that has hnswlib and numpy).
"""

import argparse
import math
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
    ap.add_argument("--filter-dir", help="slimvec-bench --filter-out's directory")
    ap.add_argument("--filter-selectivity", help="shares passing, e.g. 0.5,0.1,0.01,0.001")
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

    filtered = []
    if args.filter_dir and args.filter_selectivity:
        filtered = filtered_sweep(index, query, n, efs, args.filter_dir, args.filter_selectivity)

    result = common.peer_result(args, "hnswlib", n, dim, nq, build_seconds, rss_before, rss_after, bpv_rss,
                                points, hnswlib_build="Debian python3-hnswlib, built without AVX (SSE only)",
                                storage="f32", seed=args.seed, bytes_per_vector_level0=bpv_level0)
    if filtered:
        result["filter_method"] = ("mark_deleted of the rows failing the filter, unmark_deleted after "
                                   "(hnswlib 0.6.2; the search of 0.7's filter)")
        result["filtered"] = filtered
    common.write_result(args.json, result)


def filtered_sweep(index, query, n, efs, fdir, sels_text):
    """Each share's failing rows marked deleted (not timed), the ef sweep one
    knn_query per query, then unmarked; the index's unfiltered answers are
    checked to be the same after as before."""
    attrs = common.read_vecs(os.path.join(fdir, "attrs.ivecs"), np.int32, PROG)
    if attrs.shape != (n, 2):
        common.die(PROG, f"{fdir}/attrs.ivecs: {attrs.shape[0]} rows of {attrs.shape[1]} values; "
                         f"need {n} rows of (class, u)")
    cls, u = attrs[:, 0], attrs[:, 1]
    # The unfiltered answers at the sweep's last ef, to check that
    # unmark_deleted left the index as it was.
    before = [index.knn_query(query[i:i + 1], k=K)[0][0].tolist() for i in range(min(1000, len(query)))]
    points = []
    print("\nfiltered search (the failing rows marked deleted, hnswlib 0.6.2; single thread, one knn_query "
          "per query, warm-up pass first; marking not timed):")
    print(f"{'selectivity':>12} {'matches':>10} {'ef':>10} {'recall@10':>12} {'QPS':>12} {'p50 us':>10} "
          f"{'p99 us':>10} {'mark ms':>10}")
    for text in sels_text.split(","):
        s = float(text)
        # slimvec-bench's rule (filtered.c: llround, so not Python's round)
        mask = cls == 3 if abs(s - 0.1) < 1e-9 else u < math.floor(s * 1000 + 0.5)
        matches = int(mask.sum())
        gt = common.read_vecs(os.path.join(fdir, "filtered-%g.gt.ivecs" % s), np.int32, PROG)
        nq = gt.shape[0]
        failing = np.nonzero(~mask)[0].tolist()
        a = time.perf_counter()
        for label in failing:
            index.mark_deleted(label)
        mark_ms = (time.perf_counter() - a) * 1000
        # 0.6.2's knn_query raises when it finds fewer than k: ask for no
        # more than pass (a query that still finds fewer counts as empty).
        k = min(K, matches)
        rows = [query[i:i + 1] for i in range(nq)]
        for ef in efs:
            index.set_ef(ef)
            found, lat = [], np.empty(nq)
            for rep in range(2):  # a warm-up pass, then the measured one
                found = []
                for i, row in enumerate(rows):
                    a = time.perf_counter_ns()
                    try:
                        lab = index.knn_query(row, k=k)[0][0].tolist() if k else []
                    except RuntimeError:
                        lab = []
                    lat[i] = (time.perf_counter_ns() - a) / 1000.0
                    found.append(lab)
            hits = wanted = clean = 0
            for q in range(nq):
                truth = set(int(x) for x in gt[q] if x >= 0)
                hits += len(truth & set(found[q]))
                wanted += len(truth)
                clean += all(mask[x] for x in found[q])
            lat.sort()
            point = {"selectivity": s, "matches": matches, "search_list": ef, "ef": ef,
                     "recall_at_10": hits / wanted if wanted else 1.0, "qps": nq / (lat.sum() / 1e6),
                     "p50_us": common.percentile(lat, 0.50), "p99_us": common.percentile(lat, 0.99),
                     "all_pass": clean == nq}
            points.append(point)
            print(f"{s:>12g} {matches:>10} {ef:>10} {point['recall_at_10']:>12.4f} {point['qps']:>12.0f} "
                  f"{point['p50_us']:>10.1f} {point['p99_us']:>10.1f} {mark_ms:>10.1f}", flush=True)
        for label in failing:
            index.unmark_deleted(label)
    index.set_ef(efs[-1])
    after = [index.knn_query(query[i:i + 1], k=K)[0][0].tolist() for i in range(len(before))]
    if after != before:
        common.die(PROG, "unmark_deleted did not restore the index: unfiltered answers differ")
    print("index restored: the unfiltered answers at the last ef are the same as before the sweep")
    return points

if __name__ == "__main__":
    main()
