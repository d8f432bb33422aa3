"""Fig. 16: top-3 accuracy of the CNN on CIFAR-10 without Byzantine failures.

Fixed: as Fig. 7 (``fig07_cifar10_gambler``, whose docstring explains the
choices): CNN of Table 3 on CIFAR-10; n = 20 workers, batches of 128 from
their own shards; SGD with gamma = 5e-4 on the gradient summed over 128
examples (``paper.SUM_OVER``; the paper does not say); 4000 rounds; top-3
accuracy on the 10k test images every 100 rounds; seeds 0-9. No attack.
Varies: the aggregation rule - Mean, Medoid, Krum, Multi-Krum, GeoMed,
MarMed, MeaMed. Without failures Mean is the reference. Not stated in the
paper: the q of Krum, Multi-Krum and MeaMed; q = 6 (``Q``), as in Fig. 2.
Cost, GPU (``--ctx gpu(0)``), the quick (with Krum in place of the
reference) and the reduced presets: as Fig. 7; the 40-round reduced preset:
``byzsgd run fig16 --seeds 0 --rounds 40 --eval-every 10 --jobs 2 --out results/reduced``.
"""
from byzsgd import paper
from byzsgd.experiment import Spec, main

Q = 6  # assumed, as in Fig. 2

SPEC = Spec(
    figure="fig16",
    title="CNN on CIFAR-10 without Byzantine failures",
    **paper.CIFAR10, attack=None,
    arms=paper.arms(Q, reference=False),
    plot={"kind": "curves", "metric": "topk"},
    quick=dict(paper.CIFAR10_QUICK, arms=("Mean", "Krum", "MarMed", "MeaMed")),
)

if __name__ == "__main__":
    main(SPEC)
