"""Are the grouped pair sums of ``byzsgd.distances`` the tiles' sums on
other instruction sets too?

Fixed: the comparison of tests/test_coordinate.py
(``test_grouped_pairs_are_summed_as_by_tiles_along_the_triangle``): for
n = 2..26 rows, float32 squared distances and float64 inner products over
slices of 512, 29 and 1 columns, ``_slice_pairs`` (rows in groups of four,
a six- or ten-sum loop within a group) against 2 x 4 tiles along the
triangle, the schedule before it.
Varies: the code numba generates, through NUMBA_CPU_NAME (one process and
an empty cache per target): the host, Haswell (AVX2), Skylake-AVX512 and a
generic x86-64 (SSE2). The within-group loop is vectorised by LLVM on its
own, so its sums equal the tiles' only if LLVM picks the same vector width
and interleave for both loops; the test checks the host, this checks the
others. Each target also prints a digest of the distances of one matrix, to
show that the generated code (and so the rounding) differs between them.
With ``--time``: on the host, one thread, float32 (20, 118282) Gaussian
rows, interleaved repetitions of ``sq_distances`` and of the same kernel
with tiles along the triangle (today's tile code, the old schedule).

``PYTHONPATH=. python experiments/checks/grouped_pairs.py [--targets ...] [--time R]``
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

from byzsgd import coordinate, distances

CHILD = r"""
import numpy as np
from byzsgd import distances
bad = total = 0
for n in range(2, 27):
    for gram in (False, True):
        dtype = np.float64 if gram else np.float32
        rng = np.random.default_rng(n)
        w = 2 * distances.SLICE + 37
        x = (rng.normal(size=(n, w)) * 10.0 ** rng.uniform(-3, 3, size=(n, 1))).astype(dtype)
        zero = x.dtype.type(0)
        for a, e in [(0, distances.SLICE), (distances.SLICE, w), (3, 32), (5, 6)]:
            P, Q = np.zeros((n, n)), np.zeros((n, n))
            distances._slice_pairs(x, a, e, P, gram, zero)
            for h in range(0, n, 2):
                distances._pair_sums(x, a, e, Q, gram, zero, h, h, False)
            bad += int(not np.array_equal(P, Q))
            total += 1
x = np.random.default_rng(0).normal(size=(20, 20000)).astype(np.float32)
digest = __import__("hashlib").sha256(distances.sq_distances(x).tobytes()).hexdigest()[:12]
print(f"{bad} of {total} slices differ; sq_distances digest {digest}")
"""


@numba.njit(parallel=True)
def _triangle_kernel(x, P, bl, nchunks, zero):
    # distances._sq_kernel with the schedule before _slice_pairs
    d = x.shape[1]
    nblocks = (d + bl - 1) // bl
    for chunk in numba.prange(nchunks):
        for blk in range(chunk * nblocks // nchunks, (chunk + 1) * nblocks // nchunks):
            s = blk * bl
            e = min(s + bl, d)
            for a in range(s, e, distances.SLICE):
                for h in range(0, x.shape[0], 2):
                    distances._pair_sums(x, a, min(a + distances.SLICE, e), P[chunk], False, zero, h, h, False)


def triangle_sq_distances(x):
    bl = coordinate.STREAM_COLS
    nchunks = coordinate.chunks(x.shape[1], bl)
    P = np.zeros((nchunks,) + (x.shape[0],) * 2, np.float64)
    _triangle_kernel(x, P, bl, nchunks, x.dtype.type(0))
    with np.errstate(invalid="ignore", over="ignore"):
        return distances._finish(distances._ordered_sum(P))


def timing(repeats):
    x = coordinate.readonly(np.random.default_rng(0).normal(size=(20, 118282)).astype(np.float32))
    same = np.array_equal(distances.sq_distances(x), triangle_sq_distances(x))
    fns = {"mean": lambda: coordinate.row_sum_mean(x), "grouped": lambda: distances.sq_distances(x),
           "triangle": lambda: triangle_sq_distances(x)}
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    best = {k: min(v) * 1e3 for k, v in times.items()}
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    print(f"(20, 118282) float32, {repeats} interleaved repetitions, "
          f"{numba.get_num_threads()} thread(s); bit-identical: {same}")
    for k in fns:
        print(f"  {k:9s} min {best[k]:.3f} ms  median {med[k]:.3f} ms  min / mean {best[k] / best['mean']:.2f}")
    print(f"  grouped / triangle: {best['grouped'] / best['triangle']:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="*", default=["host", "haswell", "skylake-avx512", "generic"])
    ap.add_argument("--time", type=int, metavar="R", help="also time R interleaved repetitions")
    args = ap.parse_args()
    if args.time:
        numba.set_num_threads(1)
        timing(args.time)
    for target in args.targets:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            if target != "host":
                env["NUMBA_CPU_NAME"] = target
            out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                                 text=True, check=True).stdout.strip()
        print(f"{target:16s} {out}")


if __name__ == "__main__":
    main()
