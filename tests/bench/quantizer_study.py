#!/usr/bin/python3
"""Recall of exact search over 8-bit quantized vectors, per quantization scheme.

Isolates quantization error from the graph: for each scheme the base vectors
are encoded and reconstructed, and every query is answered by EXACT search
over all the reconstructions; recall@10 is measured against the float ground
truth (.ivecs, the exact top-k of the float vectors). Schemes:

  a  per-dimension min/max ranges over the base, asymmetric (float query
     against the reconstructed codes)
  b  per-dimension ranges clipped at the 0.1 / 99.9 percentiles of the base,
     asymmetric (values outside are clamped)
  c  per-vector min/max, no centering, asymmetric
  d  per-vector min/max after subtracting the base mean mu (LVQ, what the
     engine stores, core/quantizer.h), asymmetric
  e  d, symmetric: the query is quantized the same way (mu, its own lo and
     delta) and the distance taken between the two reconstructions
  f  d with 4 bits (16 levels), asymmetric, for reference

All encode the way core/quantizer.c does (float32 residuals and ranges, the
scaled value in double, codes rounded half to even and clamped;
reconstruction mu + lo + delta * c in float32). Under cosine the base and
the queries are first normalised as the engine does (double norm, float
scale) and ranked by dot product; under ip by dot product; under l2 by
squared distance. Also reported: the mean relative reconstruction error
|x - x^| / |x| over the base (and over the queries for e), and the bytes a
vector's codes take.

How "exact" is computed cheaply (the machine's numpy uses the reference
BLAS, about 5 GFLOP/s): for each query the quantized distances are computed
exactly (double) for a candidate set, the query's ground-truth top K (all
the .ivecs holds, usually 100) plus the base vectors whose own
reconstruction error exceeds a threshold t (the --extra largest errors). Any
other vector x is no nearer than the K-th true neighbour in float terms, and
its quantized distance differs from its float one by at most |q||e_x| <=
|q| t (ip; |e_x| <= t for l2, by the triangle inequality; plus a query-error
term for e). When the 10th best candidate beats that bound, the candidate
top 10 is provably the exact top 10 over the whole base; the queries for
which it does not are answered by full brute force (float32 shortlist of 32,
re-ranked in double), and their count is reported as "brute". --full
answers every query by brute force (to check the shortcut, or when the
ground truth is not trusted; its float row checks the ground truth itself).
A few queries are always checked against a float brute force to make sure
the ground truth is the exact top K that the shortcut relies on.

  quantizer_study.py --base B.fvecs --query Q.fvecs --gt G.ivecs --metric l2|ip|cosine
                     [--nq N] [--schemes abcdef] [--full] [--json OUT]

--nq takes the first N queries (and the same rows of the ground truth).
--train-n N trains mu on the first N base vectors only (the engine trains
on its first flushed batch; default: all). Memory: about three float32
copies of the base. Run with /usr/bin/python3 (Debian's, which has numpy).
"""

import argparse
import json
import os
import sys
import time

try:
    import numpy as np
except ImportError as e:
    sys.exit(f"quantizer_study.py: {e}: run with /usr/bin/python3 (needs python3-numpy)")

K = 10                # recall@K
SHORTLIST = 32        # float32 brute-force shortlist re-ranked in double
QBLOCK = 128          # queries per block
RBLOCK = 8192         # base rows per encoding block
SPOT_CHECKS = 16      # queries whose ground truth is checked by brute force

SCHEMES = {
    "float": "float (no quantization)",
    "a": "per-dim min/max, asym",
    "b": "per-dim 0.1/99.9 pct clip, asym",
    "c": "per-vector, no centering, asym",
    "d": "LVQ (centred per-vector), asym",
    "e": "LVQ, symmetric",
    "f": "LVQ 4-bit, asym",
}


def die(msg):
    sys.exit(f"quantizer_study.py: {msg}")


def read_vecs(path, dtype, rows=None):
    """A TEXMEX .fvecs / .ivecs file as a C-contiguous rows x dim array (the
    first `rows` records only when given), with its headers checked."""
    kind = "fvecs" if dtype == np.float32 else "ivecs"
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = np.fromfile(f, dtype="<i4", count=1)
    except OSError as e:
        die(f"{path}: cannot read: {e.strerror}")
    if size < 4 or size % 4 != 0 or head.size != 1:
        die(f"{path}: size {size} is not a whole number of 4-byte values (not a {kind} file?)")
    dim = int(head[0])
    if dim <= 0 or dim > (1 << 20):
        die(f"{path}: dimension header {dim} is not in 1..{1 << 20}")
    rec = dim + 1
    if (size // 4) % rec != 0:
        die(f"{path}: size {size} is not a multiple of the record size {4 * rec}")
    total = size // 4 // rec
    n = total if rows is None else min(rows, total)
    raw = np.fromfile(path, dtype="<i4", count=n * rec).reshape(n, rec)
    bad = np.nonzero(raw[:, 0] != dim)[0]
    if bad.size:
        die(f"{path}: record {int(bad[0])} has dimension header {int(raw[bad[0], 0])}, "
            f"expected {dim}")
    data = np.ascontiguousarray(raw[:, 1:])
    del raw
    if dtype == np.float32:
        data = data.view(np.float32)
        if not np.isfinite(data).all():
            die(f"{path}: holds a value that is not finite")
    return data, total


def normalise(x):
    """Rows scaled to unit norm as core/collection.c does (double norm, float scale)."""
    for a in range(0, len(x), RBLOCK):
        blk = x[a:a + RBLOCK]
        norm = np.sqrt(np.einsum("ij,ij->i", blk.astype(np.float64), blk.astype(np.float64)))
        if (norm == 0).any():
            die("a zero vector cannot be normalised under cosine")
        blk *= (1.0 / norm).astype(np.float32)[:, None]


# ---- quantizers --------------------------------------------------------------


def lvq(x, mu, levels):
    """Per-vector scalar quantization of rows x (float32) after subtracting mu
    (or not, when mu is None), with `levels` + 1 levels; returns the
    reconstruction (mu + lo + delta * c) in float32, as core/quantizer.c."""
    r = x - mu if mu is not None else x.copy()
    lo = r.min(axis=1, keepdims=True)
    hi = r.max(axis=1, keepdims=True)
    delta = (hi - lo) / np.float32(levels)
    # The reciprocal and the scaled value in double, as the encoder does.
    d64 = delta.astype(np.float64)
    inv = np.divide(1.0, d64, out=np.zeros_like(d64), where=d64 > 0)
    r -= lo
    t = r * inv
    np.clip(t, 0.0, float(levels), out=t)
    np.rint(t, out=t)                       # codes (lrint: round half to even)
    r[...] = t
    r *= delta
    if mu is not None:
        r += mu + lo
    else:
        r += lo
    return r


def per_dim(x, lo, delta, inv):
    """Per-dimension scalar quantization with 256 levels: codes
    round(clamp((x - lo) / delta)), reconstruction lo + delta * c."""
    r = (x - lo) * inv
    np.clip(r, 0.0, 255.0, out=r)
    np.rint(r, out=r)
    r *= delta
    r += lo
    return r


def per_dim_ranges(base, pct):
    """(lo, delta, inv) per dimension: min/max, or the pct / 100-pct percentiles."""
    if pct is None:
        lo = base.min(axis=0)
        hi = base.max(axis=0)
    else:
        lo = np.empty(base.shape[1], dtype=np.float32)
        hi = np.empty(base.shape[1], dtype=np.float32)
        for j in range(0, base.shape[1], 64):
            p = np.percentile(base[:, j:j + 64], [pct, 100.0 - pct], axis=0)
            lo[j:j + 64], hi[j:j + 64] = p[0], p[1]
    delta = ((hi - lo) / np.float32(255.0)).astype(np.float32)
    inv = np.where(delta > 0, 1.0 / np.where(delta > 0, delta, 1), 0).astype(np.float32)
    return lo.astype(np.float32), delta, inv


def make_encoder(scheme, base, mu):
    """(function rows -> reconstruction, quantizes_query, bytes per vector)."""
    dim = base.shape[1]
    if scheme == "float":
        return (lambda x: x.copy()), False, 4 * dim
    if scheme in "ab":
        lo, delta, inv = per_dim_ranges(base, None if scheme == "a" else 0.1)
        return (lambda x: per_dim(x, lo, delta, inv)), False, dim
    if scheme == "c":
        return (lambda x: lvq(x, None, 255)), False, dim + 8
    if scheme in "de":
        return (lambda x: lvq(x, mu, 255)), scheme == "e", dim + 8
    if scheme == "f":
        return (lambda x: lvq(x, mu, 15)), False, (dim + 1) // 2 + 8
    die(f"unknown scheme {scheme!r}")


# ---- exact search over reconstructions ---------------------------------------


class Space:
    """Base-side data in the working frame: rows shifted by the base mean
    (distances and rankings are unchanged: for ip q.(x - m) = q.x - q.m), so
    that float32 products lose little on data far from the origin."""

    def __init__(self, metric, base):
        self.metric = metric
        self.shift = base.mean(axis=0, dtype=np.float64).astype(np.float32)

    def query(self, q):
        """Working-frame queries (l2: shifted; ip: as they are), float32."""
        return q - self.shift if self.metric == "l2" else q.copy()


def scores64(metric, qw, xw):
    """Scores (lower is better) of queries qw (b x d) against rows xw (b x m x d
    gathered, or m x d shared), in double."""
    q = qw.astype(np.float64)
    x = xw.astype(np.float64)
    if x.ndim == 3:
        dots = np.einsum("bmd,bd->bm", x, q)
        xn = np.einsum("bmd,bmd->bm", x, x)
    else:
        dots = q @ x.T
        xn = np.einsum("md,md->m", x, x)[None, :]
    if metric == "l2":
        return np.maximum(np.einsum("bd,bd->b", q, q)[:, None] + xn - 2.0 * dots, 0.0)
    return -dots


def row_norms(x):
    """|row| of a float32 array, in double, a block of rows at a time."""
    out = np.empty(len(x), dtype=np.float64)
    for a in range(0, len(x), RBLOCK):
        b = x[a:a + RBLOCK].astype(np.float64)
        out[a:a + RBLOCK] = np.sqrt(np.einsum("ij,ij->i", b, b))
    return out


def brute_force(metric, qw, recon_w, k=K):
    """Exact top k (ids, lower-is-better scores) of queries qw over all rows:
    float32 shortlist, re-ranked in double."""
    rn = np.einsum("ij,ij->i", recon_w, recon_w) if metric == "l2" else None
    ids = np.empty((len(qw), k), dtype=np.int64)
    for a in range(0, len(qw), QBLOCK):
        q = qw[a:a + QBLOCK]
        s = -(q @ recon_w.T)
        if metric == "l2":
            s = rn[None, :] + 2.0 * s
        short = np.argpartition(s, SHORTLIST - 1, axis=1)[:, :SHORTLIST]
        exact = scores64(metric, q, recon_w[short])
        order = np.argsort(exact, axis=1, kind="stable")[:, :k]
        ids[a:a + QBLOCK] = np.take_along_axis(short, order, axis=1)
    return ids


def check_gt(metric, base_w, qw, gt, rng):
    """Checks on a few queries that each ground-truth row is an exact top K:
    its worst float score is no worse than the K-th best over the base."""
    picks = rng.choice(len(qw), size=min(SPOT_CHECKS, len(qw)), replace=False)
    kk = gt.shape[1]
    bad = 0
    for i in picks:
        s = np.concatenate([scores64(metric, qw[i:i + 1], base_w[a:a + RBLOCK])[0]
                            for a in range(0, len(base_w), RBLOCK)])
        kth = np.partition(s, kk - 1)[kk - 1]
        worst = s[gt[i]].max()
        if worst > kth + 1e-6 * (abs(kth) + 1e-30) + 1e-9:
            bad += 1
    return bad, len(picks)


def study_scheme(scheme, args, base, base_w, queries, qw_float, gt, space, mu, max_far):
    """recall@10, errors and brute-force count of one scheme."""
    metric = "l2" if args.metric == "l2" else "ip"
    t0 = time.process_time()
    encode, sym, nbytes = make_encoder(scheme, base, mu)
    n, dim = base.shape

    # Reconstructed base in the working frame, and each vector's error |x - x^|.
    recon_w = np.empty_like(base)
    err = np.empty(n, dtype=np.float64)
    rel = np.empty(n, dtype=np.float64)
    for a in range(0, n, RBLOCK):
        x = base[a:a + RBLOCK]
        r = encode(x)
        e = (r.astype(np.float64) - x)
        err[a:a + RBLOCK] = np.sqrt(np.einsum("ij,ij->i", e, e))
        xn = np.sqrt(np.einsum("ij,ij->i", x.astype(np.float64), x.astype(np.float64)))
        rel[a:a + RBLOCK] = np.divide(err[a:a + RBLOCK], xn, out=np.full(len(x), np.nan),
                                      where=xn > 0)
        r -= space.shift
        recon_w[a:a + RBLOCK] = r
    base_rel = float(np.nanmean(rel))

    # Queries as the scheme sees them.
    q_err = np.zeros(len(queries))
    query_rel = None
    if sym:
        qr = encode(queries)
        e = qr.astype(np.float64) - queries
        q_err = np.sqrt(np.einsum("ij,ij->i", e, e))
        qn = np.sqrt(np.einsum("ij,ij->i", queries.astype(np.float64),
                               queries.astype(np.float64)))
        query_rel = float(np.mean(q_err[qn > 0] / qn[qn > 0]))
        qw = space.query(qr)
    else:
        qw = qw_float

    nq = len(queries)
    if args.full:
        found = brute_force(metric, qw, recon_w)
        brute = nq
    else:
        # Candidates: the ground-truth rows plus the vectors of largest error.
        n_extra = min(args.extra, n)
        order = np.argsort(err)
        extra = np.sort(order[n - n_extra:]) if n_extra else np.empty(0, dtype=np.int64)
        t = float(err[order[n - n_extra - 1]]) if n_extra < n else 0.0
        found = np.empty((nq, K), dtype=np.int64)
        need = []
        for a in range(0, nq, QBLOCK):
            g = gt[a:a + QBLOCK].astype(np.int64)
            qb = qw[a:a + QBLOCK]
            sg = scores64(metric, qb, recon_w[g])
            if n_extra:
                se = scores64(metric, qb, recon_w[extra])
                dup = (g[:, :, None] == extra[None, None, :]).any(axis=1)
                se[dup] = np.inf
                s = np.concatenate([sg, se], axis=1)
                ids = np.concatenate([g, np.broadcast_to(extra, (len(g), n_extra))], axis=1)
            else:
                s, ids = sg, g
            part = np.argpartition(s, K - 1, axis=1)[:, :K]
            ps = np.take_along_axis(s, part, axis=1)
            o = np.argsort(ps, axis=1, kind="stable")
            found[a:a + QBLOCK] = np.take_along_axis(np.take_along_axis(ids, part, axis=1), o,
                                                     axis=1)
            tenth = ps.max(axis=1)
            # The float score of the K-th true neighbour bounds every non-candidate.
            fl = scores64(metric, qw_float[a:a + QBLOCK], base_w[g]).max(axis=1)
            qe = q_err[a:a + QBLOCK]
            if metric == "l2":
                bound = np.sqrt(fl) - t - qe               # |q^-x^| >= |q-x| - |e_x| - |e_q|
                ok = (bound > 0) & (np.sqrt(tenth) < bound * (1 - 1e-9) - 1e-12)
            else:
                qn = np.sqrt(np.einsum("ij,ij->i", qb.astype(np.float64), qb.astype(np.float64)))
                bound = fl - qn * t - qe * max_far         # -(q^.x^) >= -(q.x) - |q^|t - |e_q||x|
                ok = tenth < bound - 1e-9 * (np.abs(bound) + qn * max_far) - 1e-12
            need.extend((a + np.nonzero(~ok)[0]).tolist())
        brute = len(need)
        if need:
            need = np.array(need)
            found[need] = brute_force(metric, qw[need], recon_w)
    del recon_w

    hits = np.array([len(np.intersect1d(found[i], gt[i, :K])) for i in range(nq)])
    return {
        "scheme": scheme,
        "name": SCHEMES[scheme],
        "recall_at_10": float(hits.sum()) / (K * nq),
        "hits": hits,
        "base_rel_err": base_rel,
        "query_rel_err": query_rel,
        "bytes_per_vector": nbytes,
        "brute_force_queries": brute,
        "cpu_seconds": time.process_time() - t0,
    }


def paired_differences(results, ref="d"):
    """Adds to each result its recall difference against ref (the engine's
    scheme), paired over queries, and the half-width of its 95% interval
    (1.96 standard errors of the mean per-query difference); drops the
    per-query hit counts."""
    hits = {r["scheme"]: r.pop("hits") for r in results}
    for r in results:
        r["diff_vs_" + ref] = None
        r["diff_ci95"] = None
        if ref not in hits or r["scheme"] == ref:
            continue
        d = (hits[r["scheme"]] - hits[ref]) / K
        r["diff_vs_" + ref] = float(d.mean())
        if len(d) > 1:
            r["diff_ci95"] = float(1.96 * d.std(ddof=1) / np.sqrt(len(d)))


def fmt(x, digits=4):
    return "-" if x is None else f"{x:.{digits}f}"


def print_table(res):
    print(f"\n{res['label']}: metric {res['metric']}, n {res['n']}, nq {res['nq']}, "
          f"dim {res['dim']}, mu from {res['train_n']} base vectors")
    head = (f"{'scheme':<36} {'recall@10':>9} {'vs d (95% CI)':>17} {'rel.err':>8} "
            f"{'q.err':>7} {'bytes':>6} {'brute':>6}")
    print(head)
    print("-" * len(head))
    for r in res["results"]:
        diff = ("-" if r["diff_vs_d"] is None else
                f"{r['diff_vs_d']:+.4f}" + ("" if r["diff_ci95"] is None
                                            else f"±{r['diff_ci95']:.4f}"))
        print(f"{r['scheme'] + ' ' + r['name']:<36} {r['recall_at_10']:>9.4f} {diff:>17} "
              f"{fmt(r['base_rel_err'], 5):>8} {fmt(r['query_rel_err'], 4):>7} "
              f"{r['bytes_per_vector']:>6} {r['brute_force_queries']:>6}")
    print("vs d: recall difference against d (the engine's LVQ), paired over queries;\n"
          "rel.err: mean |x - x^| / |x| over the base; q.err: the same over the queries "
          "(quantized only by e);\nbytes: codes + per-vector lo/delta (not the engine's "
          "4-byte norm); brute: queries answered by full brute force.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="base vectors (.fvecs)")
    ap.add_argument("--query", required=True, help="query vectors (.fvecs)")
    ap.add_argument("--gt", required=True, help="exact top-k ids of each query (.ivecs)")
    ap.add_argument("--metric", required=True, choices=["l2", "ip", "cosine"])
    ap.add_argument("--nq", type=int, default=None, help="use the first NQ queries")
    ap.add_argument("--schemes", default="abcdef",
                    help="schemes to run, letters of abcdef (default all); "
                         "'float' alone adds the unquantized row")
    ap.add_argument("--full", action="store_true",
                    help="brute force for every query (adds the float row)")
    ap.add_argument("--extra", type=int, default=512,
                    help="largest-error base vectors added to every query's candidates (512)")
    ap.add_argument("--train-n", type=int, default=None,
                    help="train mu on the first N base vectors (default all)")
    ap.add_argument("--label", default=None, help="name of the data set in the output")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--seed", type=int, default=1, help="seed of the ground-truth spot check")
    args = ap.parse_args()

    if args.schemes == "float":
        schemes = ["float"]
    else:
        schemes = list(args.schemes)
        if any(s not in "abcdef" for s in schemes):
            die(f"--schemes: letters of abcdef, got {args.schemes!r}")
    if args.full and "float" not in schemes:
        schemes = ["float"] + schemes

    t0 = time.process_time()
    base, n = read_vecs(args.base, np.float32)
    queries, nq_total = read_vecs(args.query, np.float32, args.nq)
    gt, _ = read_vecs(args.gt, np.int32, len(queries))
    if args.nq is not None and args.nq > nq_total:
        die(f"--nq {args.nq}: {args.query} holds only {nq_total} queries")
    if base.shape[1] != queries.shape[1]:
        die(f"dimension {base.shape[1]} of the base differs from the queries' {queries.shape[1]}")
    if len(gt) < len(queries):
        die(f"{args.gt} has {len(gt)} rows for {len(queries)} queries")
    if gt.shape[1] < K:
        die(f"{args.gt} holds {gt.shape[1]} ids a row, fewer than {K}")
    if gt.min() < 0 or gt.max() >= n:
        die(f"{args.gt} holds ids outside 0..{n - 1}")
    if args.metric == "cosine":
        normalise(base)
        normalise(queries)
    metric = "l2" if args.metric == "l2" else "ip"
    train_n = n if args.train_n is None else max(1, min(args.train_n, n))
    mu = base[:train_n].mean(axis=0, dtype=np.float64).astype(np.float32)

    space = Space(metric, base)
    base_w = base - space.shift
    qw_float = space.query(queries)
    max_far = float(row_norms(base_w).max())   # bounds |x - shift| in the ip bound of e
    if not args.full:
        bad, checked = check_gt(metric, base_w, qw_float, gt, np.random.default_rng(args.seed))
        if bad:
            die(f"{args.gt}: {bad} of {checked} spot-checked rows are not an exact top "
                f"{gt.shape[1]} under {args.metric} (wrong metric, or rows not matching the "
                "queries?); --full does not rely on it")

    res = {
        "label": args.label or os.path.basename(args.base).split(".")[0],
        "base": args.base, "query": args.query, "gt": args.gt,
        "metric": args.metric, "n": n, "nq": len(queries), "dim": base.shape[1],
        "train_n": train_n, "full_brute_force": args.full, "extra": args.extra,
        "results": [],
    }
    for s in schemes:
        r = study_scheme(s, args, base, base_w, queries, qw_float, gt, space, mu, max_far)
        res["results"].append(r)
        print(f"  {s}: recall@10 {r['recall_at_10']:.4f}  ({r['cpu_seconds']:.1f} s cpu)",
              file=sys.stderr, flush=True)
    paired_differences(res["results"])
    res["cpu_seconds"] = time.process_time() - t0
    print_table(res)
    print(f"cpu {res['cpu_seconds']:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
