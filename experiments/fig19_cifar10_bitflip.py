"""Fig. 19: top-3 accuracy of the CNN on CIFAR-10 under the bit-flip attack.

Fixed: as Fig. 7 (``fig07_cifar10_gambler``, whose docstring explains the
choices): CNN of Table 3 on CIFAR-10; n = 20 workers, batches of 128 from
their own shards; SGD with gamma = 5e-4 on the gradient summed over 128
examples (``paper.SUM_OVER``; the paper does not say); 4000 rounds; top-3
accuracy on the 10k test images every 100 rounds; seeds 0-9. Attack: for each
of the first 1000 coordinates, 1 of its 20 values gets bits 22, 30, 31, 32
(1..32 from the least significant) flipped; q = 8 as in Fig. 5.
Varies: the aggregation rule - Mean, Medoid, Krum (q = 8), Multi-Krum (q = 8),
GeoMed, MarMed, MeaMed (q = 8) - plus Mean without failures as the reference.
Cost, GPU (``--ctx gpu(0)``), the quick and the reduced presets: as Fig. 7;
the 40-round reduced preset:
``byzsgd run fig19 --seeds 0 --rounds 40 --eval-every 10 --jobs 2 --out results/reduced``.
"""
from byzsgd import paper
from byzsgd.experiment import Spec, main

SPEC = Spec(
    figure="fig19",
    title="CNN on CIFAR-10 with bit-flip attack",
    **paper.CIFAR10, **paper.BITFLIP,
    arms=paper.arms(q=8),
    plot={"kind": "curves", "metric": "topk"},
    quick=paper.CIFAR10_QUICK,
)

if __name__ == "__main__":
    main(SPEC)
