#!/usr/bin/python3
"""Synthetic "normalised float embeddings" in TEXMEX format.

Writes a data set meant to look like real sentence embeddings, for studies
where real embeddings cannot be downloaded (see quantizer_study.py):

  embed.base.fvecs        n base vectors (default 50,000), dimension dim (256)
  embed.query.fvecs       nq query vectors (default 1,000), same distribution
  embed.cosine.gt.ivecs   exact top 100 base ids of each query under cosine
                          (dot product of the unit vectors), computed in
                          double, best first

The generative model, all from one numpy default_rng(seed):

  - low rank: a latent z in R^latent (64) is mapped through a dim x latent
    matrix U diag(s) V^T with random orthonormal U, V and power-law decaying
    singular values s_i = (1 + i)^-0.6, plus a small full-rank isotropic
    noise (real embeddings are only approximately low rank);
  - clusters: z = centre[c] + spread[c] * N(0, I), with `clusters` (200)
    Gaussian centres, skewed (Zipf-like) cluster sizes and a per-cluster
    spread, so that neighbourhoods are meaningful but not trivial;
  - a shared mean offset: one random vector added to every vector, of norm
    `offset` (0.8) times the RMS norm of the signal part, which makes the
    vectors anisotropic (the mean pairwise cosine is well above 0, as in
    real models);
  - outlier dimensions: `outliers` (4) random coordinates get a large
    constant value of `outlier_scale` (10) times the typical per-coordinate
    RMS (random sign per coordinate) and their fluctuation is multiplied by
    `outlier_spread` (3), like the "rogue" dimensions of transformer
    embeddings (large mean, larger variance than the rest);
  - then each vector is L2-normalised.

Queries are drawn from the same mixture (fresh samples, same clusters). The
script prints a few statistics (mean pairwise cosine, energy in the outlier
dimensions, mean top-1 and top-10 cosine) so that a run can be judged.

  /usr/bin/python3 tests/bench/make_embeddings.py [--out DIR] [--n N] [--nq NQ] [--dim D]

Run with /usr/bin/python3 (Debian's interpreter, which has numpy). With the
defaults it takes about 10 s of CPU (the ground truth dominates).
"""

import argparse
import os
import sys
import time

try:
    import numpy as np
except ImportError as e:
    sys.exit(f"make_embeddings.py: {e}: run with /usr/bin/python3 (needs python3-numpy)")

GT_K = 100


def write_vecs(path, data):
    """Writes rows of a float32 or int32 array as TEXMEX .fvecs / .ivecs."""
    data = np.ascontiguousarray(data)
    n, dim = data.shape
    out = np.empty((n, dim + 1), dtype=np.int32)
    out[:, 0] = dim
    out[:, 1:] = data.view(np.int32) if data.dtype == np.float32 else data.astype(np.int32)
    tmp = path + ".tmp"
    out.astype("<i4").tofile(tmp)
    os.replace(tmp, path)


def random_orthonormal(rng, rows, cols):
    """rows x cols matrix with orthonormal columns (rows >= cols)."""
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


class Model:
    """The fixed parts of the generative model (drawn once from rng)."""

    def __init__(self, rng, dim, latent, clusters, offset, outliers, outlier_scale,
                 outlier_spread, noise):
        if latent > dim:
            sys.exit(f"make_embeddings.py: --latent {latent} exceeds --dim {dim}")
        if outliers > dim:
            sys.exit(f"make_embeddings.py: --outliers {outliers} exceeds --dim {dim}")
        self.dim = dim
        self.latent = latent
        s = (1.0 + np.arange(latent)) ** -0.6
        u = random_orthonormal(rng, dim, latent)
        v = random_orthonormal(rng, latent, latent)
        self.mix = (u * s) @ v.T                      # dim x latent, singular values s
        self.centres = rng.standard_normal((clusters, latent))
        self.spread = rng.uniform(0.45, 0.9, size=clusters)
        w = (1.0 + rng.permutation(clusters)) ** -0.8  # Zipf-like cluster sizes
        self.weights = w / w.sum()
        # The RMS norm of the signal part (centre + spread noise, mapped), from
        # the model itself, so that the offsets are relative to it.
        e_zz = (np.sum(self.weights * (np.sum(self.centres ** 2, axis=1)
                                       + latent * self.spread ** 2)))
        signal_rms_norm = np.sqrt(e_zz * np.sum(s ** 2) / latent)
        self.coord_rms = signal_rms_norm / np.sqrt(dim)
        self.noise = noise * self.coord_rms
        m = rng.standard_normal(dim)
        self.mean = m / np.linalg.norm(m) * offset * signal_rms_norm
        self.outlier_dims = np.sort(rng.choice(dim, size=outliers, replace=False))
        self.outlier_value = (outlier_scale * self.coord_rms
                              * rng.choice([-1.0, 1.0], size=outliers))
        self.outlier_spread = outlier_spread

    def sample(self, rng, n, block=8192):
        """n L2-normalised float32 vectors and their cluster labels."""
        out = np.empty((n, self.dim), dtype=np.float32)
        labels = rng.choice(len(self.weights), size=n, p=self.weights)
        for a in range(0, n, block):
            b = min(n, a + block)
            c = labels[a:b]
            z = self.centres[c] + self.spread[c, None] * rng.standard_normal((b - a, self.latent))
            y = z @ self.mix.T + self.noise * rng.standard_normal((b - a, self.dim))
            y += self.mean
            o = self.outlier_dims
            y[:, o] = self.outlier_value + self.outlier_spread * y[:, o]
            y /= np.linalg.norm(y, axis=1, keepdims=True)
            out[a:b] = y
        return out, labels


def ground_truth(base, query, k, block=256):
    """Top k base ids by dot product (double precision), best first."""
    b64 = base.astype(np.float64)
    gt = np.empty((len(query), k), dtype=np.int32)
    for a in range(0, len(query), block):
        q = query[a:a + block].astype(np.float64)
        s = q @ b64.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(s, part, axis=1)
        # Best first; ties by smaller id for a deterministic file.
        order = np.lexsort((part, -ps), axis=1)
        gt[a:a + block] = np.take_along_axis(part, order, axis=1)
    return gt


def stats(model, base, query, gt, rng):
    """A few numbers to judge whether the set looks like embeddings."""
    i = rng.choice(len(base), size=min(2000, len(base)), replace=False)
    sub = base[i].astype(np.float64)
    c = sub @ sub.T
    off = c[~np.eye(len(sub), dtype=bool)]
    o = model.outlier_dims
    energy = float(np.mean(np.sum(base[:, o].astype(np.float64) ** 2, axis=1)))
    centred = base.astype(np.float64) - base.mean(axis=0)
    energy_c = float(np.sum(centred[:, o] ** 2) / np.sum(centred ** 2))
    q64 = query.astype(np.float64)
    top1 = np.einsum("ij,ij->i", q64, base[gt[:, 0]].astype(np.float64))
    top10 = np.einsum("ij,ij->i", q64, base[gt[:, 9]].astype(np.float64))
    top100 = np.einsum("ij,ij->i", q64, base[gt[:, -1]].astype(np.float64))
    sv = np.linalg.svd(centred[i], compute_uv=False) ** 2
    cum = np.cumsum(sv) / sv.sum()
    print(f"  mean pairwise cosine          {off.mean():.3f} (sd {off.std():.3f})")
    print(f"  outlier dims {list(map(int, o))}: share of |x|^2 {energy:.3f}, "
          f"of the centred variance {energy_c:.3f}")
    print(f"  components for 90% / 99% of the centred variance: "
          f"{int(np.searchsorted(cum, 0.90)) + 1} / {int(np.searchsorted(cum, 0.99)) + 1}")
    print(f"  query cosine to its 1st / 10th / {gt.shape[1]}th neighbour: "
          f"{top1.mean():.3f} / {top10.mean():.3f} / {top100.mean():.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="./bench-data", help="output directory (./bench-data)")
    ap.add_argument("--n", type=int, default=50000, help="base vectors (50000)")
    ap.add_argument("--nq", type=int, default=1000, help="query vectors (1000)")
    ap.add_argument("--dim", type=int, default=256, help="dimension (256)")
    ap.add_argument("--latent", type=int, default=64, help="latent dimensions (64)")
    ap.add_argument("--clusters", type=int, default=200, help="clusters (200)")
    ap.add_argument("--offset", type=float, default=0.8,
                    help="shared mean offset, relative to the signal's RMS norm (0.8)")
    ap.add_argument("--outliers", type=int, default=4, help="outlier dimensions (4)")
    ap.add_argument("--outlier-scale", type=float, default=10.0,
                    help="outlier dims' constant value / typical coordinate RMS (10)")
    ap.add_argument("--outlier-spread", type=float, default=3.0,
                    help="factor on the outlier dims' fluctuation (3)")
    ap.add_argument("--noise", type=float, default=0.1,
                    help="full-rank isotropic noise / typical coordinate RMS (0.1)")
    ap.add_argument("--seed", type=int, default=20231126, help="numpy default_rng seed")
    ap.add_argument("--prefix", default="embed", help="file name prefix (embed)")
    args = ap.parse_args()
    if args.n < GT_K:
        sys.exit(f"make_embeddings.py: --n must be at least {GT_K}")
    if args.nq < 1 or args.dim < 2 or args.latent < 1 or args.clusters < 1:
        sys.exit("make_embeddings.py: --nq, --dim, --latent and --clusters must be positive")

    t0 = time.process_time()
    rng = np.random.default_rng(args.seed)
    model = Model(rng, args.dim, args.latent, args.clusters, args.offset, args.outliers,
                  args.outlier_scale, args.outlier_spread, args.noise)
    base, _ = model.sample(rng, args.n)
    query, _ = model.sample(rng, args.nq)
    gt = ground_truth(base, query, GT_K)

    os.makedirs(args.out, exist_ok=True)
    paths = [os.path.join(args.out, f"{args.prefix}.{s}") for s in
             ("base.fvecs", "query.fvecs", "cosine.gt.ivecs")]
    write_vecs(paths[0], base)
    write_vecs(paths[1], query)
    write_vecs(paths[2], gt)
    for p in paths:
        print(f"wrote {p}")
    stats(model, base, query, gt, np.random.default_rng(args.seed + 1))
    print(f"  cpu {time.process_time() - t0:.1f} s")


if __name__ == "__main__":
    main()
