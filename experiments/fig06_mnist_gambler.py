"""Fig. 6 (and Fig. 15): top-1 accuracy of the MLP on MNIST under the gambler attack.

Fixed: MLP of Table 2 on MNIST; n = 20 workers, each drawing batches of 32
from its own shard; SGD with gamma = 0.1; 500 rounds; top-1 accuracy on the
10k test images every 10 rounds; seeds 0-9. Attack (Section 5.5): the
coordinates are split evenly over 20 parameter servers; in every round one
server (drawn at random) is faulty and multiplies each value it receives by
-1e20 with probability 0.05%. ("The attacker picks one single server": the
paper does not say whether once or every round; we redraw it every round,
the attack's default, under which no coordinate is spared over a run;
attack_params fixed=True keeps server 0 for the whole run, fixed=(k,)
server k.) Krum, Multi-Krum and MeaMed get q = 8, as in the paper.
Varies: the aggregation rule - Mean, Medoid, Krum (q = 8), Multi-Krum (q = 8),
GeoMed, MarMed, MeaMed (q = 8) - plus Mean without failures as the reference.
Quick preset: 2 seeds x 100 rounds; only MarMed and MeaMed survive.
"""
from byzsgd import paper
from byzsgd.experiment import Spec, main

SPEC = Spec(
    figure="fig06",
    title="MLP on MNIST with gambler attack",
    **paper.MNIST, **paper.GAMBLER,
    arms=paper.arms(q=8),
    plot={"kind": "curves", "metric": "top1"},
    quick={"seeds": (0, 1), "rounds": 100},
)

if __name__ == "__main__":
    main(SPEC)
