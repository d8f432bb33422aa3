"""The batched pass of byzsgd.fused against the straightforward loop of n
worker passes: the same gradient matrix (up to float32 rounding), the same
training, and the loop wherever batching does not apply."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon
from mxnet.gluon import nn

from byzsgd import fused, models
from byzsgd.trainer import ByzantineTrainer

N, B = 5, 8


def _net(kind):
    mx.random.seed(3)
    if kind == "mlp":
        net = models.get_model("mlp", hidden=16)
        shape = (N * B, 1, 28, 28)
    elif kind == "sequential":   # tanh, dropout off, no bias, a 3-d Dense input
        net = nn.HybridSequential()
        net.add(nn.Dense(12, activation="tanh"), nn.Dropout(0.0),
                nn.Dense(7, use_bias=False), nn.Activation("softrelu"), nn.Dense(4))
        shape = (N * B, 3, 5)
    else:
        raise ValueError(kind)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1,) + shape[1:]))
    return net, shape


def _matrix(net, shape, batched, seed=0):
    """The gradient matrix one round of n workers produces."""
    rng = np.random.default_rng(seed)
    x = mx.nd.array(rng.normal(size=shape).astype(np.float32))
    y = mx.nd.array(rng.integers(0, 4, shape[0]))
    tr = ByzantineTrainer(net.collect_params(), "sgd", {"learning_rate": 0.1},
                          num_workers=N)
    loss = tr.backward_all(net, gluon.loss.SoftmaxCrossEntropyLoss(), x, y,
                           batched=batched)
    return tr._grads.collect().copy(), loss.asnumpy(), tr


@pytest.mark.parametrize("kind", ["mlp", "sequential"])
def test_batched_gradients_equal_the_loop(kind):
    net, shape = _net(kind)
    assert fused.plan(net) is not None
    loop, loss_loop, tr = _matrix(net, shape, batched=False)
    assert not tr._fused
    batch, loss_batch, tr = _matrix(net, shape, batched=True)
    assert tr._fused[net] is not None
    assert batch.shape == loop.shape == (N, tr._grads.matrix.d)
    np.testing.assert_allclose(loss_batch, loss_loop, rtol=1e-6, atol=1e-7)
    scale = np.abs(loop).max()
    np.testing.assert_allclose(batch, loop, rtol=1e-5, atol=1e-6 * scale)
    assert np.abs(loop).sum(axis=1).min() > 0   # every worker has a gradient


def test_batched_training_follows_the_loop():
    """20 rounds of the MLP under marmed and the Gaussian attack: the same
    weights whichever way the gradients were computed (up to rounding)."""
    finals = []
    for batched in (False, True):
        net, shape = _net("mlp")
        rng = np.random.default_rng(1)
        tr = ByzantineTrainer(net.collect_params(), "sgd", {"learning_rate": 0.05},
                              num_workers=N, aggregator="marmed",
                              attack=("gaussian", {"q": 1, "sigma": 1.0}), seed=0)
        loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
        for _ in range(20):
            x = mx.nd.array(rng.normal(size=shape).astype(np.float32))
            y = mx.nd.array(rng.integers(0, 10, shape[0]))
            tr.backward_all(net, loss_fn, x, y, batched=batched)
            tr.step(B)
        finals.append(np.concatenate([p.data().asnumpy().ravel()
                                      for p in net.collect_params().values()]))
    np.testing.assert_allclose(finals[1], finals[0], rtol=1e-4, atol=1e-5)


def test_unsupported_nets_loop():
    net = models.get_model("cnn")
    assert fused.plan(net) is None
    conv = nn.HybridSequential()
    conv.add(nn.Conv2D(2, 3), nn.Dense(3))
    assert fused.plan(conv) is None
    custom = nn.HybridBlock()   # unknown forward: never batched
    assert fused.plan(custom) is None
    net, shape = _net("sequential")
    x = mx.nd.ones(shape)
    y = mx.nd.zeros((shape[0],))
    tr = ByzantineTrainer(net.collect_params(), "sgd", {"learning_rate": 0.1},
                          num_workers=N)
    with pytest.raises(ValueError, match="not built from supported layers"):
        tr.backward_all(conv, gluon.loss.L2Loss(), x, y, batched=True)


def test_frozen_weights_loop():
    """A Dense layer the trainer does not train cannot be batched: loop."""
    net, shape = _net("sequential")
    net[0].weight.grad_req = net[0].bias.grad_req = "null"
    params = [p for p in net.collect_params().values() if p.grad_req != "null"]
    tr = ByzantineTrainer(params, "sgd", {"learning_rate": 0.1}, num_workers=N)
    x, y = mx.nd.ones(shape), mx.nd.zeros((shape[0],))
    tr.backward_all(net, gluon.loss.SoftmaxCrossEntropyLoss(), x, y)
    assert tr._fused[net] is None
    assert tr._grads.collect().shape == (N, tr._grads.matrix.d)


def test_uneven_batch_and_mixing_are_refused():
    net, shape = _net("mlp")
    tr = ByzantineTrainer(net.collect_params(), "sgd", {"learning_rate": 0.1},
                          num_workers=N)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    x = mx.nd.ones((N * B + 1,) + shape[1:])
    for batched in (None, False):   # the loop of worker blocks refuses it too
        with pytest.raises(ValueError, match=f"n={N} equal worker batches"):
            tr.backward_all(net, loss_fn, x, mx.nd.zeros((N * B + 1,)), batched=batched)
    with pytest.raises(ValueError, match=f"{N * B} samples and {N * B - 1} labels"):
        tr.backward_all(net, loss_fn, x[:N * B], mx.nd.zeros((N * B - 1,)), batched=False)
    with tr.worker(0):
        with mx.autograd.record():
            loss = loss_fn(net(mx.nd.ones((B,) + shape[1:])), mx.nd.zeros((B,)))
        loss.backward()
    with pytest.raises(RuntimeError, match="after worker"):
        tr.backward_all(net, loss_fn, mx.nd.ones(shape), mx.nd.zeros((N * B,)))


@pytest.mark.parametrize("scale", [1 / 8, 1 / 3])
def test_scaled_write_equals_the_scaled_matrix(scale):
    """collect(scale) scales dL/dz before the products: exactly the scaled
    matrix for a power of two (a per-worker batch of 32 gives 1/32), up to
    float32 rounding otherwise; the loop path scales the matrix itself."""
    net, shape = _net("mlp")
    plain, _, _ = _matrix(net, shape, batched=True)
    rng = np.random.default_rng(0)
    x = mx.nd.array(rng.normal(size=shape).astype(np.float32))
    y = mx.nd.array(rng.integers(0, 4, shape[0]))
    want = plain * np.float32(scale)
    for batched in (True, False):
        tr = ByzantineTrainer(net.collect_params(), "sgd", {"learning_rate": 0.1},
                              num_workers=N)
        tr.backward_all(net, gluon.loss.SoftmaxCrossEntropyLoss(), x, y, batched=batched)
        got = tr._grads.collect(scale)
        if batched and scale == 1 / 8:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
