#!/usr/bin/python3
"""slimvec against hnswlib on the same files, in one run.

Runs slimvec-bench (with --json) and then hnswlib_bench.py on the files it
used, with the same metric and build threads, and prints the ratios:
bytes per vector (slimvec's arena and RSS against hnswlib's RSS), build time,
and single-thread QPS at recall@10 = 0.90, 0.95 and 0.99, each read off the
sweep by linear interpolation between the two points that bracket the
target. Writes both results and the comparison to one JSON file.

  compare.py --dataset founding --storage int8
  compare.py --base B.fvecs --query Q.fvecs [--gt G.ivecs] --metric ip

Debian's python3-hnswlib is built without AVX (SSE only); slimvec picks its
SIMD kernels at run time. Keep that in mind when reading the QPS ratios.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = [0.90, 0.95, 0.99]
QUICK_LISTS = "10,20,40,80,160"
AVX_NOTE = ("Debian's python3-hnswlib is built without AVX (SSE only); "
            "slimvec chooses its SIMD kernels at run time.")
CALL_NOTE = ("hnswlib QPS is one knn_query call per query from Python (comparable per query, "
             "but it includes the interpreter's call overhead); 'batch' is one single-thread "
             "call over all queries.")


def default_python():
    """Debian's interpreter has hnswlib and numpy; fall back to ours."""
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def run(cmd):
    """Runs a command with its output going straight to our terminal."""
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def qps_at_recall(points, target):
    """(qps, how) at a recall target, interpolated linearly in recall between
    the last sweep point below the target and the first at or above it.

    how is "interpolated", "at-first-point" (the smallest search list already
    reaches the target: the QPS there is a lower bound) or "not reached"
    (qps is None).
    """
    pts = sorted(points, key=lambda p: p["search_list"])
    for i, p in enumerate(pts):
        if p["recall_at_10"] >= target:
            if i == 0:
                return p["qps"], "at-first-point"
            lo = pts[i - 1]
            span = p["recall_at_10"] - lo["recall_at_10"]
            if span <= 0:
                return p["qps"], "interpolated"
            frac = (target - lo["recall_at_10"]) / span
            return lo["qps"] + frac * (p["qps"] - lo["qps"]), "interpolated"
    return None, "not reached"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def fmt_ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def compare_results(sv, hn):
    """The comparison figures from the two engines' results."""
    comparison = {
        "bytes_per_vector": {
            "slimvec_arena": sv["bytes_per_vector_arena"],
            "slimvec_rss": sv["bytes_per_vector_rss"],
            "hnswlib_rss": hn["bytes_per_vector_rss"],
            "ratio_arena_vs_hnswlib_rss": ratio(sv["bytes_per_vector_arena"], hn["bytes_per_vector_rss"]),
            "ratio_rss_vs_hnswlib_rss": ratio(sv["bytes_per_vector_rss"], hn["bytes_per_vector_rss"]),
        },
        "build_seconds": {
            "slimvec": sv["build_seconds"],
            "hnswlib": hn["build_seconds"],
            "ratio": ratio(sv["build_seconds"], hn["build_seconds"]),
        },
        "qps_at_recall": [],
    }
    for target in TARGETS:
        sq, s_how = qps_at_recall(sv["points"], target)
        hq, h_how = qps_at_recall(hn["points"], target)
        hb, hb_how = qps_at_recall([dict(p, qps=p["qps_batch"]) for p in hn["points"]], target)
        comparison["qps_at_recall"].append({
            "recall": target,
            "slimvec_qps": sq, "slimvec_how": s_how,
            "hnswlib_qps": hq, "hnswlib_how": h_how,
            "hnswlib_qps_batch": hb, "hnswlib_batch_how": hb_how,
            "ratio": ratio(sq, hq),
            "ratio_vs_batch": ratio(sq, hb),
            # A side that meets the target at its smallest search list has
            # only a lower bound there, and so the ratio is no exact figure.
            "ratio_exact": s_how == "interpolated" and h_how == "interpolated",
        })
    return comparison


def print_report(sv, hn, comparison):
    """The summary table, ratios and notes."""
    label = sv["dataset"] or os.path.basename(sv["files"]["base"])
    print("\n" + "=" * 78)
    print(f"{label}: n {sv['n']}, dim {sv['dim']}, metric {sv['metric']}, build threads "
          f"{sv['threads'] or sv['cores']}")
    print(f"slimvec {sv['storage']} R={sv['R']} L={sv['L']} alpha={sv['alpha']}   vs   "
          f"hnswlib f32 M={hn['M']} ef_construction={hn['ef_construction']}")
    print("=" * 78)
    b = comparison["bytes_per_vector"]
    print(f"{'':28}{'slimvec':>14}{'hnswlib':>14}{'slimvec/hnswlib':>18}")
    print(f"{'bytes/vector (arena)':28}{fmt(b['slimvec_arena']):>14}{fmt(b['hnswlib_rss']):>14}"
          f"{fmt_ratio(b['ratio_arena_vs_hnswlib_rss']):>18}   (hnswlib: RSS)")
    print(f"{'bytes/vector (RSS)':28}{fmt(b['slimvec_rss']):>14}{fmt(b['hnswlib_rss']):>14}"
          f"{fmt_ratio(b['ratio_rss_vs_hnswlib_rss']):>18}")
    bs = comparison["build_seconds"]
    print(f"{'build seconds':28}{fmt(bs['slimvec'], 2):>14}{fmt(bs['hnswlib'], 2):>14}"
          f"{fmt_ratio(bs['ratio']):>18}")
    for q in comparison["qps_at_recall"]:
        def cell(v, how):
            if v is None:
                return "not reached"
            return (">=" if how == "at-first-point" else "") + fmt(v, 0)
        print(f"{'QPS @ recall ' + format(q['recall'], '.2f'):28}{cell(q['slimvec_qps'], q['slimvec_how']):>14}"
              f"{cell(q['hnswlib_qps'], q['hnswlib_how']):>14}"
              f"{fmt_ratio(q['ratio']) + ('' if q['ratio_exact'] or q['ratio'] is None else '*'):>18}"
              f"   (hnswlib batch {cell(q['hnswlib_qps_batch'], q['hnswlib_batch_how'])}: "
              f"{fmt_ratio(q['ratio_vs_batch'])})")
    print(f"{'max recall@10 in sweep':28}{max(p['recall_at_10'] for p in sv['points']):>14.4f}"
          f"{max(p['recall_at_10'] for p in hn['points']):>14.4f}")
    if any(not q["ratio_exact"] and q["ratio"] is not None for q in comparison["qps_at_recall"]):
        print("  * a side meets this target at its smallest search list ('>='): its QPS is a lower "
              "bound, so the ratio is only indicative; sweep lower search lists for an exact one")
    if not sv["validate"]["ok"]:
        print(f"\nWARNING: slimvec's graph FAILED validation: {sv['validate']['message']}")
    print("\nnotes:")
    print("  - " + AVX_NOTE)
    print("  - " + CALL_NOTE)
    print("  - QPS at a recall is interpolated linearly between the sweep points around it; "
          "'>=' marks a target already met at the smallest search list.")



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_argument_group("input: a built-in dataset, or files")
    src.add_argument("--dataset", choices=["founding", "fashion"])
    src.add_argument("--base")
    src.add_argument("--query")
    src.add_argument("--gt", help="exact neighbours; computed by slimvec-bench when omitted")
    ap.add_argument("--metric", choices=["l2", "ip", "cosine"], default="l2")
    ap.add_argument("--storage", choices=["f32", "int8"], default="int8")
    ap.add_argument("--R", type=int)
    ap.add_argument("--L", type=int)
    ap.add_argument("--alpha", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--threads", type=int, default=0, help="build threads for both, 0 = all cores")
    ap.add_argument("--search-lists", help="slimvec search list sweep (default: slimvec-bench's)")
    ap.add_argument("--ef", help="hnswlib ef sweep (default: the same values as --search-lists)")
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help=f"short sweep ({QUICK_LISTS})")
    ap.add_argument("--bench", default="./build/tests/bench/slimvec-bench",
                    help="path of slimvec-bench (default %(default)s)")
    ap.add_argument("--python", default=default_python(),
                    help="interpreter for hnswlib_bench.py (default %(default)s)")
    ap.add_argument("--data-dir", help="dataset cache (default $SLIMVEC_BENCH_DATA or ./bench-data)")
    ap.add_argument("--json", default="compare.json", help="combined output (default %(default)s)")
    ap.add_argument("--report", metavar="COMBINED_JSON",
                    help="only print the summary of an earlier run's combined JSON")
    args = ap.parse_args()

    if args.report:
        with open(args.report) as f:
            combined = json.load(f)
        sv, hn = combined["slimvec"], combined["hnswlib"]
        print_report(sv, hn, compare_results(sv, hn))
        return 0 if sv["validate"]["ok"] else 1

    if args.dataset and (args.base or args.query or args.gt):
        ap.error("give either --dataset or --base/--query[/--gt]")
    if not args.dataset and not (args.base and args.query):
        ap.error("need --dataset, or --base and --query")
    if not os.path.isfile(args.bench) or not os.access(args.bench, os.X_OK):
        sys.exit(f"compare.py: {args.bench}: no slimvec-bench there (build it, or pass --bench PATH)")
    lists = args.search_lists or (QUICK_LISTS if args.quick else None)
    efs = args.ef or lists
    data_dir = args.data_dir or os.environ.get("SLIMVEC_BENCH_DATA") or "./bench-data"

    with tempfile.TemporaryDirectory(prefix="slimvec-compare-") as tmp:
        sv_json = os.path.join(tmp, "slimvec.json")
        hn_json = os.path.join(tmp, "hnswlib.json")

        cmd = [args.bench, "--metric", args.metric, "--storage", args.storage,
               "--threads", str(args.threads), "--json", sv_json, "--data-dir", data_dir]
        if args.dataset:
            cmd += ["--dataset", args.dataset]
        else:
            cmd += ["--base", args.base, "--query", args.query]
            if args.gt:
                cmd += ["--gt", args.gt]
            else:
                # hnswlib_bench.py needs the ground truth as a file: have
                # slimvec-bench save the one it computes.
                os.makedirs(data_dir, exist_ok=True)
                stem = os.path.splitext(os.path.basename(args.base))[0]
                cmd += ["--gt-out", os.path.join(data_dir, f"{stem}.{args.metric}.gt.ivecs")]
        for flag, value in (("--R", args.R), ("--L", args.L), ("--alpha", args.alpha),
                            ("--seed", args.seed), ("--search-lists", lists)):
            if value is not None:
                cmd += [flag, str(value)]
        rc = run(cmd)
        if not os.path.exists(sv_json):
            sys.exit(f"compare.py: slimvec-bench failed (exit {rc}) and wrote no results")
        with open(sv_json) as f:
            sv = json.load(f)
        if not sv["validate"]["ok"]:
            print(f"\nWARNING: slimvec's graph failed validation: {sv['validate']['message']}")

        files = sv["files"]
        cmd = [args.python, os.path.join(HERE, "hnswlib_bench.py"),
               "--base", files["base"], "--query", files["query"], "--gt", files["gt"],
               "--metric", args.metric, "--threads", str(args.threads),
               "--M", str(args.M), "--ef-construction", str(args.ef_construction),
               "--json", hn_json]
        if args.dataset:
            cmd += ["--dataset", args.dataset]
        if efs:
            cmd += ["--ef", efs]
        print()
        rc = run(cmd)
        if rc != 0 or not os.path.exists(hn_json):
            sys.exit(f"compare.py: hnswlib_bench.py failed (exit {rc})")
        with open(hn_json) as f:
            hn = json.load(f)

    comparison = compare_results(sv, hn)
    print_report(sv, hn, comparison)
    combined = {"slimvec": sv, "hnswlib": hn, "comparison": comparison,
                "notes": [AVX_NOTE, CALL_NOTE]}
    with open(args.json, "w") as f:
        json.dump(combined, f, indent=2)
        f.write("\n")
    print(f"\nwrote {args.json}")
    # A graph that fails its own validation makes the figures suspect: say
    # so in the exit status too.
    return 0 if sv["validate"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
