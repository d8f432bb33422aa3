"""Declarative experiments: a :class:`Spec` of fixed settings and the
:class:`Arm` s (rules) compared under them, resolved into one plain config per
(arm, seed) run, checked before anything trains.

Every arm runs with the same seeds: seed k fixes the network's initial weights,
the data partition, every worker's batch order and the attack's random draws,
identically across arms ("all algorithms run with the same set of random
seeds", Section 5). Execution, logs and resume live in :mod:`byzsgd.runner`.

A figure module (``experiments/figNN_*.py``, package ``byzsgd.experiments``)
defines ``SPEC`` and ends with ``if __name__ == "__main__": main(SPEC)``.
"""
import dataclasses
import importlib
import json
import pkgutil
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import aggregators, attacks, data, registry
from .checks import is_real

__all__ = ["INHERIT", "Arm", "Spec", "override", "run_id", "resolve_runs", "preflight",
           "figures", "load_figure", "load_spec", "main"]


class _Inherit:
    """Marker: take the Spec's value."""

    def __repr__(self):
        return "INHERIT"

    def __reduce__(self):  # one instance, also after pickling to a worker process
        return "INHERIT"


INHERIT = _Inherit()
#: seeds are below 2**31: MXNet's seed is a C int
MAX_SEED = 2 ** 31


@dataclass(frozen=True)
class Arm:
    """One aggregation rule (a line in a figure) and how it differs from the Spec.

    ``attack``/``attack_params`` default to the Spec's; a reference arm
    ("Mean without failures") sets ``attack=None, reference=True``. ``group``
    and ``x`` place the arm in grouped or final-vs-x figures; ``batch_size``
    and ``lr`` override the Spec's for this arm.
    """
    label: str
    rule: str
    rule_params: dict = field(default_factory=dict)
    attack: object = INHERIT
    attack_params: object = INHERIT
    group: object = None
    x: object = None
    reference: bool = False
    batch_size: int = None
    lr: float = None


@dataclass(frozen=True, kw_only=True)
class Spec:
    """Everything one figure fixes, and its arms.

    ``eval_every``: evaluate on the whole test set every that many rounds (and
    at round 0 and the last round). ``topk``: the k of the second metric
    (top-3 on CIFAR-10). ``threads``: OpenMP threads per run, pinned because
    results change with it. ``plot``: {kind, metric, zoom, title, xlabel, ...}
    for :mod:`byzsgd.plotting`. ``quick``: overrides (any field; ``arms`` as a
    list of labels to keep) for a fast look with ``--quick``.
    """
    figure: str
    title: str
    dataset: str
    model: str
    arms: tuple
    rounds: int
    lr: float
    batch_size: int
    eval_every: int
    n: int = 20
    attack: str = None
    attack_params: dict = field(default_factory=dict)
    optimizer: str = "sgd"
    optimizer_params: dict = field(default_factory=dict)
    seeds: tuple = tuple(range(10))
    topk: int = 1
    threads: int = 1
    partition: str = "shard"
    plot: dict = field(default_factory=dict)
    quick: dict = field(default_factory=dict)


def _select_arms(arms, wanted):
    by_name = {}
    for arm in arms:
        by_name.setdefault(arm.label, []).append(arm)
        by_name.setdefault(_slug(arm.label), []).append(arm)
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(map(repr, unknown))}; valid labels: "
                         f"{', '.join(repr(a.label) for a in arms)}")
    keep = {id(a) for w in wanted for a in by_name[w]}
    return tuple(a for a in arms if id(a) in keep)


def override(spec, quick=False, **changes):
    """``spec`` with its ``quick`` overrides (if ``quick``), then ``changes``.

    ``None`` values are ignored; ``arms`` may be labels (or their slugs) of
    the arms to keep, chosen among the quick preset's arms under ``quick``.
    """
    if quick:
        spec = _replace(spec, spec.quick)
    return _replace(spec, {k: v for k, v in changes.items() if v is not None})


def _replace(spec, changes):
    fields = {f.name for f in dataclasses.fields(Spec)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ValueError(f"unknown Spec field(s) {', '.join(unknown)}; valid fields: "
                         f"{', '.join(sorted(fields))}")
    changes = dict(changes)
    for key in ("arms", "seeds"):   # "Mean" would be 4 arms, 3 no seed list at all
        if key in changes and (isinstance(changes[key], (str, bytes))
                               or not isinstance(changes[key], Iterable)):
            raise ValueError(f"{key} must be a list, got {key}={changes[key]!r} "
                             f"(e.g. {key}=[{changes[key]!r}])")
    if changes.get("arms") and all(isinstance(a, str) for a in changes["arms"]):
        changes["arms"] = _select_arms(spec.arms, changes["arms"])
    if "seeds" in changes:
        changes["seeds"] = tuple(changes["seeds"])
    return dataclasses.replace(spec, **changes)


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def run_id(arm, seed):
    """``<label-slug>[-g<group>][-x<x>]__seed<k>``: the run's log file stem."""
    slug = _slug(arm.label) + (f"-g{_slug(arm.group)}" if arm.group is not None else "") \
        + (f"-x{_slug(arm.x)}" if arm.x is not None else "")
    return f"{slug}__seed{seed}"


def _plain(value):
    """JSON-ready copy (tuples become lists, numpy scalars and arrays Python
    numbers and lists); refuses NaN and other values JSON cannot hold."""
    return json.loads(json.dumps(value, allow_nan=False, default=_numpy_value))


def _numpy_value(value):
    if isinstance(value, (np.generic, np.ndarray)):  # e.g. q from np.arange in a sweep
        return value.tolist()
    raise TypeError(f"{value!r} ({type(value).__name__}) cannot be logged: settings must be "
                    "numbers, strings, booleans, None, lists or dicts")


def _attack_of(spec, arm):
    if arm.attack is INHERIT:
        params = dict(spec.attack_params)
        if arm.attack_params is not INHERIT:
            params.update(arm.attack_params)
        return spec.attack, params
    return arm.attack, ({} if arm.attack_params is INHERIT else dict(arm.attack_params))


def _plot_of(spec):
    plot = {"kind": "curves", "metric": "top1" if spec.topk == 1 else "topk",
            "zoom": None, "title": spec.title, "xlabel": None}
    plot.update(spec.plot)
    return plot


def resolve_runs(spec):
    """One config dict per (arm, seed), arm-major: the log's config line without
    "type", "versions", "started". Rule/attack parameters include defaults."""
    runs = []
    for arm in spec.arms:
        if not isinstance(arm.rule, str):
            raise TypeError(f"arm {arm.label!r}: rule must be a registered name, got "
                            f"{arm.rule!r}; valid names: {', '.join(aggregators.names())}")
        _need_dict(arm, "rule_params", arm.rule_params)
        rule = aggregators.get(arm.rule, **arm.rule_params)
        for where, params in (("the spec's attack_params", spec.attack_params),
                              ("attack_params", arm.attack_params)):
            if params is not INHERIT:
                _need_dict(arm, where, params)
        attack, attack_params = _attack_of(spec, arm)
        if attack is not None and not isinstance(attack, str):
            raise TypeError(f"arm {arm.label!r}: attack must be a registered name or None, "
                            f"its parameters in attack_params; got {attack!r}; valid names: "
                            f"{', '.join(attacks.names())}")
        if attack is not None:
            attack_params = attacks.get(attack, **attack_params).params
        elif attack_params:
            raise ValueError(f"arm {arm.label!r}: attack_params {attack_params} "
                             f"given without an attack")
        for seed in spec.seeds:
            runs.append(_logged(arm, {
                "figure": spec.figure, "run_id": run_id(arm, seed), "label": arm.label,
                "group": arm.group, "x": arm.x, "reference": bool(arm.reference),
                "rule": arm.rule, "rule_params": rule.params, "attack": attack,
                "attack_params": attack_params, "dataset": spec.dataset,
                "model": spec.model, "n": spec.n, "rounds": spec.rounds,
                "lr": arm.lr if arm.lr is not None else spec.lr,
                "batch_size": arm.batch_size if arm.batch_size is not None else spec.batch_size,
                "optimizer": spec.optimizer, "optimizer_params": spec.optimizer_params,
                "eval_every": spec.eval_every, "seed": int(seed), "topk": spec.topk,
                "threads": spec.threads, "partition": spec.partition,
                "plot": _plot_of(spec)}))
    return runs


def _need_dict(arm, name, value):
    if not isinstance(value, Mapping):
        raise TypeError(f"arm {arm.label!r}: {name} must be a dict of parameters, "
                        f"got {value!r}")


def _logged(arm, cfg):
    """cfg as the log records it (_plain), an error naming the arm if it cannot be."""
    try:
        return _plain(cfg)
    except (TypeError, ValueError) as err:
        raise ValueError(f"arm {arm.label!r}: {err}") from None


def _positive(spec, **values):
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{spec.figure}: {name}={value!r} must be a positive integer")


def preflight(spec, data_dir=None):
    """Refuse impossible settings before training: raise naming the values.

    Checks the numbers, the dataset (files present and intact), model,
    optimizer and partition names, every arm's rule (called on an (n, 2) zero
    array, which checks e.g. Krum's n > 2q + 2) and attack (on (n, d) zeros,
    d = the model's parameter count). Returns the resolved run configs.
    """
    _positive(spec, n=spec.n, rounds=spec.rounds, eval_every=spec.eval_every,
              batch_size=spec.batch_size, topk=spec.topk, threads=spec.threads)
    if not spec.arms or not spec.seeds:
        raise ValueError(f"{spec.figure}: needs at least one arm and one seed "
                         f"(arms={len(spec.arms)}, seeds={list(spec.seeds)})")
    bad = [s for s in spec.seeds if isinstance(s, bool)
           or not isinstance(s, (int, np.integer)) or not 0 <= s < MAX_SEED]
    if bad:
        # MXNet's seed is a C int: a larger seed would wrap onto a smaller one's weights
        raise ValueError(f"{spec.figure}: seeds must be integers in 0..{MAX_SEED - 1}, "
                         f"got {bad}")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise ValueError(f"{spec.figure}: repeated seeds {list(spec.seeds)}")
    if spec.partition not in data.PARTITIONS:
        raise ValueError(f"unknown partition {spec.partition!r}; valid names: "
                         f"{', '.join(sorted(data.PARTITIONS))}")
    runs = resolve_runs(spec)
    ids = [r["run_id"] for r in runs]
    clash = sorted({i for i in ids if ids.count(i) > 1})
    if clash:
        raise ValueError(f"{spec.figure}: arms share run ids {clash}; give them "
                         f"distinct labels, groups or x values")
    for r in runs:
        _positive(spec, batch_size=r["batch_size"])
        lr = r["lr"]
        if not is_real(lr) or not lr > 0:
            raise ValueError(f"{spec.figure}/{r['label']}: lr={lr!r} must be a number > 0")
    x, y = data.load_raw(spec.dataset, data_dir, train=True)
    data.load_raw(spec.dataset, data_dir, train=False)
    classes = int(y.max()) + 1
    if spec.topk > classes:
        raise ValueError(f"topk={spec.topk} exceeds the {classes} classes of {spec.dataset}")
    for r in runs:  # the sampler checks n and batch_size against the shard size
        data.WorkerSampler(len(y), spec.n, r["batch_size"], 0, spec.partition)
    d = _check_model_and_optimizer(spec, x.shape[1:])
    rng, probed = np.random.default_rng(0), set()
    for r in runs[::len(spec.seeds)]:
        registry.probe("aggregator", aggregators.get(r["rule"], **r["rule_params"]),
                       (spec.n, 2), (2,))
        key = json.dumps([r["attack"], r["attack_params"]], sort_keys=True)
        if r["attack"] is not None and key not in probed:  # (n, d) probes are big: once each
            probed.add(key)
            registry.probe("attack", attacks.get(r["attack"], **r["attack_params"]),
                           (spec.n, d), (spec.n, d), rng)
    return runs


def _check_model_and_optimizer(spec, input_shape):
    """Build the model once (unknown names raise listing valid ones); return d."""
    import mxnet as mx  # only the checks that need it import it

    from . import models
    net = models.get_model(spec.model)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1,) + tuple(input_shape)))
    d = sum(int(np.prod(p.shape)) for p in net.collect_params().values())
    registered = sorted(mx.optimizer.Optimizer.opt_registry)
    if spec.optimizer.lower() not in registered:
        raise ValueError(f"unknown optimizer {spec.optimizer!r}; valid names: "
                         f"{', '.join(registered)}")
    if "learning_rate" in spec.optimizer_params:
        raise ValueError(f"{spec.figure}: give the learning rate as lr, not in "
                         f"optimizer_params={spec.optimizer_params}")
    try:  # one update on a dummy weight: bad values surface now, not mid-run
        opt = mx.optimizer.create(spec.optimizer, learning_rate=spec.lr,
                                  **spec.optimizer_params)
        mx.optimizer.get_updater(opt)(0, mx.nd.ones((2,)), mx.nd.ones((2,)))
    except Exception as err:  # noqa: BLE001 - mxnet raises many kinds here
        raise ValueError(f"{spec.figure}: optimizer {spec.optimizer!r} with "
                         f"optimizer_params={spec.optimizer_params} fails: "
                         f"{type(err).__name__}: {err}") from None
    return d


_FIGURE_MODULE = re.compile(r"^(fig\d+|ext\d+|table1)(_\w*)?$")


def figures():
    """{short name ("fig03"): module name} of the figure modules, in order."""
    from . import experiments
    mods = sorted(m.name for m in pkgutil.iter_modules(experiments.__path__)
                  if _FIGURE_MODULE.match(m.name))
    return {_FIGURE_MODULE.match(m).group(1): m for m in mods}


def load_figure(name):
    """The module of figure ``name`` (short "fig03" or full module name).

    A figure module defines ``SPEC``; a figure drawn from another figure's
    runs (e.g. a zoomed version) also sets ``FIGURE`` (its own name) and
    ``PLOT`` (plot overrides). A module without SPEC (Table 1) trains
    nothing and has its own ``main(argv)``.
    """
    found = figures()
    module = found.get(name) or (name if name in found.values() else None)
    if module is None:
        raise ValueError(f"unknown figure {name!r}; valid figures: "
                         f"{', '.join(f'{k} ({m})' for k, m in found.items()) or '(none)'}")
    return importlib.import_module(f"byzsgd.experiments.{module}")


def load_spec(name):
    """The SPEC of figure ``name`` (short "fig03" or full module name)."""
    module = load_figure(name)
    if not hasattr(module, "SPEC"):
        raise ValueError(f"figure {name!r} ({module.__name__}) trains nothing: it has no "
                         f"SPEC; run it with `byzsgd run {name}`")
    return module.SPEC


def main(spec, argv=None, *, figure=None, plot=None):
    """Command line of a figure module: the options of ``byzsgd run``.

    ``figure``/``plot``: plot the runs of ``spec`` as figure ``figure`` with
    these plot overrides (a derived figure such as a zoomed one).
    """
    from .cli import run_main  # the CLI owns the option parser
    return run_main(spec, argv, figure=figure, plot=plot)
