"""Would taking finite rows first in exact Krum/Medoid score ties change the
committed runs?

Fixed: every committed run (not a copy) of krum, multikrum, medoid or bulyan
under experiments/results that diverged; its logged config, rerun here from
round 1 to one round past its logged ``diverged_at``.
Varies: the tie-break of ``byzsgd.aggregators._lex_argsort``. It orders rows
by (infinite terms, finite sum) and breaks exact ties by the rows' values.
When every candidate's terms are all infinite (gradients whose float32
distances overflow, next to rows holding NaN or inf) the tie can pick a row
holding NaN or inf over a finite one. ``--finite-first`` reruns with finite
rows first in each tie group.

A tie group mixing finite and non-finite rows is the only place the two
orders differ, and a selected non-finite row makes the run diverge, so runs
that never diverged cannot change. Prints, per run, the logged divergence
round, the rerun's, and how many mixed tie groups it met. ``--full
fig06/krum ...`` reruns every seed of those arms to the last round instead,
to see whether the figure's outcome depends on the tie-break.
``PYTHONPATH=. BYZSGD_DATA=... python experiments/checks/mixed_ties.py [--finite-first] [--full FIG/ARM ...] [--jobs 2]``
"""
import argparse
import functools
import glob
import json
import os
from multiprocessing import get_context

import numpy as np

from byzsgd.runlog import _IGNORED_KEYS

RULES = ("krum", "multikrum", "medoid", "bulyan")


def _logged(path):
    """(lines of the log at ``path``, its run config without the log-only keys)."""
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return lines, {k: v for k, v in lines[0].items() if k not in _IGNORED_KEYS}


def diverged_runs(results):
    """Paths of the committed, trained (not copied) diverged runs of RULES."""
    out = []
    for path in sorted(glob.glob(os.path.join(results, "**", "*.jsonl"), recursive=True)):
        lines, _ = _logged(path)
        cfg, last = lines[0], lines[-1]
        if cfg["rule"] in RULES and not cfg.get("copied_from") and \
                last.get("type") == "done" and last.get("diverged_at") is not None:
            out.append(path)
    return out


def _finite_first(c, f, row, plain):
    """plain's order, with finite rows first inside each exact tie group."""
    order = list(plain(c, f, row))
    key = [(c[i], f[i]) for i in order]
    out, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or key[end] != key[start]:
            group = order[start:end]
            out += sorted(group, key=lambda i: not np.isfinite(row(i)).all())  # stable
            start = end
    return np.array(out, dtype=np.intp)


def check(path, finite_first):
    from byzsgd import aggregators, training
    lines, cfg = _logged(path)
    logged = lines[-1]["diverged_at"]
    plain, mixed = aggregators._lex_argsort, [0]

    def counted(c, f, row):
        order = plain(c, f, row)
        groups = {}
        for i in order:
            groups.setdefault((c[i], f[i]), set()).add(bool(np.isfinite(row(i)).all()))
        mixed[0] += sum(len(kinds) == 2 for kinds in groups.values())
        return _finite_first(c, f, row, plain) if finite_first else order

    aggregators._lex_argsort = counted
    try:   # restored: a worker process checks many runs
        run = training.Training(cfg, os.environ.get("BYZSGD_DATA"))
        for _ in range(min(logged + 1, cfg["rounds"])):
            run.round()
    finally:
        aggregators._lex_argsort = plain
    return path, logged, run.trainer.diverged_at, mixed[0]


def full(path, finite_first):
    """Rerun the logged run at ``path`` to its last round (tie-break as
    asked); return (path, logged diverged_at, final top-1 logged, rerun's
    diverged_at, its final top-1)."""
    from byzsgd import aggregators, training
    lines, cfg = _logged(path)
    final = [line for line in lines if line["type"] == "eval"][-1]["top1"]
    plain = aggregators._lex_argsort
    if finite_first:
        aggregators._lex_argsort = functools.partial(_finite_first, plain=plain)
    try:
        run = training.Training(cfg, os.environ.get("BYZSGD_DATA"))
        for _ in range(cfg["rounds"]):
            run.round()
        top1 = run.evaluate(cfg["rounds"], 0.0)["top1"]
    finally:
        aggregators._lex_argsort = plain
    return path, lines[-1]["diverged_at"], final, run.trainer.diverged_at, top1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="experiments/results")
    parser.add_argument("--finite-first", action="store_true")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--full", nargs="+", metavar="FIGURE/RULE",
                        help="instead: rerun every seed of these arms (e.g. fig06/krum) to "
                             "the last round and compare divergence and final top-1")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"   # inherited by the spawned workers
    if args.full:
        return _main_full(args)
    paths = diverged_runs(args.results)
    order = "finite rows first in ties" if args.finite_first else "the committed tie-break"
    print(f"{len(paths)} diverged runs of {', '.join(RULES)}; rerun with {order}")
    rows = []
    with get_context("spawn").Pool(args.jobs) as pool:
        for path, logged, now, mixed in pool.imap(
                functools.partial(check, finite_first=args.finite_first), paths):
            name = os.path.relpath(path, args.results)
            rows.append((name, logged, now, mixed))
            if mixed or now != logged:
                print(f"{name}: diverged at {logged} logged, {now} rerun; "
                      f"mixed tie groups {mixed}", flush=True)
    hit = [r for r in rows if r[3]]
    print(f"runs with a mixed tie group: {len(hit)} of {len(rows)} "
          f"({', '.join(sorted({r[0].split('/')[0] for r in hit}))}); other runs: "
          f"{sum(r[1] == r[2] for r in rows if not r[3])} of {len(rows) - len(hit)} "
          "diverge at the logged round here")


def _main_full(args):
    paths = sorted(p for arm in args.full for p in glob.glob(
        os.path.join(args.results, arm.split("/")[0], f"{arm.split('/')[1]}__seed*.jsonl")))
    order = "finite rows first in ties" if args.finite_first else "the committed tie-break"
    print(f"{len(paths)} runs of {', '.join(args.full)} rerun to the end with {order}")
    with get_context("spawn").Pool(args.jobs) as pool:
        for path, was, top1, now, new in pool.imap(
                functools.partial(full, finite_first=args.finite_first), paths):
            print(f"{os.path.relpath(path, args.results)}: diverged at {was} logged, {now} "
                  f"rerun; final top-1 {top1} logged, {new} rerun", flush=True)


if __name__ == "__main__":
    main()
