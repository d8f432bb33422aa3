"""Benchmarks: ``python -m byzsgd.bench SUBCOMMAND [options]``.

Subcommands register themselves with :func:`subcommand` (modules listed in
``MODULES``); ``aggregators`` times every registered aggregation rule on
gradient-like float32 data of the paper's MLP and CNN sizes and prints
milliseconds and the ratio to ``mean`` measured in the same run, with the
machine it ran on; ``round`` and ``figure`` (:mod:`byzsgd.bench_rounds`)
time training rounds and whole figures.
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

from . import provenance

__all__ = ["subcommand", "main", "gradient_like", "machine"]

SUBCOMMANDS = {}


def subcommand(name, help=""):
    """Decorator: ``fn(parser)`` adds options and returns the runner
    ``run(args) -> str`` (the report text)."""

    def deco(fn):
        SUBCOMMANDS[name] = (fn, help)
        return fn

    return deco


def machine():
    """One-paragraph description of the machine and the thread settings."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count()
    m = provenance.machine()
    cap = f", oneDNN capped at {m['dnnl_max_cpu_isa']}" if m["dnnl_max_cpu_isa"] else ""
    lines = [f"cpu: {m['cpu']} ({m['isa'] or '?'}{cap}), "
             f"{cores} cores usable, load average (1 min) {os.getloadavg()[0]:.2f}",
             f"python {platform.python_version()}, numpy {np.__version__}",
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
             f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'unset')}"]
    from . import coordinate
    if coordinate.NUMBA_AVAILABLE and coordinate.use_numba():
        import numba
        lines.append(f"numba {numba.__version__}: {numba.get_num_threads()} threads, "
                     f"layer {numba.threading_layer() if _numba_ran() else 'not started'}")
    else:
        lines.append("numba: not used (pure-numpy path)")
    return "\n".join(lines)


def _numba_ran():
    import numba
    try:
        numba.threading_layer()
        return True
    except ValueError:
        return False


def gradient_like(n, d, seed=0, dtype=np.float32):
    """n worker gradients: a shared direction plus worker noise, with 1% of
    the coordinates heavy-tailed (Student t, 2 degrees of freedom)."""
    rng = np.random.default_rng(seed)
    g = rng.normal(scale=1e-2, size=d)
    x = g + rng.normal(scale=1e-2, size=(n, d))
    heavy = rng.choice(d, size=max(1, d // 100), replace=False)
    x[:, heavy] += 1e-2 * rng.standard_t(2, size=(n, len(heavy)))
    return x.astype(dtype)


# ------------------------------------------------------------ aggregators

BENCH_PARAMS = {"krum": {"q": 4}, "multikrum": {"q": 4}, "bulyan": {"q": 4},
                "meamed": {"q": 4}, "trmean": {"b": 4}, "phocas": {"b": 4},
                "cclip": {"tau": 0.1, "iters": 3}, "geomed": {"tol": 1e-6}}
TARGETS = {"marmed": 4, "meamed": 6, "trmean": 6, "phocas": 6,
           "krum": 4, "multikrum": 4, "medoid": 4, "geomed": 10}


@subcommand("aggregators", help="time every aggregation rule against mean")
def _aggregators(parser):
    parser.add_argument("--n", type=int, default=20, help="workers (rows)")
    parser.add_argument("--d", type=int, nargs="+", default=[118282, 2431018],
                        help="dimensions (default: the paper's MLP and CNN)")
    parser.add_argument("--rounds", type=int, default=9,
                        help="timing rounds at the largest d (more at smaller d, up to "
                             "20x); each round times every rule once, interleaved")
    parser.add_argument("--rules", nargs="+", default=None, help="default: all registered")
    return _run_aggregators


def _run_aggregators(args):
    from . import aggregators
    names = args.rules or aggregators.names()
    rules, skipped = {}, []
    for name in names:
        try:
            rules[name] = aggregators.get(name, **BENCH_PARAMS.get(name, {}))
        except TypeError as e:  # a rule with required parameters we do not know
            skipped.append(f"{name} ({e})")
    rules.setdefault("mean", aggregators.get("mean"))
    out = []
    for d in args.d:
        x = gradient_like(args.n, d)
        for rule in rules.values():  # warm-up: numba compiles (or loads) here
            rule(x)
        times = {name: [] for name in rules}
        times["np.mean(axis=0)"] = []
        rounds = min(20 * args.rounds, args.rounds * max(1, max(args.d) // d))
        for _ in range(rounds):
            for name, rule in rules.items():
                t = time.perf_counter()
                rule(x)
                times[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            x.mean(axis=0)
            times["np.mean(axis=0)"].append(time.perf_counter() - t)
        out.append(_table(times, rules, f"float32 ({args.n}, {d}), {rounds} interleaved rounds"))
        out.append("")
    if skipped:
        out.append("skipped (no benchmark parameters): " + ", ".join(skipped))
    # described after the runs, so that numba's threading layer is known
    return "\n".join([machine(), ""] + out)


def _table(times, rules, title):
    """Timings as text. 'min ratio' compares the fastest of each rule's runs
    with the fastest run of mean (the least disturbed runs on a shared
    machine); 'typical' is the median over rounds of rule time / mean time
    in the same round. Targets are judged on the min ratio."""
    ms = {name: 1e3 * np.asarray(ts) for name, ts in times.items()}
    lines = [title + "; ratios to the mean rule (min ratio: fastest run / fastest run "
             "of mean; typical: median of per-round ratios)",
             f"{'rule':<16}{'min ms':>9}{'median ms':>11}{'min ratio':>11}{'typical':>9}"
             f"{'target':>8}  met"]
    for name in sorted(ms, key=lambda k: (k != "mean", k.startswith("np."), k)):
        ratio = ms[name].min() / ms["mean"].min()
        typical = float(np.median(ms[name] / ms["mean"]))
        target = TARGETS.get(name)
        met = "" if target is None else ("yes" if ratio <= target else "NO")
        info = rules[name].info if name in rules else {}
        extra = f"  ({info['iterations']} iterations)" if "iterations" in info else ""
        lines.append(f"{name:<16}{ms[name].min():>9.2f}{float(np.median(ms[name])):>11.2f}"
                     f"{ratio:>11.2f}{typical:>9.2f}{(f'{target}x' if target else ''):>8}  "
                     f"{met}{extra}")
    return "\n".join(lines)


#: modules whose subcommands register themselves when imported (the
#: distributed one starts clusters: its own module)
MODULES = ("byzsgd.bench_rounds", "byzsgd.bench_distributed")


def main(argv=None):
    import importlib
    # under `python -m byzsgd.bench` this file runs as __main__: the modules
    # register into byzsgd.bench, a second copy of it, so read that one
    registry = importlib.import_module("byzsgd.bench").SUBCOMMANDS
    for module in MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(prog="byzsgd bench",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name, (setup, help_) in sorted(registry.items()):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--out", default=None, help="also write the report to this file")
        p.set_defaults(run=setup(p))
    args = parser.parse_args(argv)
    from .cli import _guarded   # bad input: one line naming it, as in `byzsgd run`
    return _guarded(_bench, args)


def _bench(args):
    report = args.run(args)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
