"""Fig. 2 (and Fig. 11): top-1 accuracy of the MLP on MNIST without Byzantine failures.

Fixed: MLP of Table 2 on MNIST; n = 20 workers, each drawing batches of 32
from its own shard; SGD with gamma = 0.1; 500 rounds; top-1 accuracy on the
10k test images every 10 rounds; seeds 0-9. No attack (Section 5.1): the
figure shows the bias and variance the robust rules add to plain averaging.
Varies: the aggregation rule - Mean, Medoid, Krum, Multi-Krum, GeoMed,
MarMed, MeaMed. Without failures Mean is itself the reference, so there is no
separate reference curve.
Not stated in the paper: the q given to Krum, Multi-Krum and MeaMed here; we
use q = 6, as under the Gaussian and omniscient attacks (``Q``), where the
paper states 6 Byzantine workers but no q for the rules either: we give them
the true count. Multi-Krum, in every figure, averages the m = n - q rows with
the best Krum scores computed once (Blanchard et al.'s definition); the paper
says "multiple rounds of Krum" and gives no m (``byzsgd.aggregators.multikrum``).
Quick preset: 2 seeds x 100 rounds; every rule learns (Medoid and Krum slowest).
"""
from byzsgd import paper
from byzsgd.experiment import Spec, main

Q = 6  # assumed: the paper does not say which q the no-failure runs used

SPEC = Spec(
    figure="fig02",
    title="MLP on MNIST without Byzantine failures",
    **paper.MNIST, attack=None,
    arms=paper.arms(Q, reference=False),
    plot={"kind": "curves", "metric": "top1"},
    quick={"seeds": (0, 1), "rounds": 100},
)

if __name__ == "__main__":
    main(SPEC)
