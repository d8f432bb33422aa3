"""Are the grouped pair sums of ``byzsgd.distances`` the tiles' sums on
other instruction sets too?

Fixed: tests/test_coordinate.py's
``test_grouped_pairs_are_summed_as_by_tiles_along_the_triangle``: for
n = 2, 3, 4, 5, 7, 8, 13, 20, 26 rows, float32 squared distances and
float64 inner products over column ranges of 512, 549, 29, 1 and 83, ``_slice_pairs`` (rows in groups of four,
a six- or ten-sum loop within a group) against ``_triangle_pairs`` (2 x 4
tiles along the triangle, the schedule before it).
Varies: the code numba generates, through NUMBA_CPU_NAME (one process and
an empty cache per target): the host, Haswell (AVX2), Skylake-AVX512 and a
generic x86-64 (SSE2). The within-group loop is vectorised by LLVM on its
own, so its sums equal the tiles' only if LLVM picks the same vector width
and interleave for both loops; the test checks the host, this runs it for
the others. Each target also prints a digest of the distances of one
matrix, to show that the generated code (and so the rounding) differs
between them.
With ``--time``: on the host, one thread, float32 (20, 118282) Gaussian
rows, interleaved repetitions of ``sq_distances`` and of the same function
and kernel with ``_triangle_pairs`` as the schedule.

``PYTHONPATH=. python experiments/checks/grouped_pairs.py [--targets ...] [--time R]``
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import types

import numba
import numpy as np

from byzsgd import coordinate, distances

TEST = "tests/test_coordinate.py::test_grouped_pairs_are_summed_as_by_tiles_along_the_triangle"
DIGEST = ("import hashlib, numpy as np; from byzsgd import distances; "
          "x = np.random.default_rng(0).normal(size=(20, 20000)).astype(np.float32); "
          "print(hashlib.sha256(distances.sq_distances(x).tobytes()).hexdigest()[:12])")


def _with_globals(fn, **swap):
    """A copy of Python function ``fn`` (numba's py_func for a kernel) whose
    global names in ``swap`` are replaced: the package's code, not a copy."""
    f = getattr(fn, "py_func", fn)
    return types.FunctionType(f.__code__, {**f.__globals__, **swap}, f.__name__,
                              f.__defaults__, f.__closure__)


@numba.njit
def _triangle(buf, a, e, P, gram, zero):
    distances._triangle_pairs(buf, a, e, P, gram, zero, 0)


_triangle_kernel = numba.njit(parallel=True)(
    _with_globals(distances._sq_kernel, _slice_pairs=_triangle))
#: distances.sq_distances with the schedule before _slice_pairs
triangle_sq_distances = _with_globals(distances.sq_distances, _sq_kernel=_triangle_kernel)


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
            test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   TEST], env=env, capture_output=True, text=True)
            digest = subprocess.run([sys.executable, "-c", DIGEST], env=env, capture_output=True,
                                    text=True, check=True).stdout.strip()
        print(f"{target:16s} {test.stdout.strip().splitlines()[-1]}; sq_distances digest {digest}")

if __name__ == "__main__":
    main()
