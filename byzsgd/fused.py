"""All n simulated workers' gradients in one batched pass.

The loop of n forward/backward passes of b samples pays MXNet's per-operator
overhead n times on matrices too small to keep a core busy. Here the n
workers' batches (stacked, worker w's at rows w*b..(w+1)*b-1) go through the
network as one batch with the shared weights, and each Dense layer's output
z gets a zero "probe" added, ``z + p``, with p an autograd variable: one
backward() then yields dL/dz for every layer and sample. Worker w's weight
gradient of a Dense layer is ``dz[w]ᵀ · a[w]`` (a: the layer's input rows of
worker w) and its bias gradient ``Σ dz[w]``; one batched matmul per layer
computes them for all workers, straight into the (n, d) gradient matrix.
These are the loop's numbers up to the rounding of different matrix kernels
(``tests/test_fused.py`` compares both). Dropout masks are drawn once for
the whole batch instead of worker by worker, so with dropout the random
stream differs from the loop's (the distribution does not).

:func:`plan` accepts nets whose weights all sit in Dense layers, combined
with Flatten, Activation and Dropout, in ``HybridSequential``/``Sequential``
containers or in blocks registered with :func:`sequential` (byzsgd's MLP);
for anything else (convolutions: the CNN) it returns None and the trainer
loops over the workers, whose large batches keep the cores busy anyway.
MXNet glue only.
"""
import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet.gluon import nn

from . import models

__all__ = ["plan", "sequential", "FusedWorkers"]

#: block class -> function(block) listing its children in execution order
_ORDER = {nn.HybridSequential: lambda b: list(b._children.values()),
          nn.Sequential: lambda b: list(b._children.values())}


def sequential(cls, order):
    """Declare that blocks of ``cls`` run ``order(block)``'s blocks one after
    the other (so that :func:`plan` may batch them)."""
    _ORDER[cls] = order
    return cls


sequential(models.MLP, lambda b: [b.flatten, b.fc1, b.fc2, b.fc3])


#: leaf block classes that can be batched (exact types: a subclass may
#: change the forward)
_LEAVES = frozenset({nn.Dense, nn.Activation, nn.Dropout, nn.Flatten})


def _leaves(block):
    """The net's leaf blocks in execution order, or None if unknown."""
    order = _ORDER.get(type(block))
    if order is not None:
        out = []
        for child in order(block):
            sub = _leaves(child)
            if sub is None:
                return None
            out += sub
        return out
    return [block] if type(block) in _LEAVES else None


def plan(net):
    """The leaf blocks of ``net`` in execution order if its workers' passes
    can be batched, else None."""
    return _leaves(net)


class FusedWorkers:
    """Computes n workers' gradients of ``params`` in one pass of ``net``.

    Parameters
    ----------
    net : Block
        A net accepted by :func:`plan`.
    params : list of Parameter
        The trainer's parameters, in its column order; every weight of the
        net must be among them.
    n : int
        Number of workers.
    """

    def __init__(self, net, params, n):
        self.layers, self.n = plan(net), n
        if self.layers is None:
            raise ValueError(f"{type(net).__name__} cannot be batched over workers "
                             "(see byzsgd.fused.plan)")
        index = {id(p): i for i, p in enumerate(params)}
        self.slots = []   # per Dense layer: (block, weight index, bias index or None)
        for blk in self.layers:
            if isinstance(blk, nn.Dense):
                got = [blk.weight] + ([blk.bias] if blk.bias is not None else [])
                missing = [p.name for p in got if id(p) not in index]
                if missing:
                    raise ValueError(f"parameters {missing} are not trained by this "
                                     "trainer: cannot batch the workers' passes")
                self.slots.append((blk, index[id(blk.weight)], index.get(id(blk.bias))))
        self.used = sorted(i for _, w, b in self.slots for i in (w, b) if i is not None)
        self._probes = {}   # batch shape -> per Dense layer: (probe, its gradient, numpy)
        self._inputs = []   # this round's Dense inputs

    def _probe_set(self, rows, ctx):
        key = (rows, ctx)
        if key not in self._probes:
            made = []
            for blk, _, _ in self.slots:
                grad = np.zeros((rows, blk._units), np.float32)
                made.append((mx.nd.zeros(grad.shape, ctx=ctx),
                             mx.nd.from_numpy(grad.view(), zero_copy=True), grad))
            self._probes[key] = made
        return self._probes[key]

    def backward(self, loss_fn, x, y):
        """Forward and backward of the n workers' batches stacked in x;
        returns the (n*b,) losses. The gradients go into the matrix at
        :meth:`write`."""
        if x.shape[0] % self.n:
            raise ValueError(f"the batch of {x.shape[0]} samples does not split into "
                             f"n={self.n} equal worker batches")
        probes = self._probe_set(x.shape[0], x.context)
        autograd.mark_variables([p for p, _, _ in probes], [g for _, g, _ in probes])
        self._inputs, k = [], 0
        with autograd.record():
            h = x
            for blk in self.layers:
                if isinstance(blk, nn.Flatten):
                    # a view: the Flatten operator's output reads back into
                    # numpy 50x slower (7.6 ms instead of 0.15 for the MLP's input)
                    h = h.reshape((0, -1))
                    continue
                if not isinstance(blk, nn.Dense):
                    h = blk(h)
                    continue
                if blk._flatten and h.ndim > 2:
                    h = h.reshape((0, -1))
                self._inputs.append(h)
                ctx = h.context
                # detached: the shared weights need no gradient of their own
                bias = blk.bias.data(ctx).detach() if blk.bias is not None else None
                z = mx.nd.FullyConnected(h, blk.weight.data(ctx).detach(), bias,
                                         num_hidden=blk._units, no_bias=bias is None,
                                         flatten=blk._flatten) + probes[k][0]
                k += 1
                h = blk.act(z) if blk.act is not None else z
            loss = loss_fn(h, y)
        loss.backward()
        self._grads = [g for _, _, g in probes]
        return loss

    def write(self, matrix, scale=1.0):
        """Put the workers' gradients times ``scale`` (float32) into the
        (n, d) GradMatrix (call after mx.nd.waitall()); zero the columns of
        parameters the net does not use.

        The scale multiplies dL/dz (b x out per worker), not the products (in
        x out): the same numbers for a power of two such as 1/32, else up to
        rounding, and no extra pass over the matrix."""
        n = self.n
        with np.errstate(all="ignore"):   # a diverged net's inf/NaN are outcomes
            self._write(matrix, n, np.float32(scale))

    def _write(self, matrix, n, scale):
        for i in set(range(len(matrix.shapes))) - set(self.used):
            matrix.array[:, matrix.slice(i)] = 0.0
        for (blk, wi, bi), a, dz in zip(self.slots, self._inputs, self._grads):
            a = a.asnumpy().reshape(n, -1, a.shape[-1])            # (n, b, in)
            dz = dz.reshape(n, -1, dz.shape[-1])                   # (n, b, out)
            if scale != 1:
                dz = dz * scale
            out = matrix.array[:, matrix.slice(wi)].reshape((n,) + blk.weight.shape)
            np.matmul(dz.transpose(0, 2, 1), a, out=out)
            if bi is not None:
                matrix.array[:, matrix.slice(bi)] = dz.sum(axis=1)
        self._inputs = []
