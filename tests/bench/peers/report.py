"""compare.py's figures: QPS at recall targets, ratios against each peer, the table.

A result is one engine's JSON (slimvec-bench's, or a peer's in the shape of
hnswlib_bench.py's). slimvec's points may carry "rerank_depth" (0: no
re-ranking; > 0: re-ranked by the originals); the two kinds are two curves,
"plain" and "reranked", and "best" takes at each target the faster of them.
"""

import os

TARGETS = [0.90, 0.95, 0.99]
SV_EXTRA = ("disk_bytes_per_vector", "memory_by_part", "originals")


def frontier(points):
    """The points no other point beats on both recall and QPS, by recall."""
    kept, best = [], None
    for p in sorted(points, key=lambda p: (-p["recall_at_10"], -p["qps"])):
        if best is None or p["qps"] > best:
            kept.append(p)
            best = p["qps"]
    return kept[::-1]


def qps_at_recall(points, target):
    """(qps, how) at a recall target, interpolated linearly in recall between
    the last sweep point below the target and the first at or above it.

    The sweep is in search list order; a curve with several points per
    search list (several re-rank depths) is read along its recall/QPS
    frontier instead. how is "interpolated", "at-first-point" (the first
    point already meets the target: its QPS is a lower bound) or
    "not reached" (qps is None).
    """
    lists = [p["search_list"] for p in points]
    if len(set(lists)) < len(lists):
        pts = frontier(points)
    else:
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


def slimvec_curves(sv):
    """{"plain": points[, "reranked": points]} from slimvec's sweep."""
    plain = [p for p in sv["points"] if not p.get("rerank_depth")]
    reranked = [p for p in sv["points"] if p.get("rerank_depth")]
    return {"plain": plain, "reranked": reranked} if reranked else {"plain": plain}


def slimvec_at(sv, target):
    """{curve: {"qps", "how"}} at a target, with "best" when there are two."""
    out = {}
    for name, pts in slimvec_curves(sv).items():
        q, how = qps_at_recall(pts, target) if pts else (None, "not reached")
        out[name] = {"qps": q, "how": how}
    if len(out) > 1:
        reached = [(v["qps"], k) for k, v in out.items() if v["qps"] is not None]
        if reached:
            q, k = max(reached)
            out["best"] = {"qps": q, "how": out[k]["how"], "curve": k}
        else:
            out["best"] = {"qps": None, "how": "not reached", "curve": None}
    return out


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def compare_results(sv, peers):
    """The comparison figures: slimvec's QPS per curve at each target, and
    for each peer its figures and slimvec's ratios against them."""
    sv_at = {t: slimvec_at(sv, t) for t in TARGETS}
    comparison = {
        "targets": TARGETS,
        "slimvec": {
            "bytes_per_vector_arena": sv["bytes_per_vector_arena"],
            "bytes_per_vector_rss": sv["bytes_per_vector_rss"],
            "build_seconds": sv["build_seconds"],
            "qps_at_recall": [dict(recall=t, **sv_at[t]) for t in TARGETS],
            **{k: sv[k] for k in SV_EXTRA if k in sv},
        },
        "peers": {},
    }
    for name, pr in peers.items():
        rows = []
        for t in TARGETS:
            pq, p_how = qps_at_recall(pr["points"], t)
            row = {"recall": t, "qps": pq, "how": p_how, "ratio": {}, "ratio_exact": {}}
            if all("qps_batch" in p for p in pr["points"]):
                row["qps_batch"], row["batch_how"] = qps_at_recall(
                    [dict(p, qps=p["qps_batch"]) for p in pr["points"]], t)
            for curve, v in sv_at[t].items():
                row["ratio"][curve] = ratio(v["qps"], pq)
                # A side that meets the target at its first point has only a
                # lower bound there, and so the ratio is no exact figure.
                row["ratio_exact"][curve] = v["how"] == "interpolated" and p_how == "interpolated"
            rows.append(row)
        comparison["peers"][name] = {
            "engine": pr.get("engine"),
            "build": pr.get("build") or pr.get("hnswlib_build"),
            "bytes_per_vector_rss": pr["bytes_per_vector_rss"],
            "ratio_arena_vs_rss": ratio(sv["bytes_per_vector_arena"], pr["bytes_per_vector_rss"]),
            "ratio_rss_vs_rss": ratio(sv["bytes_per_vector_rss"], pr["bytes_per_vector_rss"]),
            "build_seconds": pr["build_seconds"],
            "ratio_build_seconds": ratio(sv["build_seconds"], pr["build_seconds"]),
            "qps_at_recall": rows,
        }
    return comparison


def fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def fmt_ratio(v, exact=True):
    return "-" if v is None else f"{v:.2f}x" + ("" if exact else "*")


def cell(v, how):
    if v is None:
        return "not reached" if how == "not reached" else "-"
    return (">=" if how == "at-first-point" else "") + fmt(v, 0)


CURVE_LABEL = {"plain": "", "reranked": " re-ranked", "best": " best"}
WIDTH, LABEL_WIDTH = 16, 30


def line(title, first, rest):
    print(f"{title:{LABEL_WIDTH}}{first:>{WIDTH}}" + "".join(f"{c:>{WIDTH}}" for c in rest))


def print_figures(sv, peers, comparison):
    """Each engine's own figures, one column each."""
    names, cp = list(peers), comparison["peers"]
    line("", "slimvec", names)
    line("bytes/vector (arena)", fmt(sv["bytes_per_vector_arena"]), ["-"] * len(names))
    line("bytes/vector (RSS)", fmt(sv["bytes_per_vector_rss"]),
         [fmt(peers[n]["bytes_per_vector_rss"]) for n in names])
    if sv.get("disk_bytes_per_vector"):
        line("bytes/vector on disk", fmt(sv["disk_bytes_per_vector"]), ["-"] * len(names))
    line("build seconds", fmt(sv["build_seconds"], 2), [fmt(peers[n]["build_seconds"], 2) for n in names])
    sv_rows = comparison["slimvec"]["qps_at_recall"]
    for i, t in enumerate(TARGETS):
        rows = [cp[n]["qps_at_recall"][i] for n in names]
        for curve, v in sv_rows[i].items():
            if curve in CURVE_LABEL:
                line(f"QPS @ recall {t:.2f}{CURVE_LABEL[curve]}", cell(v["qps"], v["how"]),
                     [cell(r["qps"], r["how"]) if curve == "plain" else "" for r in rows])
        if any("qps_batch" in r for r in rows):
            line(f"QPS @ recall {t:.2f} batch call", "",
                 [cell(r["qps_batch"], r["batch_how"]) if "qps_batch" in r else "" for r in rows])
    line("max recall@10 in sweep",
         "/".join(f"{max(p['recall_at_10'] for p in c):.4f}" for c in slimvec_curves(sv).values()),
         [f"{max(p['recall_at_10'] for p in peers[n]['points']):.4f}" for n in names])
    if "memory_by_part" in sv:
        parts = ", ".join(f"{k} {fmt(v)}" for k, v in sv["memory_by_part"].items())
        print(f"slimvec memory by part (B/vector): {parts}")


def print_ratios(comparison):
    """slimvec's figure over each peer's, one column per peer."""
    cp = comparison["peers"]
    names = list(cp)
    line("slimvec / peer", "", names)
    line("bytes/vector arena vs RSS", "", [fmt_ratio(cp[n]["ratio_arena_vs_rss"]) for n in names])
    line("bytes/vector RSS vs RSS", "", [fmt_ratio(cp[n]["ratio_rss_vs_rss"]) for n in names])
    line("build seconds", "", [fmt_ratio(cp[n]["ratio_build_seconds"]) for n in names])
    inexact = False
    for i, t in enumerate(TARGETS):
        rows = [cp[n]["qps_at_recall"][i] for n in names]
        for curve in (c for c in comparison["slimvec"]["qps_at_recall"][i] if c in CURVE_LABEL):
            inexact |= any(r["ratio"][curve] is not None and not r["ratio_exact"][curve] for r in rows)
            line(f"QPS @ recall {t:.2f}{CURVE_LABEL[curve]}", "",
                 [fmt_ratio(r["ratio"][curve], r["ratio_exact"][curve]) for r in rows])
    if inexact:
        print("  * a side meets this target at its first sweep point ('>='): its QPS is a lower "
              "bound, so the ratio is only indicative; sweep lower search lists / ef for an exact one")


def print_report(sv, peers, comparison, notes):
    """The summary: each engine's figures, then slimvec's ratios per peer."""
    label = sv.get("dataset") or os.path.basename(sv["files"]["base"])
    print("\n" + "=" * 78)
    print(f"{label}: n {sv['n']}, dim {sv['dim']}, metric {sv['metric']}, build threads "
          f"{sv['threads'] or sv['cores']}")
    orig = f", originals {sv['originals']}" if "originals" in sv else ""
    print(f"slimvec {sv['storage']} R={sv['R']} L={sv['L']} alpha={sv['alpha']}{orig}")
    for n, p in peers.items():
        print(f"  vs {n}: {p.get('storage', 'f32')} M={p['M']} ef_construction={p['ef_construction']}; "
              f"{comparison['peers'][n]['build']}")
    print("=" * 78)
    print_figures(sv, peers, comparison)
    if peers:
        print()
        print_ratios(comparison)
    if not sv["validate"]["ok"]:
        print(f"\nWARNING: slimvec's graph FAILED validation: {sv['validate']['message']}")
    print("\nnotes:")
    for note in notes:
        print("  - " + note)
