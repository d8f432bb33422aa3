"""Beyond the paper: Fig. 5's bit-flip experiment under the authors' code's bits.

The paper's text flips "the 22th, 30th, 31th and 32th bits" of 1 of the 20
values of each of the first 1000 coordinates (Fig. 5 reads these counted
1..32 from the least significant bit: XOR mask 0xE0200000). The authors'
MXNet code (github.com/xcgoner, for their later Zeno paper) flips 0-indexed
bits 22, 29, 30, 31 of the first 500 coordinates (mask 0xE0400000): the same
sign and top two exponent bits, but bit 22 is the top mantissa bit instead
of bit 21, on half the coordinates. Only the bits are taken from it: that
code copies one flipped vector to every Byzantine worker (whole rows), this
module keeps Fig. 5's pattern (one random worker per coordinate).
Fixed: everything else of Fig. 5 (``fig05_mnist_bitflip``): MLP of Table 2 on
MNIST, n = 20, batches of 32, gamma = 0.1, 500 rounds, top-1 every 10
rounds, seeds 0-9, q = 8 for Krum, Multi-Krum and MeaMed.
Varies: the aggregation rule - the paper's seven - plus Mean without
failures as the reference; compare with Fig. 5 to see whether the outcome
depends on the reading.
Quick preset: 2 seeds x 100 rounds.
"""
from byzsgd import paper
from byzsgd.experiment import Spec, main

SPEC = Spec(
    figure="ext03",
    title="MLP on MNIST, bit-flip attack with the authors' code's bits",
    **paper.MNIST,
    attack="bitflip", attack_params={"bits": (22, 29, 30, 31), "numbering": "zero",
                                     "dims": 500, "per_dim": 1},
    arms=paper.arms(q=8),
    plot={"kind": "curves", "metric": "top1", "zoom": [0.8, 0.95]},
    quick={"seeds": (0, 1), "rounds": 100},
)

if __name__ == "__main__":
    main(SPEC)
