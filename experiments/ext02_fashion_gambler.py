"""Beyond the paper: Fig. 6's gambler experiment on Fashion-MNIST.

Fixed: everything of Fig. 6 (``fig06_mnist_gambler``) but the data: the MLP
of Table 2 on Fashion-MNIST (current official release); n = 20 workers with
batches of 32 from their own shards; SGD with gamma = 0.1; 500 rounds;
top-1 on the 10k test images every 10 rounds; seeds 0-9. Attack: the
coordinates split evenly over 20 servers, one of them (redrawn every round)
multiplies each value it receives by -1e20 with probability 0.05%; q = 8 for
Krum, Multi-Krum and MeaMed.
Varies: the aggregation rule - the paper's seven - plus Mean without
failures as the reference.
Quick preset: 2 seeds x 100 rounds.
"""
from byzsgd import paper
from byzsgd.experiment import Spec, main

SPEC = Spec(
    figure="ext02",
    title="MLP on Fashion-MNIST with gambler attack",
    **dict(paper.MNIST, dataset="fashion-mnist"), **paper.GAMBLER,
    arms=paper.arms(q=8),
    plot={"kind": "curves", "metric": "top1", "zoom": [0.7, 0.9]},
    quick={"seeds": (0, 1), "rounds": 100},
)

if __name__ == "__main__":
    main(SPEC)
