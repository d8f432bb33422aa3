"""byzsgd.trainer.ByzantineTrainer: the Gluon glue around attack + rule.

Tiny nets and synthetic data; every test seeds mxnet and numpy."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from byzsgd import models
from byzsgd.gradbuffer import GradMatrix
from byzsgd.trainer import ByzantineTrainer

N, B, DIN, K = 4, 5, 6, 3          # workers, per-worker batch, inputs, classes
LOSS = gluon.loss.SoftmaxCrossEntropyLoss()


def make_net(hybrid=None, ctx=mx.cpu(), seed=1):
    """Small MLP with initialised parameters (same values for the same seed)."""
    mx.random.seed(seed)
    net = gluon.nn.HybridSequential()
    with net.name_scope():   # names <net>dense0_, <net>dense1_: sorted = layer order,
        # whatever Dense layers the process made before (dense9_ sorts after dense10_)
        net.add(gluon.nn.Dense(8, activation="relu", in_units=DIN),
                gluon.nn.Dense(K, in_units=8))
    net.initialize(mx.init.Xavier(), ctx=ctx)
    if hybrid == "hybrid":
        net.hybridize()
    elif hybrid == "static":   # the combination that ignores re-bound gradient buffers
        net.hybridize(static_alloc=True, static_shape=True)
    return net


def data(rounds=3, seed=0):
    rs = np.random.RandomState(seed)
    return [(nd.array(rs.randn(N, B, DIN)), nd.array(rs.randint(0, K, (N, B))))
            for _ in range(rounds)]


def params_of(net):
    """Parameters in the trainer's order (gluon.Trainer sorts a dict by name)."""
    params = net.collect_params()
    return [params[k] for k in sorted(params.keys())]


def weights(net):
    return np.concatenate([p.data().asnumpy().ravel() for p in params_of(net)])


def worker_grads(net, X, Y):
    """(N, d) per-worker gradients of the summed loss, computed one by one."""
    params = params_of(net)
    rows = []
    for w in range(N):
        with autograd.record():
            loss = LOSS(net(X[w]), Y[w])
        loss.backward()
        rows.append(np.concatenate([p.grad().asnumpy().ravel() for p in params]))
    return np.array(rows)


def run_round(trainer, net, X, Y, batch_size=B):
    for w in range(trainer.num_workers):
        with trainer.worker(w):
            with autograd.record():
                loss = LOSS(net(X[w]), Y[w])
            loss.backward()
    trainer.step(batch_size)


def byz(net, aggregator="mean", attack=None, opt=None, **kw):
    opt = opt or {"learning_rate": 0.5, "momentum": 0.9, "wd": 1e-3}
    return ByzantineTrainer(net.collect_params(), "sgd", opt, aggregator=aggregator,
                            attack=attack, num_workers=kw.pop("num_workers", N),
                            seed=kw.pop("seed", 0), **kw)


# ---------------------------------------------------------------- equivalence
@pytest.mark.parametrize("hybrid,path", [(None, "zero-copy"), ("hybrid", "zero-copy"),
                                         ("static", "copy")])
def test_mean_equals_gluon_trainer_on_one_big_batch(hybrid, path):
    """n workers × b samples with Mean and step(b) == stock Gluon, one batch of
    n*b samples, step(n*b); also for static_alloc graphs (copy path)."""
    ref, net = make_net(hybrid), make_net(hybrid)
    opt = {"learning_rate": 0.5, "momentum": 0.9, "wd": 1e-3}
    stock = gluon.Trainer(ref.collect_params(), "sgd", dict(opt))
    trainer = byz(net, opt=dict(opt))
    for X, Y in data():
        with autograd.record():
            loss = LOSS(ref(X.reshape((N * B, DIN))), Y.reshape((N * B,)))
        loss.backward()
        stock.step(N * B)
        run_round(trainer, net, X, Y)
    assert trainer.gradient_path == path
    np.testing.assert_allclose(weights(net), weights(ref), rtol=1e-5, atol=1e-6)
    assert trainer.round == 3 and trainer.diagnostics["round"] == 3


def test_marmed_update_by_hand():
    """w <- w - lr * median_w(grad_w / b), coordinate-wise, over ALL parameters."""
    net, lr = make_net(), 0.3
    trainer = byz(net, "marmed", opt={"learning_rate": lr})
    for X, Y in data(2):
        rows = worker_grads(net, X, Y) / B
        expected = weights(net) - lr * np.median(rows, axis=0)
        run_round(trainer, net, X, Y)
        np.testing.assert_allclose(weights(net), expected, rtol=1e-5, atol=1e-6)
        # param.grad() holds the applied aggregate after step()
        p0 = params_of(net)[1]  # dense0_weight, after dense0_bias
        np.testing.assert_allclose(p0.grad().asnumpy().ravel(),
                                   np.median(rows, axis=0)[8:8 + p0.data().size],
                                   rtol=1e-5, atol=1e-8)
    assert trainer.diagnostics["agg_norm"] == pytest.approx(
        np.linalg.norm(np.median(rows, axis=0)), rel=1e-5)


def test_rule_sees_whole_gradient_vector():
    seen = []
    X, Y = data(1)[0]
    net = make_net()
    trainer = byz(net, lambda g: (seen.append(g.copy()), g[0])[1])
    run_round(trainer, net, X, Y)
    d = 8 * DIN + 8 + K * 8 + K
    assert seen[-1].shape == (N, d) and seen[-1].dtype == np.float32


def test_krum_picks_one_whole_worker_gradient_of_the_paper_mlp():
    """Vector rules see the gradient over ALL layers: Krum's output is one
    worker's full row, not a per-layer mix."""
    mx.random.seed(0)
    net = models.get_model("mlp")
    net.initialize(mx.init.Xavier())
    net(nd.zeros((1, 1, 28, 28)))
    n, b = 5, 2
    t = ByzantineTrainer(net.collect_params(), "sgd", {"learning_rate": 0.1},
                         aggregator=("krum", {"q": 1}), attack=_row0_to(50.0),
                         num_workers=n, seed=0)
    rs = np.random.RandomState(0)
    X, Y = nd.array(rs.rand(n, b, 1, 28, 28)), nd.array(rs.randint(0, 10, (n, b)))
    for w in range(n):
        with t.worker(w):
            with autograd.record():
                loss = LOSS(net(X[w]), Y[w])
            loss.backward()
    nd.waitall()                        # backward() runs asynchronously
    rows = t._grads.matrix.array / np.float32(b)   # before step: raw gradients
    t.step(b)
    applied = np.concatenate([p.grad().asnumpy().ravel() for p in params_of(net)])
    assert applied.size == 118_282
    assert any(np.array_equal(applied, rows[w]) for w in range(1, n))


# ---------------------------------------------------------------- zero copy
def test_zero_copy_backward_writes_straight_into_the_matrix():
    net = make_net()
    trainer = byz(net)
    rounds = data(2)
    run_round(trainer, net, *rounds[0])
    assert trainer.gradient_path == "zero-copy"
    X, Y = rounds[1]
    expected = worker_grads(net, X, Y)   # same weights, separate passes
    params = params_of(net)
    for p in params:
        p.grad()[:] = 7.0                # stock buffers: must stay untouched
    matrix = trainer._grads.matrix
    base = matrix.array.__array_interface__["data"][0]
    for w in range(N):
        with trainer.worker(w):
            with autograd.record():
                loss = LOSS(net(X[w]), Y[w])
            loss.backward()
    nd.waitall()
    assert all((p.grad().asnumpy() == 7.0).all() for p in params)
    np.testing.assert_allclose(matrix.array, expected, rtol=1e-5, atol=1e-7)
    assert matrix.array.__array_interface__["data"][0] == base
    # the NDArray views and the numpy matrix are one memory block
    matrix.array[1, :] = 3.0
    assert (matrix.views[1][0].asnumpy() == 3.0).all()
    matrix.array[1] = expected[1]
    trainer.step(B)


def test_copy_path_forced_gives_same_result():
    nets = [make_net(), make_net()]
    trainers = [byz(nets[0], "marmed"), byz(nets[1], "marmed", zero_copy=False)]
    for X, Y in data(2):
        for t, net in zip(trainers, nets):
            run_round(t, net, X, Y)
    assert [t.gradient_path for t in trainers] == ["zero-copy", "copy"]
    np.testing.assert_array_equal(weights(nets[0]), weights(nets[1]))


# ---------------------------------------------------------------- per-context
def test_per_context_mode_matches_simulated_workers():
    ctxs = [mx.cpu(i) for i in range(N)]
    sim, multi = make_net(), make_net(ctx=ctxs)
    t_sim = byz(sim, "marmed")
    t_multi = ByzantineTrainer(multi.collect_params(), "sgd",
                               {"learning_rate": 0.5, "momentum": 0.9, "wd": 1e-3},
                               aggregator="marmed", seed=0)
    assert t_multi.num_workers == N and t_multi.gradient_path == "copy"
    for X, Y in data(2):
        run_round(t_sim, sim, X, Y)
        xs = [X[w].as_in_context(c) for w, c in enumerate(ctxs)]
        ys = [Y[w].as_in_context(c) for w, c in enumerate(ctxs)]
        with autograd.record():
            losses = [LOSS(multi(x), y) for x, y in zip(xs, ys)]
        autograd.backward(losses)
        t_multi.step(B)
    np.testing.assert_allclose(weights(multi), weights(sim), rtol=1e-6, atol=1e-7)
    for p in multi.collect_params().values():   # replicas stay identical
        first = p.data(ctxs[0]).asnumpy()
        assert all((p.data(c).asnumpy() == first).all() for c in ctxs[1:])
    with pytest.raises(RuntimeError, match="one worker each"):
        with t_multi.worker(0):
            pass


# ---------------------------------------------------------------- attacks
def _row0_to(value):
    def attack(grads, rng):
        out = grads.copy()
        out[0] = value
        return out
    return attack


def test_attack_corrupts_the_matrix_mean_moves_marmed_does_not():
    X, Y = data(1)[0]
    ref_net = make_net()
    rows = worker_grads(ref_net, X, Y) / B
    results = {}
    for rule in ("mean", "marmed"):
        net = make_net()
        t = byz(net, rule, attack=_row0_to(1e3), opt={"learning_rate": 1.0})
        w0 = weights(net)
        run_round(t, net, X, Y)
        results[rule] = w0 - weights(net)
        assert t.diagnostics["cells_attacked"] == rows.shape[1]
    attacked = rows.copy()
    attacked[0] = 1e3
    np.testing.assert_allclose(results["mean"], attacked.mean(0), rtol=1e-4)
    np.testing.assert_allclose(results["marmed"], np.median(attacked, 0), rtol=1e-4, atol=1e-6)
    assert np.abs(results["marmed"]).max() < 10 < np.abs(results["mean"]).max()


def test_registered_gaussian_attack_uses_trainer_rng():
    X, Y = data(1)[0]
    outs = []
    for seed in (5, 5, 6):
        net = make_net()
        t = byz(net, "marmed", attack=("gaussian", {"q": 1, "sigma": 200.0}), seed=seed)
        run_round(t, net, X, Y)
        outs.append(weights(net))
        assert t.diagnostics["cells_attacked"] == t._grads.matrix.d   # one full row
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_cells_attacked_compares_bit_patterns():
    def nan_cells(grads, rng):
        out = grads.copy()
        out[1, :3] = np.nan
        out[2, 0] = -0.0 if out[2, 0] == 0 else out[2, 0]   # unchanged value
        return out
    net = make_net()
    t = byz(net, "marmed", attack=nan_cells)
    run_round(t, net, *data(1)[0])
    assert t.diagnostics["cells_attacked"] == 3


def test_rules_and_attacks_cannot_modify_the_matrix():
    def inplace(grads, rng):
        grads[0] = 0.0
        return grads
    net = make_net()
    t = byz(net, attack=inplace)
    with pytest.raises(ValueError, match="attack inplace.*wrote to a read-only array.*grads.copy"):
        run_round(t, net, *data(1)[0])


def test_a_rule_that_writes_to_its_input_is_refused_at_construction():
    def clips(grads):
        return np.clip(grads, -1, 1, out=grads).mean(axis=0)
    with pytest.raises(ValueError, match="aggregator clips.*wrote to a read-only array"):
        byz(make_net(), clips)


@pytest.mark.parametrize("rule, want", [
    (lambda g: g.mean(axis=0).astype(np.int64), "dtype int64, expected a float array"),
    (lambda g: g[:2], r"shape \(2, 1\), expected \(1,\)"),
])
def test_a_rule_returning_no_float_vector_is_refused_at_construction(rule, want):
    """An integer aggregate would train on truncated gradients without a word."""
    with pytest.raises(ValueError, match=want):
        byz(make_net(), rule)


def test_a_gradient_mxnet_skips_is_refused_not_used_stale():
    """MXNet 1.9's oneDNN FullyConnected writes no bias gradient when the
    weight is frozen (stock Gluon would apply the stale buffer): refused."""
    net = make_net()
    net[0].weight.grad_req = "null"
    t = byz(net)
    with pytest.raises(RuntimeError, match="bias.*did not land.*grad_req='null'"):
        run_round(t, net, *data(1)[0])


# ---------------------------------------------------------------- divergence
def test_divergence_is_recorded_not_raised():
    net = make_net()
    t = byz(net, "mean", attack=_row0_to(1e20), opt={"learning_rate": 1.0, "momentum": 0.9})
    X, Y = data(1)[0]
    for _ in range(4):
        run_round(t, net, X, Y)
    assert t.diverged_at is not None and 1 <= t.diverged_at <= 4
    assert t.diagnostics["finite"] is False and t.diagnostics["round"] == 4
    out = net(X[0]).asnumpy()                 # evaluation still runs
    acc = float((out.argmax(1) == Y[0].asnumpy()).mean())
    assert 0.0 <= acc <= 1.0


def test_nan_aggregate_does_not_crash_the_optimizer():
    net = make_net()
    t = ByzantineTrainer(net.collect_params(), "adam", {"learning_rate": 0.1, "wd": 1e-3},
                         aggregator=lambda g: np.full(g.shape[1], np.nan, np.float32),
                         num_workers=N)
    run_round(t, net, *data(1)[0])
    assert t.diverged_at == 1 and np.isnan(t.diagnostics["agg_norm"])
    run_round(t, net, *data(1)[0])
    assert t.diverged_at == 1 and t.round == 2


# ---------------------------------------------------------------- static_alloc
def test_static_alloc_after_training_started_is_refused():
    net = make_net()
    t = byz(net)
    rounds = data(3)
    run_round(t, net, *rounds[0])
    assert t.gradient_path == "zero-copy"
    net.hybridize(static_alloc=True, static_shape=True)
    before = weights(net)
    with pytest.raises(RuntimeError, match="static_alloc"):
        run_round(t, net, *rounds[1])
    np.testing.assert_array_equal(weights(net), before)    # nothing applied
    # the remedy in the message works: rebuild the graph, new trainer
    net.hybridize(static_alloc=True, static_shape=True)
    ref = make_net()
    for p, q in zip(ref.collect_params().values(), net.collect_params().values()):
        p.set_data(q.data())
    t2, t_ref = byz(net, "marmed"), byz(ref, "marmed")
    run_round(t2, net, *rounds[2])
    run_round(t_ref, ref, *rounds[2])
    assert t2.gradient_path == "copy"
    np.testing.assert_allclose(weights(net), weights(ref), rtol=1e-6, atol=1e-7)


def test_sentinel_survives_mxnet_copy():
    arr = nd.zeros((2, 3))
    GradMatrix.mark_array(arr)
    assert not GradMatrix.was_written(arr)
    arr[:] = 1.0
    assert GradMatrix.was_written(arr)


# ---------------------------------------------------------------- resume
def test_states_round_trip_includes_rng_and_round(tmp_path):
    rounds = data(4)
    spec = dict(aggregator="marmed", attack=("gaussian", {"q": 1, "sigma": 1.0}), seed=3)
    net = make_net()
    t = byz(net, **spec)
    for X, Y in rounds[:2]:
        run_round(t, net, X, Y)
    net.save_parameters(str(tmp_path / "p.params"))
    t.save_states(str(tmp_path / "t.states"))
    for X, Y in rounds[2:]:
        run_round(t, net, X, Y)
    net2 = make_net(seed=99)
    net2.load_parameters(str(tmp_path / "p.params"))
    t2 = byz(net2, **dict(spec, seed=12345))
    t2.load_states(str(tmp_path / "t.states"))
    assert t2.round == 2 and t2.diverged_at is None
    for X, Y in rounds[2:]:
        run_round(t2, net2, X, Y)
    np.testing.assert_array_equal(weights(net2), weights(net))
    assert t2.rng.bit_generator.state == t.rng.bit_generator.state
    assert t2.round == t.round == 4
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p.params", "t.states"]


def test_loads_a_stock_gluon_states_file(tmp_path):
    """Momentum saved by gluon.Trainer is restored; round and rng are kept."""
    opt = {"learning_rate": 0.5, "momentum": 0.9}
    ref, net = make_net(), make_net()
    stock = gluon.Trainer(ref.collect_params(), "sgd", dict(opt))
    (X, Y), (X2, Y2) = data(2)
    with autograd.record():
        loss = LOSS(ref(X.reshape((N * B, DIN))), Y.reshape((N * B,)))
    loss.backward()
    stock.step(N * B)
    stock.save_states(str(tmp_path / "gluon.states"))
    for p, q in zip(params_of(net), params_of(ref)):
        p.set_data(q.data())
    t = byz(net, opt=dict(opt))
    t.load_states(str(tmp_path / "gluon.states"))
    assert t.round == 0
    with autograd.record():
        loss = LOSS(ref(X2.reshape((N * B, DIN))), Y2.reshape((N * B,)))
    loss.backward()
    stock.step(N * B)
    run_round(t, net, X2, Y2)
    np.testing.assert_allclose(weights(net), weights(ref), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- semantics
def test_one_worker_plain_backward_is_a_drop_in():
    ref, net = make_net(), make_net()
    stock = gluon.Trainer(ref.collect_params(), "sgd", {"learning_rate": 0.5})
    t = ByzantineTrainer(net.collect_params(), "sgd", {"learning_rate": 0.5})
    assert t.num_workers == 1
    for X, Y in data(2):
        for m, tr in ((ref, stock), (net, t)):
            with autograd.record():
                loss = LOSS(m(X[0]), Y[0])
            loss.backward()
            tr.step(B)
    np.testing.assert_allclose(weights(net), weights(ref), rtol=1e-6, atol=1e-7)


def _backward_all(trainer, net, X, Y):
    for w in range(N):
        with trainer.worker(w):
            with autograd.record():
                loss = LOSS(net(X[w]), Y[w])
            loss.backward()


@pytest.mark.parametrize("rule,attack,per_worker", [
    ("mean", None, False),                      # gluon's own call
    ("mean", None, True),
    (("cclip", {"tau": 0.05}), ("gaussian", {"q": 1, "sigma": 1.0}), True),
])
def test_allreduce_then_update_equals_step(rule, attack, per_worker):
    """The split path sees the same normalised rows as step(): an attack's
    strength and a scale-dependent rule (cclip's tau) mean the same."""
    nets = [make_net(), make_net()]
    ts = [byz(nets[0], rule, attack), byz(nets[1], rule, attack)]
    X, Y = data(1)[0]
    run_round(ts[0], nets[0], X, Y)
    _backward_all(ts[1], nets[1], X, Y)
    ts[1].allreduce_grads(B) if per_worker else ts[1].allreduce_grads()
    ts[1].update(B)
    np.testing.assert_allclose(weights(nets[1]), weights(nets[0]), rtol=1e-6, atol=1e-7)


def test_allreduce_without_batch_size_refused_under_attack():
    net = make_net()
    t = byz(net, "mean", ("gaussian", {"q": 1}))
    X, Y = data(1)[0]
    _backward_all(t, net, X, Y)
    with pytest.raises(ValueError, match="allreduce_grads\\(batch_size\\)"):
        t.allreduce_grads()


def test_parameter_unused_by_a_worker_gets_zero_gradient():
    a = gluon.Parameter("a", shape=(3,))
    b = gluon.Parameter("b", shape=(3,))
    for p in (a, b):
        p.initialize(mx.init.One())
    t = ByzantineTrainer([a, b], "sgd", {"learning_rate": 1.0}, num_workers=2)
    x = nd.array([1.0, 2.0, 3.0])
    for w in range(2):
        with t.worker(w):
            with autograd.record():
                loss = (a.data() * x).sum() + ((b.data() * x).sum() if w == 0 else 0)
            loss.backward()
    t.step(1)
    np.testing.assert_allclose(a.data().asnumpy(), 1 - x.asnumpy())
    np.testing.assert_allclose(b.data().asnumpy(), 1 - x.asnumpy() / 2)


def test_clear_errors():
    net = make_net()
    with pytest.raises(ValueError, match="num_workers=0"):
        byz(net, num_workers=0)
    with pytest.raises(ValueError, match="krum.*mean"):
        byz(net, "no_such_rule")
    with pytest.raises(ValueError, match="n=4"):
        byz(net, ("krum", {"q": 3}))
    with pytest.raises(ValueError, match="kvstore='dist_sync'"):
        byz(net, kvstore="dist_sync")
    with pytest.raises(ValueError, match="num_workers=3 with 2 contexts"):
        byz(make_net(ctx=[mx.cpu(0), mx.cpu(1)]), num_workers=3)
    t = byz(net)
    with pytest.raises(ValueError, match=r"\[0, 4\), got w=4"):
        with t.worker(4):
            pass
    X, Y = data(1)[0]
    with pytest.raises(RuntimeError, match="no gradient"):
        with t.worker(0):
            net(X[0])
    with t.worker(1):
        with autograd.record():
            loss = LOSS(net(X[1]), Y[1])
        loss.backward()
    with pytest.raises(RuntimeError, match="already reported"):
        with t.worker(1):
            pass
    with pytest.raises(RuntimeError, match=r"worker\(s\) \[0, 2, 3\] of n=4"):
        t.step(B)
    with pytest.raises(ValueError, match="batch_size"):
        t.step(0)
