"""Command line: ``byzsgd list | run | plot | report | bench | launch``.

``byzsgd run FIGURE`` checks the figure's settings, runs (or finishes) every
(arm, seed) run into ``<out>/<figure>/``, then plots the figure and prints the
plot's paths. ``--quick`` applies the figure's quick preset and writes to
``results/quick`` by default. A figure module run as a script
(``python experiments/fig03_mnist_gaussian.py --quick``) takes the same
options. ``bench`` forwards its arguments to ``python -m byzsgd.bench``;
``launch`` is :mod:`byzsgd.launch`'s command line, run in this process;
``run --distributed`` trains on local ps-lite clusters (:mod:`byzsgd.distrun`).
"""
import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["main", "run_main", "build_parser"]

RESULTS, QUICK_RESULTS = "results", str(Path("results") / "quick")
# Subcommands handed whole to another module's command line.
FORWARD = {"bench": "byzsgd.bench"}
# ... and those run in this process: the launcher must outlive a Ctrl-C to reap its cluster
DELEGATE = {"launch": "byzsgd.launch"}


def _results(args):
    given = getattr(args, "out", None) if args.command in (None, "run") else args.results
    return given or (QUICK_RESULTS if args.quick else RESULTS)


def _add_run_options(p):
    p.add_argument("--quick", action="store_true",
                   help="the figure's quick preset (few seeds and rounds); "
                        f"results go to {QUICK_RESULTS} unless --out says otherwise")
    p.add_argument("--seeds", type=int, nargs="+", metavar="K", help="seeds to run")
    p.add_argument("--rounds", type=int, metavar="N", help="rounds per run")
    p.add_argument("--eval-every", type=int, metavar="N", help="rounds between evaluations")
    p.add_argument("--arms", nargs="+", metavar="LABEL",
                   help="run only these arms (labels or their slugs)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs in parallel processes (default 1)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads per run (default: the figure's, usually 1)")
    p.add_argument("--data-dir", metavar="D",
                   help="folder holding mnist/, fashion-mnist/, cifar10/ "
                        "(default $BYZSGD_DATA, else ~/.mxnet/datasets)")
    p.add_argument("--out", metavar="D", help=f"results folder (default {RESULTS})")
    p.add_argument("--ctx", default="cpu", metavar="CTX",
                   help="device of the network and its workers: cpu (default), gpu(K) "
                        "with a CUDA build of mxnet")
    p.add_argument("--no-plot", action="store_true", help="do not plot at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compute-dead", action="store_true",
                   help="compute every round of a dead run (every parameter NaN) instead "
                        "of writing its remaining evaluations at once: slower, the same "
                        "accuracies, plus per-round diagnostics")
    p.add_argument("--no-reuse", action="store_true",
                   help="train every run, also those whose settings equal a finished run's "
                        "in another figure's folder of --out (by default copied from it)")
    p.add_argument("--distributed", action="store_true",
                   help="run each run on a local ps-lite cluster (see byzsgd launch)")
    p.add_argument("-n", "--workers", type=int, metavar="N",
                   help="--distributed: workers (replaces the figure's n)")
    p.add_argument("-s", "--servers", type=int, metavar="S",
                   help="--distributed: parameter servers (default 1)")


def _run_spec(spec, args, figure=None, plot=None):
    """Run ``spec`` with the command-line overrides, then plot it as ``figure``
    (default: the spec's own) with the ``plot`` overrides."""
    from . import plotting, runner
    from .experiment import override

    spec = override(spec, quick=args.quick, seeds=args.seeds, rounds=args.rounds,
                    eval_every=args.eval_every, arms=args.arms, threads=args.threads)
    out = _results(args)
    _check_mode(args)
    if args.distributed:
        from . import distrun
        distrun.run(spec, spec.n if args.workers is None else args.workers,
                    1 if args.servers is None else args.servers, out=out,
                    data_dir=args.data_dir)
    else:
        runner.run(spec, out=out, jobs=args.jobs, data_dir=args.data_dir,
                   progress=not args.no_progress, ctx=args.ctx,
                   skip_dead=not args.compute_dead, reuse=not args.no_reuse)
    print(f"{spec.figure}: logs in {Path(out) / spec.figure}")
    if not args.no_plot:
        for path in plotting.plot_figure(figure or spec.figure, results=out,
                                         source=spec.figure, **(plot or {})):
            print(path)
    return 0


def _check_mode(args):
    """Refuse options that the chosen mode would ignore."""
    if not args.distributed:
        given = [o for o, v in (("-n/--workers", args.workers), ("-s/--servers", args.servers))
                 if v is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} apply to --distributed runs only; a "
                             "simulated run has the figure's n workers on one parameter server")
        return
    if args.jobs != 1:
        raise ValueError(f"--distributed runs one cluster at a time: --jobs={args.jobs} "
                         "must be 1 (or left out)")
    if args.ctx.replace(" ", "") != "cpu":
        raise ValueError(f"--distributed runs on the CPU: --ctx={args.ctx!r} must be cpu "
                         "(or left out)")


def _title(module):
    spec = getattr(module, "SPEC", None)
    if spec is None:
        return (module.__doc__ or "").strip().splitlines()[0]
    derived = getattr(module, "FIGURE", spec.figure) != spec.figure
    return spec.title + (f" (plotted from the runs of {spec.figure})" if derived else "")


def _cmd_list(args):
    from . import aggregators, attacks, data, models
    from .experiment import figures, load_figure

    print("figures:")
    for short, name in figures().items():
        try:
            title = _title(load_figure(short))
        except Exception as err:  # noqa: BLE001 - list the others, say what is wrong
            title = f"(cannot load: {type(err).__name__}: {err})"
        print(f"  {short:<7} {name:<34} {title}")
    print("rules:    " + ", ".join(aggregators.names()))
    print("attacks:  " + ", ".join(attacks.names()))
    print("models:   " + ", ".join(models.names()) + " (and gluoncv model-zoo names)")
    print("datasets: " + ", ".join(data.names()))
    return 0


def _cmd_run(args):
    from .experiment import load_figure
    module = load_figure(args.figure)
    if not hasattr(module, "SPEC"):      # trains nothing (Table 1): its own command line
        return module.main([a for a in args.argv[1:] if a != args.figure])
    return _run_spec(module.SPEC, args, getattr(module, "FIGURE", None),
                     getattr(module, "PLOT", None))


def _plot_target(name, results):
    """(figure, source, overrides) to plot for ``name``: from its module, or
    ``name`` itself when logs of that name exist without a module."""
    from .experiment import load_figure
    try:
        module = load_figure(name)
    except ValueError:
        if any((Path(results) / name).glob("*.jsonl")):
            return name, name, {}
        raise
    if not hasattr(module, "SPEC"):
        raise ValueError(f"{name!r} ({module.__name__}) is a table, not a plot: "
                         f"`byzsgd run {name}` prints it")
    source = module.SPEC.figure
    return getattr(module, "FIGURE", source), source, getattr(module, "PLOT", None) or {}


def _cmd_plot(args):
    from . import plotting
    results = _results(args)
    figure, source, overrides = _plot_target(args.figure, results)
    try:
        paths = plotting.plot_figure(figure, results=results, out=args.out, source=source,
                                     **overrides)
    except FileNotFoundError as err:
        if _has_quick_logs(args, source):
            raise FileNotFoundError(f"{err}; the --quick runs are in {QUICK_RESULTS}: "
                             f"byzsgd plot {args.figure} --quick") from None
        raise
    for path in paths:
        print(path)
    return 0


def _has_quick_logs(args, figure=None):
    """Whether the quick results hold logs (of ``figure``) that args do not read."""
    if args.quick or args.results:
        return False
    return any(Path(QUICK_RESULTS).glob(f"{figure or '*'}/*.jsonl"))


def _cmd_report(args):
    from . import plotting
    results = _results(args)
    print(plotting.report(results=results, out=args.out))
    if not any(Path(results).glob("*/*.jsonl")) and _has_quick_logs(args):
        print(f"byzsgd: no logs in {results}; the --quick runs are in {QUICK_RESULTS}: "
              "byzsgd report --quick", file=sys.stderr)
    return 0


def build_parser():
    """The ``byzsgd`` argument parser (subcommands list, run, plot, report, bench)."""
    parser = argparse.ArgumentParser(
        prog="byzsgd", description="Reproduce 'Generalized Byzantine-tolerant SGD' "
                                   "(Xie, Koyejo, Gupta 2018) with MXNet/Gluon.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("list", help="figures, rules, attacks, models, datasets")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("run", help="run (or finish) a figure's experiments, then plot it")
    p.add_argument("figure", help='"fig03" or a module name such as fig03_mnist_gaussian')
    _add_run_options(p)
    p.set_defaults(func=_cmd_run)
    for name, func, what, where in (
            ("plot", _cmd_plot, "plot a figure from its logs",
             "folder of the images (default <results>/plots)"),
            ("report", _cmd_report, "index page + table of final accuracies",
             "the Markdown file, or a folder for REPORT.md (default <results>/REPORT.md); "
             "its images go to plots/ beside it")):
        p = sub.add_parser(name, help=what)
        if name == "plot":
            p.add_argument("figure")
        p.add_argument("--results", metavar="D", help=f"results folder (default {RESULTS})")
        p.add_argument("--quick", action="store_true",
                       help=f"use the quick results ({QUICK_RESULTS})")
        p.add_argument("--out", metavar="D", help=where)
        p.set_defaults(func=func)
    for name, module in {**FORWARD, **DELEGATE}.items():
        sub.add_parser(name, add_help=False, help=f"same as python -m {module} ARGS")
    return parser


def _forward(module, args):
    if importlib.util.find_spec(module) is None:
        print(f"byzsgd: error: {module} is not installed", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", module, *args])


def _guarded(func, args):
    """Run a command; user errors become one line on stderr and exit status 2."""
    from .data import DataError
    from .launch import ClusterError
    from .runner import BusyError
    try:
        return func(args)
    except (ValueError, TypeError, OSError, DataError, ClusterError, BusyError) as err:
        if os.environ.get("BYZSGD_TRACEBACK"):
            raise
        print(f"byzsgd: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("BYZSGD_TRACEBACK"):
            raise
        resume = ("; rerun the same command to resume (finished runs are kept, the others "
                  "continue from their last checkpoint)"
                  if getattr(args, "command", None) in ("run", None) else "")
        print(f"byzsgd: interrupted{resume}", file=sys.stderr)
        return 130


def run_main(spec, argv=None, figure=None, plot=None):
    """Command line of one figure module: ``byzsgd run``'s options for ``spec``
    (plotted as ``figure`` with ``plot`` overrides, see experiment.main)."""
    parser = argparse.ArgumentParser(description=f"{figure or spec.figure}: {spec.title}")
    _add_run_options(parser)
    args = parser.parse_args(argv)
    args.command = None
    sys.exit(_guarded(lambda a: _run_spec(spec, a, figure, plot), args))


def main(argv=None):
    """Entry point of the ``byzsgd`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in FORWARD:
        return _forward(FORWARD[argv[0]], argv[1:])
    if argv and argv[0] in DELEGATE:
        return importlib.import_module(DELEGATE[argv[0]]).main(argv[1:])
    args = build_parser().parse_args(argv)
    args.argv = argv
    return _guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
