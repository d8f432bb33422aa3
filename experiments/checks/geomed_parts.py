"""Where GeoMed's time goes on the synthetic matrix of ``byzsgd bench
aggregators`` (README, Performance: "Not met").

Fixed: float32 (20, 118282) gradient-like rows (``bench.gradient_like``),
tol 1e-6, one thread, the fastest of interleaved repetitions.
Varies: the whole rule against its parts: the coordinate-wise median (the
centre), the centred float64 Gram matrix (it computes the median too), the
affine combination that maps the Weiszfeld coefficients back to a vector,
and the mean rule that the P1 ratio divides by. Weiszfeld's own iterations
(O(n^2) each, on the 20 x 20 Gram matrix) are what is left.
``OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python experiments/checks/geomed_parts.py [--repeats R]``
"""
import argparse
import time

import numpy as np

from byzsgd import aggregators, coordinate, distances
from byzsgd.bench import gradient_like


def fastest(fns, repeats):
    """{name: fastest milliseconds} of ``fns`` run interleaved."""
    best = {k: np.inf for k in fns}
    for fn in fns.values():
        fn()                                    # compile and warm up
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return {k: 1e3 * v for k, v in best.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=300)
    args = p.parse_args(argv)
    x = gradient_like(20, 118282)
    geomed, mean = aggregators.get("geomed", tol=1e-6), aggregators.get("mean")
    geomed(x)
    c, G = distances.centred_gram(x)
    alpha = np.linalg.solve(G + np.eye(20) * np.trace(G), np.ones(20))  # any 20 weights
    ms = fastest({"mean": lambda: mean(x), "geomed": lambda: geomed(x),
                  "median": lambda: coordinate.median(x),
                  "centred_gram": lambda: distances.centred_gram(x),
                  "affine_rows": lambda: distances.affine_rows(x, alpha, c)}, args.repeats)
    print(f"float32 (20, 118282), tol 1e-6 ({geomed.info['iterations']} Weiszfeld iterations), "
          f"fastest of {args.repeats} interleaved repetitions, ms")
    for k, v in ms.items():
        print(f"  {k:<13} {v:7.3f}")
    left = ms["geomed"] - ms["centred_gram"] - ms["affine_rows"]
    print(f"  geomed / mean: {ms['geomed'] / ms['mean']:.2f}x (target 10x); the Gram pass "
          f"without its median: {ms['centred_gram'] - ms['median']:.3f} ms; Weiszfeld and the "
          f"rest: {left:.3f} ms")


if __name__ == "__main__":
    main()
