"""Why the paper's Medoid fails under the omniscient attack (Fig. 4) and ours does not.

Fixed: the MLP of Table 2 on MNIST, n = 20 workers x 32 samples, the
omniscient attack of Fig. 4 (6 rows := -1e20 x the sum of the 14 correct
ones), the first rounds of training with gamma = 0.1.
Varies: how the medoid's distances are computed - naively in float32, or by
byzsgd's ``medoid`` (exact distances; +inf ones counted, not summed).

Per round it prints whether each medoid picks a Byzantine row. In float32
||v_i - v_j||^2 of an attacked pair (~1e19 per coordinate over 118k
coordinates) overflows, so every row's sum of distances is +inf and argmin
returns row 0, Byzantine whenever row 0 is attacked (always, if the attacked
rows are the first q). ``python experiments/checks/medoid_float32.py [--rounds R]``
(MNIST from $BYZSGD_DATA, else downloaded).
"""
import argparse

import mxnet as mx
import numpy as np
from mxnet import gluon

from byzsgd import aggregators, data, models
from byzsgd.trainer import ByzantineTrainer

N, B, Q = 20, 32, 6


def naive_float32_medoid(grads):
    """The row of least summed float32 Euclidean distance (np.argmin: the
    first row on ties, so row 0 when every sum is +inf)."""
    with np.errstate(over="ignore", invalid="ignore"):
        sq = ((grads[:, None, :] - grads[None, :, :]) ** 2).sum(axis=2, dtype=np.float32)
        return int(np.argmin(np.sqrt(sq).sum(axis=1))), int(np.isfinite(sq.sum(axis=1)).sum())


def main(rounds):
    x, y = data.load("mnist")
    rng = np.random.default_rng(0)
    mx.random.seed(0)
    net = models.get_model("mlp")
    net.initialize(mx.init.Xavier())
    rule = aggregators.get("medoid")
    seen = {}

    def recording_medoid(grads):   # the attacked matrix the server receives
        seen["grads"] = grads.copy()
        return rule(grads)

    trainer = ByzantineTrainer(net.collect_params(), "sgd", {"learning_rate": 0.1},
                               aggregator=recording_medoid, num_workers=N, seed=0,
                               attack=("omniscient", {"q": Q}))
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for r in range(rounds):
        idx = rng.choice(len(y), N * B, replace=False)
        xb, yb = mx.nd.array(x[idx]), mx.nd.array(y[idx])
        trainer.backward_all(net, loss_fn, xb, yb)
        trainer.step(B)
        grads = seen["grads"]
        byz = set(np.flatnonzero(~np.isfinite(grads).all(axis=1) |
                                 (np.abs(grads).max(axis=1) > 1e10)).tolist())
        naive, finite = naive_float32_medoid(grads)
        ours = rule.info["selected"]
        print(f"round {r}: Byzantine rows {sorted(byz)}; float32 sums finite for {finite}/{N} "
              f"rows; naive float32 medoid: row {naive} ({'Byzantine' if naive in byz else 'correct'}); "
              f"byzsgd medoid: row {ours} ({'Byzantine' if ours in byz else 'correct'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    main(parser.parse_args().rounds)
