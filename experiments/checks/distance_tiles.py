"""Would a tighter tiling make the pairwise-distance kernel faster?

Fixed: float32 (20, 118282) Gaussian rows (the MLP's d), one thread, the
kernel of ``byzsgd.distances`` (2 x 4 row-pair tiles, 512-column slices,
float32 slice sums added in float64).
Varies: which tiles. ``distances`` walks rows 2 at a time against the rows
from there on, 4 at a time: 30 tiles, 240 pair sums for the 190 pairs of
n = 20. Here a greedy cover (each step takes the 2 x 4 tile with the most
pairs still needed) gives every pair once from fewer tiles; the same loop
body computes each pair, so the distances must be bit-identical.

Prints the tile counts, whether the matrices (also with NaN, +-inf, 1e20
rows) are bit-identical, and the fastest of interleaved repetitions of both.
Multi-Krum misses P1 on an AMD EPYC (4.42x mean at d = 118282, target 4);
this is the change README named for it.
Since then ``distances`` groups rows by four (``_slice_pairs``: 190 sums,
a six-sum loop within a group); this check, and distance_tiles.txt, record
the comparison with the schedule before it (commit 20a3a5b).
``PYTHONPATH=. python experiments/checks/distance_tiles.py [--n N] [--repeats R]``
"""
import argparse
import time

import numba
import numpy as np

from byzsgd import coordinate, distances
from byzsgd.distances import SLICE


def greedy_cover(n):
    """(tiles, want): tiles[t] = (u0, u1, v0, v1, v2, v3) row indices,
    want[t, 4r + c] whether tile t gives pair (u_r, v_c); every pair i < j
    wanted exactly once, in row order."""
    need = ~np.eye(n, dtype=bool)
    tiles, want = [], []
    while need.any():
        best = None
        for a in range(n):
            for b in range(a + 1, n):
                cols = np.argsort(-(need[a].astype(int) + need[b]), kind="stable")[:4]
                got = {(min(r, c), max(r, c)) for r in (a, b) for c in cols if need[r, c]}
                if best is None or len(got) > best[0]:
                    best = (len(got), a, b, cols)
        _, a, b, cols = best
        w = []
        for r in (a, b):
            for c in cols:
                w.append(bool(need[r, c]))
                need[r, c] = need[c, r] = False
        tiles.append([a, b, *cols])
        want.append(w)
    tiles, want = np.array(tiles, np.int64), np.array(want)
    order = np.lexsort(tiles.T[::-1])  # tiles sharing their two rows one after another
    return tiles[order], want[order]


@numba.njit(fastmath={"reassoc", "contract"})
def _tiles(x, a, e, P, tiles, want, zero):
    # the arithmetic of distances._pair_sums, with the rows of each tile looked up
    s = np.empty(8)
    for t in range(tiles.shape[0]):
        u = (x[tiles[t, 0], a:e], x[tiles[t, 1], a:e])
        v = (x[tiles[t, 2], a:e], x[tiles[t, 3], a:e], x[tiles[t, 4], a:e], x[tiles[t, 5], a:e])
        s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
        for k in range(e - a):
            x0, x1, y0, y1, y2, y3 = u[0][k], u[1][k], v[0][k], v[1][k], v[2][k], v[3][k]
            s00 += (x0 - y0) * (x0 - y0)
            s01 += (x0 - y1) * (x0 - y1)
            s02 += (x0 - y2) * (x0 - y2)
            s03 += (x0 - y3) * (x0 - y3)
            s10 += (x1 - y0) * (x1 - y0)
            s11 += (x1 - y1) * (x1 - y1)
            s12 += (x1 - y2) * (x1 - y2)
            s13 += (x1 - y3) * (x1 - y3)
        s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7] = s00, s01, s02, s03, s10, s11, s12, s13
        for q in range(8):
            if want[t, q]:
                i, j = tiles[t, q // 4], tiles[t, 2 + q % 4]
                P[min(i, j), max(i, j)] += s[q]


@numba.njit(parallel=True)
def _kernel(x, P, bl, nchunks, tiles, want, zero):
    d = x.shape[1]
    nblocks = (d + bl - 1) // bl
    for chunk in numba.prange(nchunks):  # the blocks and slices of distances._sq_kernel
        for blk in range(chunk * nblocks // nchunks, (chunk + 1) * nblocks // nchunks):
            s, e = blk * bl, min(blk * bl + bl, d)
            for a in range(s, e, SLICE):
                _tiles(x, a, min(a + SLICE, e), P[chunk], tiles, want, zero)


def tiled_sq_distances(x, tiles, want):
    bl = coordinate.STREAM_COLS
    nchunks = coordinate.chunks(x.shape[1], bl)
    P = np.zeros((nchunks,) + (x.shape[0],) * 2, np.float64)
    _kernel(x, P, bl, nchunks, tiles, want, x.dtype.type(0))
    with np.errstate(invalid="ignore", over="ignore"):
        return distances._finish(distances._ordered_sum(P))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    n, rng = args.n, np.random.default_rng(0)
    tiles, want = greedy_cover(n)
    print(f"n = {n}: distances' tiles {sum((n - i + 3) // 4 for i in range(0, n, 2))}, "
          f"greedy cover {len(tiles)}, pairs {n * (n - 1) // 2}")
    for d in (118282, 4096 * 3 + 7, 513, 5):
        x = rng.normal(size=(n, d)).astype(np.float32)
        for value, p in [(np.nan, 0.01), (np.inf, 0.01), (-np.inf, 0.01)]:
            x[:, : d // 2][rng.random((n, d // 2)) < p] = value  # half the columns messy
        x[3] *= np.float32(1e20)
        same = distances.sq_distances(x).view(np.uint64) == tiled_sq_distances(x, tiles, want).view(np.uint64)
        print(f"d = {d}: bit-identical {bool(same.all())}")
    x = (0.01 * rng.normal(size=(n, 118282))).astype(np.float32)
    old, new = [], []
    for _ in range(args.repeats):  # interleaved: both sides see the same machine
        t = time.perf_counter()
        distances.sq_distances(x)
        old.append(time.perf_counter() - t)
        t = time.perf_counter()
        tiled_sq_distances(x, tiles, want)
        new.append(time.perf_counter() - t)
    print(f"d = 118282, {args.repeats} interleaved repetitions, {numba.get_num_threads()} thread(s): "
          f"distances {min(old) * 1e3:.3f} ms (median {np.median(old) * 1e3:.3f}), "
          f"greedy cover {min(new) * 1e3:.3f} ms (median {np.median(new) * 1e3:.3f}), "
          f"ratio {min(new) / min(old):.3f}")


if __name__ == "__main__":
    main()
