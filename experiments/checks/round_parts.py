"""Could the MLP round's remaining parts be made faster without changing
the committed logs?

Fixed: the MLP of Fig. 3 (d = 118282), n = 20 workers x 32 samples, one
thread; a run built as ``byzsgd bench round`` builds it.
Varies: three parts of a round, each against what would replace it.
1. The 20 per-worker weight products (numpy's OpenBLAS, batched matmul)
   against a plain sequential fused-multiply-add loop (numba): if OpenBLAS
   summed the 32 terms in that order, a kernel of our own could compute the
   same bits; the fraction of equal entries says whether it does.
2. The Gaussian attack's float32 normals drawn into a new array against
   drawn into a reused buffer (``out=``): the same stream, without page
   faults on a fresh 2.8 MB array.
3. The update phase (``byzsgd bench round``'s "update" column), split into
   the aggregate's copy into the 6 gradient buffers, the optimizer's step
   and the divergence check.
Prints the fastest of interleaved repetitions.
``PYTHONPATH=. BYZSGD_DATA=... OMP_NUM_THREADS=1 python experiments/checks/round_parts.py``
"""
import os
import time

import numba
import numpy as np


def fastest(fns, repeats):
    """{name: fastest seconds} of ``fns`` run interleaved ``repeats`` times."""
    import mxnet as mx
    best = {k: np.inf for k in fns}
    for _ in range(repeats):
        for name, (fn, before) in fns.items():
            if before is not None:
                before()
            mx.nd.waitall()
            t = time.perf_counter()
            fn()
            mx.nd.waitall()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


@numba.njit(fastmath={"contract"})
def _sequential(dzt, a, out):
    """out[w] = dzt[w] @ a[w], each entry one FMA chain over k = 0, 1, ..."""
    n, o, b = dzt.shape
    i = a.shape[2]
    for w in range(n):
        for r in range(o):
            for c in range(i):
                out[w, r, c] = 0.0
            for k in range(b):
                s = dzt[w, r, k]
                for c in range(i):
                    out[w, r, c] = out[w, r, c] + s * a[w, k, c]


def products(repeats):
    rng = np.random.default_rng(0)
    n, b, o, i = 20, 32, 128, 784          # the first layer: the bulk of the products
    dz = rng.standard_normal((n, b, o), dtype=np.float32) * np.float32(1e-2)
    a = np.maximum(rng.standard_normal((n, b, i), dtype=np.float32), 0)
    blas, seq = np.empty((n, o, i), np.float32), np.empty((n, o, i), np.float32)
    dzt = np.ascontiguousarray(dz.transpose(0, 2, 1))
    np.matmul(dz.transpose(0, 2, 1), a, out=blas)
    _sequential(dzt, a, seq)
    t = fastest({"openblas": (lambda: np.matmul(dz.transpose(0, 2, 1), a, out=blas), None),
                 "sequential fma": (lambda: _sequential(dzt, a, seq), None)}, repeats)
    same = float(np.mean(blas == seq))
    return [f"1. products (20 x {o} x {b} @ {b} x {i}): OpenBLAS {1e3 * t['openblas']:.2f} ms, "
            f"a sequential FMA loop {1e3 * t['sequential fma']:.2f} ms; equal entries "
            f"{same:.1%}, largest difference {np.abs(blas - seq).max():.2e}"]


def normals(repeats):
    cells = 6 * 118282                      # q = 6 rows of d (the paper's Gaussian attack)
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    buf = np.empty(cells, np.float32)
    equal = np.array_equal(r1.standard_normal(cells, dtype=np.float32),
                           r2.standard_normal(cells, dtype=np.float32, out=buf))
    rng = np.random.default_rng(0)
    t = fastest({"new": (lambda: rng.standard_normal(cells, dtype=np.float32), None),
                 "out": (lambda: rng.standard_normal(cells, dtype=np.float32, out=buf), None)},
                repeats)
    return [f"2. {cells:,} float32 normals: into a new array {1e3 * t['new']:.2f} ms, into a "
            f"reused buffer {1e3 * t['out']:.2f} ms; same values: {equal}"]


def update(repeats):
    from byzsgd import training
    from byzsgd.bench_rounds import _config
    run = training.Training(_config("mlp", "mean", "none"), None)
    for _ in range(3):
        run.round()
    tr, n, b = run.trainer, run.cfg["n"], run.cfg["batch_size"]
    idx = run.sampler.next_round().ravel()
    import mxnet as mx
    x = mx.nd.array(run.normalise(run.x[idx]))
    y = mx.nd.array(run.y[idx])
    state = {}

    def gradients():                 # a fresh round up to the aggregate
        tr._new_round()
        tr.backward_all(run.net, run.loss_fn, x, y)
        state["agg"] = tr.aggregator(tr._grads.collect(1.0 / b))

    def scattered():
        gradients()
        tr._grads.scatter(state["agg"])
        tr._optimizer.rescale_grad = 1.0

    def stepped():
        scattered()
        tr._update(False)

    t = fastest({"copy": (lambda: tr._grads.scatter(state["agg"]), gradients),
                 "optimizer": (lambda: tr._update(False), scattered),
                 "check": (lambda: tr._params_state(), stepped)}, repeats)
    params = len(tr._params)
    return [f"3. update: the aggregate into the {params} gradient buffers "
            f"{1e3 * t['copy']:.2f} ms, the optimizer ({tr._optimizer.__class__.__name__}, "
            f"{params} parameters) {1e3 * t['optimizer']:.2f} ms, the divergence check "
            f"{1e3 * t['check']:.2f} ms (n = {n})"]


def main():
    numba.set_num_threads(1)
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    for part in (products(30), normals(30), update(40)):
        print("\n".join(part))


if __name__ == "__main__":
    main()
