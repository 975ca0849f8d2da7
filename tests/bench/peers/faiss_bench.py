#!/usr/bin/python3
"""FAISS IndexHNSWSQ8 as a peer of slimvec-bench: the same files, metric and threads.

HNSW over 8-bit scalar-quantised vectors (faiss.IndexHNSWSQ with
ScalarQuantizer.QT_8bit: one min/max range per dimension, trained on the
base), the FAISS index closest to slimvec's int8 storage. Built with
--threads OpenMP threads; then for each efSearch, single-thread recall@10
against the ground truth and per-query latency (one search call per query
on a 1-row array, after a warm-up pass), plus one single-thread search call
over all queries (qps_batch: without Python's per-call overhead).

With --filter-dir and --filter-selectivity (slimvec-bench --filter-out
writes the inputs: each row's class and u, the exact filtered answers), the
same filters as slimvec-bench's (0.1: class 3; else u < 1000 x share) as an
IDSelectorBitmap in SearchParametersHNSW, one search call per query (the
first 1,000), recall@10 against the filtered answers: JSON `filtered`.

Writes JSON in the shape of hnswlib_bench.py's. Debian's python3-faiss
(1.7.3) is built generic (no AVX2 kernels: faiss.get_compile_options()).
Run with /usr/bin/python3.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from peers.common import (DEFAULT_EFS, K, add_peer_args, load, parse_efs, peer_result, percentile,  # noqa: E402
                          read_rss, recall_at_k, write_result)

PROG = "faiss_bench.py"
try:
    import faiss
    import numpy as np
except ImportError as e:
    sys.exit(f"{PROG}: {e}: install Debian's python3-faiss and run with /usr/bin/python3")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_peer_args(ap, DEFAULT_EFS)
    ap.add_argument("--filter-dir", help="slimvec-bench --filter-out's directory")
    ap.add_argument("--filter-selectivity", help="shares passing, e.g. 0.5,0.1,0.01,0.001")
    args = ap.parse_args()

    efs = parse_efs(args.ef, PROG)
    threads = args.threads if args.threads > 0 else (os.cpu_count() or 1)
    base, query, gt = load(args, PROG)
    n, dim = base.shape
    nq = query.shape[0]
    metric = faiss.METRIC_L2 if args.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    print(f"faiss IndexHNSWSQ8 {args.metric}: n {n}, dim {dim}, queries {nq}, M {args.M}, "
          f"efConstruction {args.ef_construction}, threads {threads}", flush=True)

    # The inputs are loaded before the baseline and stay alive, so the delta
    # is the index (codes, graph, and the training's leftovers).
    rss_before = read_rss()
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, args.M, metric)
    index.hnsw.efConstruction = args.ef_construction
    index.train(base)
    index.add(base)
    build_seconds = time.perf_counter() - t0
    rss_after = read_rss()
    bpv_rss = (rss_after - rss_before) / n
    print(f"build: {build_seconds:.2f} s, {n / build_seconds:.0f} vectors/s")
    print(f"memory: RSS {bpv_rss:.1f} B/vector (codes alone: {dim} B)")

    faiss.omp_set_num_threads(1)
    rows = [query[i:i + 1] for i in range(nq)]
    points = []
    print(f"\nsearch (single thread, k={K}, {nq} queries, one search call per query, warm-up pass first):")
    print(f"{'efSearch':>12} {'recall@10':>12} {'QPS':>12} {'p50 us':>10} {'p99 us':>10} {'QPS batch':>12}")
    for ef in efs:
        index.hnsw.efSearch = ef
        for row in rows:
            index.search(row, K)
        lat = np.empty(nq)
        found = np.empty((nq, K), dtype=np.int64)
        for i, row in enumerate(rows):
            a = time.perf_counter_ns()
            _, ids = index.search(row, K)
            lat[i] = (time.perf_counter_ns() - a) / 1000.0
            found[i] = ids[0]
        a = time.perf_counter()
        index.search(query, K)
        batch_seconds = time.perf_counter() - a
        lat.sort()
        point = {"search_list": ef, "ef": ef, "recall_at_10": recall_at_k(found, gt),
                 "qps": nq / (lat.sum() / 1e6), "p50_us": percentile(lat, 0.50),
                 "p99_us": percentile(lat, 0.99), "qps_batch": nq / batch_seconds}
        points.append(point)
        print(f"{ef:>12} {point['recall_at_10']:>12.4f} {point['qps']:>12.0f} {point['p50_us']:>10.1f} "
              f"{point['p99_us']:>10.1f} {point['qps_batch']:>12.0f}", flush=True)

    filtered = []
    if args.filter_dir and args.filter_selectivity:
        filtered = filtered_sweep(index, query, efs, args.filter_dir, args.filter_selectivity)

    options = faiss.get_compile_options().strip() if hasattr(faiss, "get_compile_options") else "unknown"
    result = peer_result(args, "faiss-hnswsq8", n, dim, nq, build_seconds, rss_before, rss_after, bpv_rss,
                         points, build=f"Debian python3-faiss {faiss.__version__} (compile options: {options})",
                         index=f"IndexHNSWSQ(d, QT_8bit, M={args.M})", storage="sq8")
    if filtered:
        result["filtered"] = filtered
    write_result(args.json, result)


def filtered_sweep(index, query, efs, fdir, sels_text):
    """Each share's filter as a bitmap selector, at each efSearch."""
    from peers.common import read_vecs
    attrs = read_vecs(os.path.join(fdir, "attrs.ivecs"), np.int32, PROG)
    cls, u = attrs[:, 0], attrs[:, 1]
    points = []
    print(f"\nfiltered search (IDSelectorBitmap in SearchParametersHNSW, single thread, one call per query):")
    print(f"{'selectivity':>12} {'matches':>10} {'efSearch':>10} {'recall@10':>12} {'QPS':>12}")
    for text in sels_text.split(","):
        s = float(text)
        mask = cls == 3 if abs(s - 0.1) < 1e-9 else u < round(s * 1000)
        gt = read_vecs(os.path.join(fdir, "filtered-%g.gt.ivecs" % s), np.int32, PROG)
        nq = gt.shape[0]
        bits = np.packbits(mask.astype(np.uint8), bitorder="little")
        sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        for ef in efs:
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
            rows = [query[i:i + 1] for i in range(nq)]
            for row in rows:
                index.search(row, K, params=params)
            found = hits = wanted = 0
            t0 = time.perf_counter()
            results = [index.search(row, K, params=params)[1][0] for row in rows]
            seconds = time.perf_counter() - t0
            for q in range(nq):
                truth = set(int(x) for x in gt[q] if x >= 0)
                got = set(int(x) for x in results[q] if x >= 0)
                found += len(truth & got)
                wanted += len(truth)
                hits += all(mask[x] for x in got)
            point = {"selectivity": s, "matches": int(mask.sum()), "search_list": ef, "ef": ef,
                     "recall_at_10": found / wanted if wanted else 1.0, "qps": nq / seconds,
                     "all_pass": hits == nq}
            points.append(point)
            print(f"{s:>12g} {point['matches']:>10} {ef:>10} {point['recall_at_10']:>12.4f} {point['qps']:>12.0f}",
                  flush=True)
    return points


if __name__ == "__main__":
    main()
