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

``PYTHONPATH=. python experiments/checks/grouped_pairs.py [--targets ...]``
"""
import argparse
import os
import subprocess
import sys
import tempfile

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
                distances._pair_sums(x, a, e, Q, gram, zero, h, h)
            bad += int(not np.array_equal(P, Q))
            total += 1
x = np.random.default_rng(0).normal(size=(20, 20000)).astype(np.float32)
digest = __import__("hashlib").sha256(distances.sq_distances(x).tobytes()).hexdigest()[:12]
print(f"{bad} of {total} slices differ; sq_distances digest {digest}")
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", default=["host", "haswell", "skylake-avx512", "generic"])
    args = ap.parse_args()
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
