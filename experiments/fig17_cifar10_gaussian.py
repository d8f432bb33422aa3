"""Fig. 17: top-3 accuracy of the CNN on CIFAR-10 under the Gaussian attack.

Fixed: as Fig. 7 (``fig07_cifar10_gambler``, whose docstring explains the
choices): CNN of Table 3 on CIFAR-10; n = 20 workers, batches of 128 from
their own shards; SGD with gamma = 5e-4 on the gradient summed over 128
examples (``paper.SUM_OVER``; the paper does not say); 4000 rounds; top-3
accuracy on the 10k test images every 100 rounds; seeds 0-9. Attack: in every
round 6 of the 20 gradients are replaced by i.i.d. N(0, 200^2) vectors.
Varies: the aggregation rule - Mean, Medoid, Krum (q = 6), Multi-Krum (q = 6),
GeoMed, MarMed, MeaMed (q = 6) - plus Mean without failures as the reference.
Cost, GPU (``--ctx gpu(0)``), the quick and the reduced presets: as Fig. 7;
the 40-round reduced preset:
``byzsgd run fig17 --seeds 0 --rounds 40 --eval-every 10 --jobs 2 --out results/reduced``.
"""
from byzsgd import paper
from byzsgd.experiment import Spec, main

SPEC = Spec(
    figure="fig17",
    title="CNN on CIFAR-10 with Gaussian attack",
    **paper.CIFAR10, **paper.GAUSSIAN,
    arms=paper.arms(q=6),
    plot={"kind": "curves", "metric": "topk"},
    quick=paper.CIFAR10_QUICK,
)

if __name__ == "__main__":
    main(SPEC)
