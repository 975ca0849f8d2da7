#!/usr/bin/python3
"""slimvec against its peers on the same files, in one run.

Runs slimvec-bench (with --json) and then every peer in --peers on the
files it used, with the same metric and build threads, and prints the
ratios against each: bytes per vector (slimvec's arena and RSS against the
peer's RSS), build time, and single-thread QPS at recall@10 = 0.90, 0.95
and 0.99, each read off the sweep by linear interpolation between the two
points that bracket the target. Writes all results and the comparison to
one JSON file.

  compare.py --dataset founding --storage int8
  compare.py --base B.fvecs --query Q.fvecs [--gt G.ivecs] --metric ip
  compare.py --dataset founding --originals disk      # plain and re-ranked curves
  compare.py --dataset fashion --filter-selectivity 0.5,0.1,0.01,0.001   # filtered search too

Peers (peers/runners.py): hnswlib-native (Debian's hnswlib headers compiled
here with -O3 -march=native, cached), faiss (IndexHNSWSQ8, Debian's
python3-faiss), hnswlib-debian (Debian's python3-hnswlib, SSE only).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from peers.report import compare_results, print_report  # noqa: E402
from peers.runners import DEFAULT_EFS, NOTES, PEERS, PeerError, peer_command  # noqa: E402

QUICK_LISTS = "10,20,40,80,160"
SV_NOTE = "slimvec chooses its SIMD kernels at run time; its QPS is from C, one query per call."
INTERP_NOTE = ("QPS at a recall is interpolated linearly between the sweep points around it; "
               "'>=' marks a target already met at the first point.")
RERANK_NOTE = ("slimvec 'plain' points search the codes only; 're-ranked' ones re-rank the best "
               "candidates by exact distance to the originals on disk; 'best' is the faster of "
               "the two at each target.")


def default_python():
    """Debian's interpreter has hnswlib, faiss and numpy; fall back to ours."""
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def run(cmd):
    """Runs a command with its output going straight to our terminal."""
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def notes_for(sv, names):
    notes = [SV_NOTE] + [NOTES[n] for n in names if n in NOTES] + [INTERP_NOTE]
    if any(p.get("rerank_depth") for p in sv["points"]):
        notes.append(RERANK_NOTE)
    return notes


def parse_peers(text):
    names = [t.strip() for t in text.split(",") if t.strip()] if text else []
    bad = [n for n in names if n not in PEERS]
    if bad:
        sys.exit(f"compare.py: --peers: unknown {', '.join(bad)} (known: {', '.join(PEERS)})")
    return list(dict.fromkeys(names))


def load_report(path):
    """slimvec, peers and notes from a combined JSON; an old one (before
    --peers) had Debian's hnswlib alone, under "hnswlib"."""
    with open(path) as f:
        combined = json.load(f)
    peers = combined.get("peers")
    if peers is None:
        peers = {"hnswlib-debian": combined["hnswlib"]}
    return combined["slimvec"], peers, combined.get("notes") or notes_for(combined["slimvec"], peers)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_argument_group("input: a built-in dataset, or files")
    src.add_argument("--dataset", choices=["founding", "fashion"])
    src.add_argument("--base")
    src.add_argument("--query")
    src.add_argument("--gt", help="exact neighbours; computed by slimvec-bench when omitted")
    ap.add_argument("--metric", choices=["l2", "ip", "cosine"], default="l2")
    ap.add_argument("--threads", type=int, default=0, help="build threads for all, 0 = all cores")
    sv_opt = ap.add_argument_group("slimvec (passed to slimvec-bench)")
    sv_opt.add_argument("--storage", choices=["f32", "int8"], default="int8")
    sv_opt.add_argument("--R", type=int)
    sv_opt.add_argument("--L", type=int)
    sv_opt.add_argument("--alpha", type=float)
    sv_opt.add_argument("--seed", type=int)
    sv_opt.add_argument("--search-lists", help="slimvec's search list sweep (default: --efs, else the same "
                        "default)")
    sv_opt.add_argument("--originals", choices=["none", "disk"],
                        help="disk: originals on disk, plain and re-ranked curves")
    sv_opt.add_argument("--rerank-depths", help="re-rank depths with --originals disk")
    sv_opt.add_argument("--filter-selectivity", help="filtered search at these shares passing (slimvec-bench's "
                        "payloads and filters; FAISS with an IDSelectorBitmap on the same rows; hnswlib "
                        "0.6.2 with the failing rows marked deleted), e.g. 0.5,0.1,0.01,0.001")
    sv_opt.add_argument("--bench", default="./build/tests/bench/slimvec-bench",
                        help="path of slimvec-bench (default %(default)s)")
    pe = ap.add_argument_group("peers")
    pe.add_argument("--peers", default="hnswlib-native,faiss",
                    help=f"comma-separated, of {', '.join(PEERS)} (default %(default)s; '' for none)")
    pe.add_argument("--hnsw-M", "--M", dest="hnsw_M", type=int, default=16, help="default %(default)s")
    pe.add_argument("--hnsw-efc", "--ef-construction", dest="hnsw_efc", type=int, default=200,
                    help="ef_construction / efConstruction (default %(default)s)")
    pe.add_argument("--efs", "--ef", dest="efs",
                    help=f"the peers' ef / efSearch sweep (default: --search-lists, else {DEFAULT_EFS})")
    pe.add_argument("--python", default=default_python(),
                    help="interpreter for the Python peers (default %(default)s)")
    pe.add_argument("--hnswlib-native", metavar="PATH",
                    help="a hnswlib-native binary to use (default: compile into the peer cache)")
    pe.add_argument("--peer-cache", help="where compiled peers are kept (default $SLIMVEC_BENCH_CACHE, "
                    "else ~/.cache/slimvec-bench)")
    ap.add_argument("--quick", action="store_true", help=f"short sweeps for all ({QUICK_LISTS})")
    ap.add_argument("--data-dir", help="dataset cache (default $SLIMVEC_BENCH_DATA or ./bench-data)")
    ap.add_argument("--json", default="compare.json", help="combined output (default %(default)s)")
    ap.add_argument("--report", metavar="COMBINED_JSON",
                    help="only print the summary of an earlier run's combined JSON")
    args = ap.parse_args()

    if args.report:
        sv, peers, notes = load_report(args.report)
        print_report(sv, peers, compare_results(sv, peers), notes)
        return 0 if sv["validate"]["ok"] else 1

    if args.dataset and (args.base or args.query or args.gt):
        ap.error("give either --dataset or --base/--query[/--gt]")
    if not args.dataset and not (args.base and args.query):
        ap.error("need --dataset, or --base and --query")
    if not os.path.isfile(args.bench) or not os.access(args.bench, os.X_OK):
        sys.exit(f"compare.py: {args.bench}: no slimvec-bench there (build it, or pass --bench PATH)")
    names = parse_peers(args.peers)
    # One sweep for all unless told otherwise: each list defaults to the
    # other, then to the common default.
    sweep = QUICK_LISTS if args.quick else DEFAULT_EFS
    lists = args.search_lists or args.efs or sweep
    args.efs = args.efs or args.search_lists or sweep
    data_dir = args.data_dir or os.environ.get("SLIMVEC_BENCH_DATA") or "./bench-data"

    with tempfile.TemporaryDirectory(prefix="slimvec-compare-") as tmp:
        sv_json = os.path.join(tmp, "slimvec.json")
        cmd = [args.bench, "--metric", args.metric, "--storage", args.storage,
               "--threads", str(args.threads), "--json", sv_json, "--data-dir", data_dir]
        if args.dataset:
            cmd += ["--dataset", args.dataset]
        else:
            cmd += ["--base", args.base, "--query", args.query]
            if args.gt:
                cmd += ["--gt", args.gt]
            else:
                # The peers need the ground truth as a file: have
                # slimvec-bench save the one it computes.
                os.makedirs(data_dir, exist_ok=True)
                stem = os.path.splitext(os.path.basename(args.base))[0]
                cmd += ["--gt-out", os.path.join(data_dir, f"{stem}.{args.metric}.gt.ivecs")]
        for flag, value in (("--R", args.R), ("--L", args.L), ("--alpha", args.alpha),
                            ("--seed", args.seed), ("--search-lists", lists),
                            ("--originals", args.originals), ("--rerank-depths", args.rerank_depths),
                            ("--filter-selectivity", args.filter_selectivity)):
            if value is not None:
                cmd += [flag, str(value)]
        args.filter_dir = None
        if args.filter_selectivity:
            args.filter_dir = os.path.join(tmp, "filtered")
            os.makedirs(args.filter_dir)
            cmd += ["--filter-out", args.filter_dir]
        rc = run(cmd)
        if not os.path.exists(sv_json):
            sys.exit(f"compare.py: slimvec-bench failed (exit {rc}) and wrote no results")
        with open(sv_json) as f:
            sv = json.load(f)
        if not sv["validate"]["ok"]:
            print(f"\nWARNING: slimvec's graph failed validation: {sv['validate']['message']}")

        peers, failed = {}, {}
        for name in names:
            out = os.path.join(tmp, f"{name}.json")
            print()
            try:
                rc = run(peer_command(name, args, sv["files"], out))
            except (PeerError, OSError) as e:
                rc, failed[name] = None, str(e)
            if rc == 0 and os.path.exists(out):
                with open(out) as f:
                    peers[name] = json.load(f)
            else:
                failed.setdefault(name, f"exit {rc}")
                print(f"compare.py: peer {name} failed: {failed[name]}", file=sys.stderr)

    notes = notes_for(sv, peers)
    comparison = compare_results(sv, peers)
    print_report(sv, peers, comparison, notes)
    if args.filter_selectivity:
        comparison["filtered"] = print_filtered(sv, peers)
    for name, why in failed.items():
        print(f"\nWARNING: peer {name} failed and is left out: {why}")
    combined = {"slimvec": sv, "peers": peers, "comparison": comparison, "notes": notes}
    if failed:
        combined["failed_peers"] = failed
    with open(args.json, "w") as f:
        json.dump(combined, f, indent=2)
        f.write("\n")
    print(f"\nwrote {args.json}")
    # A graph that fails its own validation makes the figures suspect, and a
    # peer that did not run leaves the comparison short: say so in the exit
    # status too.
    return 0 if sv["validate"]["ok"] and not failed else 1


def qps_at(points, target):
    """QPS at a recall, interpolated between the sweep points around it
    (the fastest point at or above it when the first already is); None
    when no point reaches it."""
    pts = sorted(points, key=lambda p: -p["qps"])
    best = None
    for i, p in enumerate(pts):
        if p["recall_at_10"] >= target:
            if i == 0:
                return p["qps"]
            q = pts[i - 1]
            span = p["recall_at_10"] - q["recall_at_10"]
            t = (target - q["recall_at_10"]) / span if span > 0 else 1.0
            best = q["qps"] + t * (p["qps"] - q["qps"])
            return best
    return None


def print_filtered(sv, peers):
    """Per share passing: max recall and QPS at recall 0.95, slimvec and each
    peer that ran the filtered sweep."""
    rows = {}
    names = ["slimvec"] + [n for n, p in peers.items() if p.get("filtered")]
    series = {"slimvec": sv.get("filtered", [])}
    for n in names[1:]:
        series[n] = peers[n]["filtered"]
    shares = sorted({p["selectivity"] for p in series["slimvec"]}, reverse=True)
    print("\nfiltered search: QPS at recall@10 0.95 (max recall in the sweep)")
    print(f"{'share':>8} {'passing':>9}" + "".join(f" {n:>26}" for n in names) +
          "".join(f" {'vs ' + n:>12}" for n in names[1:]))
    for s in shares:
        cells, ratios = [], []
        got = {}
        for n in names:
            pts = [p for p in series[n] if abs(p["selectivity"] - s) < 1e-12]
            q = qps_at(pts, 0.95) if pts else None
            top = max((p["recall_at_10"] for p in pts), default=0.0)
            got[n] = q
            cells.append(f" {('%.0f' % q) if q else 'not reached':>15} ({top:.4f})")
        for n in names[1:]:
            a, b = got["slimvec"], got[n]
            ratios.append(f" {('%.2fx' % (a / b)) if a and b else ('inf' if a else '-'):>12}")
        passing = next((p["matches"] for p in series["slimvec"] if abs(p["selectivity"] - s) < 1e-12), 0)
        print(f"{s:>8g} {passing:>9}" + "".join(cells) + "".join(ratios))
        rows[str(s)] = got
    return rows


if __name__ == "__main__":
    sys.exit(main())
