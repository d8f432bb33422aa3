"""Reading the runner's JSON-lines logs (format: README.md, Logs) into runs,
grouping them into arms and computing the statistics the plots and the
report show. Tolerant of partial results: torn last lines, runs without a
"done" line, missing seeds (``missing_runs`` names them)."""
import json
import re
import warnings
from pathlib import Path

import numpy as np

from .checks import is_real
from .runlog import _IGNORED_KEYS, _PRESENTATION_KEYS, _differences

__all__ = ["RULE_ORDER", "load_runs", "missing_runs", "series", "curve_stats", "final_values"]

# The paper's rules first, in its order; legends and tables follow it.
RULE_ORDER = ("mean", "medoid", "krum", "multikrum", "geomed", "marmed", "meamed",
              "trmean", "phocas", "bulyan", "cclip")
#: What an eval line measures, as ``metric`` of the plots and tables.
METRICS = ("top1", "topk", "train_loss")

# ----------------------------------------------------------------- loading
def _read_log(path):
    """One run's log as a run dict, or None while it has no config line."""
    config, evals, done, skipped = None, {}, None, 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a crash
                skipped += 1
                continue
            kind = rec.get("type") if isinstance(rec, dict) else None
            if kind == "config" and config is None:
                config = rec
            elif kind == "eval" and isinstance(rec.get("round"), int) and all(
                    rec.get(m) is None or is_real(rec[m]) for m in METRICS):
                evals[rec["round"]] = rec  # a resumed run may repeat a round: keep the last
            elif kind == "done":
                done = rec
            else:
                skipped += 1
    if config is None:
        return None
    evals = [evals[r] for r in sorted(evals)]
    diverged = (done is not None and done.get("diverged_at") is not None) \
        or any(e.get("diverged") for e in evals)
    return {"run_id": config.get("run_id") or Path(path).stem, "path": Path(path),
            "config": config, "evals": evals, "done": done, "complete": done is not None,
            "diverged": bool(diverged), "skipped": skipped}


def _scan(results, figure):
    """(runs, paths of logs without a config line) of ``<results>/<figure>/``.

    Refuses (ValueError naming the files) logs that cannot be averaged
    together: a run of another figure, two logs of one arm's seed, or runs
    of one arm with other settings (a copy, a backup, an older setting), which
    the plot and the table would otherwise mix without a word."""
    runs, unreadable = [], []
    for path in sorted((Path(results) / figure).glob("*.jsonl")):
        run = _read_log(path)
        (runs if run is not None else unreadable).append(run or path)
    for run in runs:
        other = run["config"].get("figure", figure)
        if other != figure:
            raise ValueError(f"{run['path']} holds a run of figure {other!r}, not {figure!r}; "
                             "move it out of this folder")
    for arm in series(runs):
        _check_arm(arm)
    return runs, unreadable


def _check_arm(arm):
    first, seen = arm["runs"][0], {}
    for run in arm["runs"]:
        seed = run["config"].get("seed")
        if seed in seen:
            raise ValueError(f"{seen[seed]} and {run['path'].name} are both seed {seed} of "
                             f"{_arm_name(arm)}; keep one of them in the folder")
        seen[seed] = run["path"]
        have, want = run["config"], first["config"]
        # what decides a run's numbers (runlog's computation), but its seed
        keys = (set(have) | set(want)) - set(_IGNORED_KEYS) - set(_PRESENTATION_KEYS) - {"seed"}
        diff = _differences(have, want, keys, f"in {first['path'].name}")
        if diff:
            raise ValueError(f"{run['path']}: {_arm_name(arm)}'s runs differ in settings "
                             f"({diff}); a figure's folder holds one setting")


def load_runs(results, figure):
    """Runs logged for ``figure`` under ``results``, partial ones included.

    Each run is a dict: run_id, path, config (the config line), evals (eval
    lines by round), done (the done line or None), complete, diverged,
    skipped (unreadable lines, e.g. a torn last line). Logs without a config
    line yet are left out; a missing folder gives [].
    """
    return _scan(results, figure)[0]


# ------------------------------------------------------- grouping, statistics
def _natural(value):
    """Sort key putting None first, numbers by value, 'q=10' after 'q=2'."""
    if value is None:
        return ((0, 0.0, ""),)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ((1, float(value), ""),)
    parts = re.split(r"(\d+(?:\.\d+)?)", str(value))
    return tuple((1, float(p), "") if i % 2 else (2, 0.0, p.lower())
                 for i, p in enumerate(parts) if p)


def _rule_rank(rule):
    rule = str(rule).lower()
    return RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER)


def series(runs):
    """Runs grouped into arms keyed by (group, label, x), in legend order.

    Order: group, the reference first, then the paper's rule order, label, x.
    Each arm: {"key", "group", "label", "x", "reference", "rule", "runs"}.
    """
    arms = {}
    for run in runs:
        c = run["config"]
        key = tuple(json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v
                    for v in (c.get("group"), c.get("label", run["run_id"]), c.get("x")))
        arm = arms.setdefault(key, {"key": key, "group": key[0], "label": str(key[1]),
                                    "x": key[2], "reference": bool(c.get("reference")),
                                    "rule": str(c.get("rule", "")), "runs": []})
        arm["runs"].append(run)
    for arm in arms.values():
        arm["runs"].sort(key=lambda r: _natural(r["config"].get("seed")))
    return sorted(arms.values(), key=lambda a: (
        _natural(a["group"]), not a["reference"], _rule_rank(a["rule"]),
        _natural(a["label"]), _natural(a["x"])))


def _value(ev, metric):
    v = ev.get(metric)
    return np.nan if v is None else float(v)


def curve_stats(runs, metric):
    """(rounds, mean, min, max) over the runs at every evaluated round.

    A round's statistics use the runs that evaluated it (incomplete runs drop
    out after their last evaluation; null accuracies are ignored).
    """
    rounds = sorted({e["round"] for r in runs for e in r["evals"]})
    col = {rd: i for i, rd in enumerate(rounds)}
    m = np.full((len(runs), len(rounds)), np.nan)
    for i, run in enumerate(runs):
        for e in run["evals"]:
            m[i, col[e["round"]]] = _value(e, metric)
    with warnings.catch_warnings():  # an all-null column stays NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return (np.asarray(rounds), np.nanmean(m, 0), np.nanmin(m, 0), np.nanmax(m, 0))


def final_values(runs, metric):
    """(last round, values, runs used): the metric at the arm's last evaluated round.

    The last round is the latest any run of the arm evaluated; runs that did
    not reach it (incomplete) are left out of ``values``.
    """
    lasts = [r["evals"][-1]["round"] for r in runs if r["evals"]]
    if not lasts:
        return None, np.empty(0), []
    last = max(lasts)
    used = [r for r in runs if r["evals"] and r["evals"][-1]["round"] == last]
    return last, np.array([_value(r["evals"][-1], metric) for r in used]), used


def _arm_name(arm):
    extra = [f"group {arm['group']}"] if arm["group"] is not None else []
    extra += [f"x={arm['x']}"] if arm["x"] is not None else []
    return arm["label"] + (f" [{', '.join(extra)}]" if extra else "")


def missing_runs(runs, figure="", kind="curves", metric="top1"):
    """Messages naming what is missing, incomplete or left out, e.g.
    "fig03: MeaMed seed 4 incomplete (round 230/500)".

    Expected seeds: every seed seen in the figure, for every arm. A seed
    whose final ``metric`` is null is left out of the mean: said too.
    """
    seeds = sorted({r["config"].get("seed") for r in runs}, key=_natural)
    out = []
    for arm in series(runs):
        name = _arm_name(arm)
        have = {r["config"].get("seed") for r in arm["runs"]}
        out += [f"{figure}: {name} seed {s} missing" for s in seeds if s not in have]
        if kind == "final_vs_x" and arm["x"] is None and not arm["reference"]:
            out.append(f"{figure}: {name} has no x (not plotted)")
        for r in arm["runs"]:
            seed = r["config"].get("seed")
            if not r["complete"]:
                total = r["config"].get("rounds", "?")
                where = (f"round {r['evals'][-1]['round']}/{total}" if r["evals"]
                         else "no evaluation yet")
                out.append(f"{figure}: {name} seed {seed} incomplete ({where})")
            if r["skipped"]:
                out.append(f"{figure}: {r['path'].name}: {r['skipped']} unreadable line(s) skipped")
        last, _, used = final_values(arm["runs"], metric)
        out += [f"{figure}: {name} seed {r['config'].get('seed')}: {metric} null at round "
                f"{last} (left out of the mean)" for r in used
                if r["evals"][-1].get(metric) is None]
    return out
