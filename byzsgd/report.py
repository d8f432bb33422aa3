"""The results index: every figure plotted so far, each with a table of final
accuracies, rebuilt from the run logs alone.

Figures are the folders of ``<results>`` holding ``*.jsonl`` logs, plus the
derived figures (e.g. Fig. 11 drawn from Fig. 2's runs) recorded by a
manifest ``<results>/plots/<figure>.json`` of an earlier ``plot_figure``
call; every figure is re-plotted with the source and overrides its manifest
records. Final accuracy of an arm: mean +- sample standard deviation (ddof=1)
over the seeds that reached the arm's last evaluated round (below the run
length when no seed finished); runs that stopped earlier count as incomplete
and stay out of the mean. A figure whose logs cannot be plotted (e.g. runs
of other settings mixed into one arm) gets the reason in its section.
"""
import json
import os
from pathlib import Path

import numpy as np

from .plotting import plot_figure, plot_options, plots_dir
from .results import METRICS, _natural, _scan, final_values, series

__all__ = ["figures", "final_table", "report"]

_HEADER = """# byzsgd results

Rebuilt from the run logs in `{results}` by `byzsgd report`.
Plots: line = mean over seeds, shaded band = min\u2013max over seeds, dashed =
no-failure reference; "[k/n diverged]" counts an arm's diverged seeds.
Tables: final {what} = mean \u00b1 sample standard deviation (ddof=1) over the
seeds that reached the arm's last evaluated round (*Round*: the run length,
or less when no seed of the arm finished); *Used* of *Runs* logged went into
the mean; runs that stopped before *Round*, or whose value there is null, stay
out of it (listed under the table).
"""


def figures(results="results"):
    """[(figure, source, overrides)] of every figure with logs, in natural order.

    A figure folder with ``*.jsonl`` logs is plotted from itself; a manifest
    in ``<results>/plots`` names the source and overrides of its figure (a
    derived figure's source must still have logs).
    """
    root = Path(results)
    logged = {p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.jsonl"))} \
        if root.is_dir() else set()
    found = {f: (f, {}) for f in logged}
    for path in sorted(plots_dir(results).glob("*.json")):
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # not one of ours, or half written: the logs still rule
        if m.get("figure") == path.stem and m.get("source") in logged:
            found[path.stem] = (m["source"], m.get("overrides") or {})
    return [(f, *found[f]) for f in sorted(found, key=_natural)]


def final_table(runs, metric="top1"):
    """One row per arm (legend order): label, group, x, round, mean, std, used,
    runs, diverged, incomplete — final ``metric`` at the arm's last evaluated round."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: the logs hold {', '.join(METRICS)}")
    rows = []
    for arm in series(runs):
        last, values, used = final_values(arm["runs"], metric)
        finite = values[np.isfinite(values)]
        rows.append({
            "label": arm["label"], "group": arm["group"], "x": arm["x"],
            "reference": arm["reference"], "round": last,
            "mean": float(finite.mean()) if finite.size else float("nan"),
            "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
            "used": int(finite.size), "runs": len(arm["runs"]),
            "diverged": sum(r["diverged"] for r in arm["runs"]),
            "incomplete": sum(not r["complete"] for r in arm["runs"])})
    return rows


def _cell(value):
    return str(value).replace("|", "\\|")


def _table(rows, metric_name):
    """Markdown table of ``final_table`` rows; group/x columns only when used."""
    extra = [k for k in ("group", "x") if any(r[k] is not None for r in rows)]
    head = ["Arm"] + [k.capitalize() for k in extra] + \
        ["Round", f"Final {metric_name} (mean \u00b1 std)", "Used", "Runs", "Diverged", "Incomplete"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        acc = "no evaluation yet" if r["round"] is None else \
            "no finite value (every one null)" if not r["used"] else (
            f"{r['mean']:.4f} \u00b1 " + (f"{r['std']:.4f}" if r["used"] > 1 else "n/a"))
        label = r["label"] + (" (reference)" if r["reference"] else "")
        cells = [label] + [r[k] for k in extra] + \
            [r["round"], acc, r["used"], r["runs"], r["diverged"], r["incomplete"]]
        out.append("| " + " | ".join(_cell("" if c is None else c) for c in cells) + " |")
    return out


def _section(figure, source, overrides, results, out_dir):
    """Markdown lines of one figure: heading, image, table, what is missing;
    the reason instead when its logs cannot be plotted."""
    try:
        runs = _scan(results, source)[0]
        if runs:
            paths = plot_figure(figure, results, out_dir / "plots", source=source, quiet=True,
                                **overrides)
    except ValueError as err:
        return [f'<a id="{figure}"></a>', "", f"## {figure}", "", f"Not plotted: {err}", ""]
    if not runs:
        return [f'<a id="{figure}"></a>', "", f"## {figure}", "", "No readable run logs yet.", ""]
    opts = plot_options(runs, **overrides)
    missing = json.loads((out_dir / "plots" / f"{figure}.json").read_text("utf-8"))["missing"]
    links = {p.suffix[1:]: Path(os.path.relpath(p, out_dir)).as_posix() for p in paths}
    lines = [f'<a id="{figure}"></a>', "", f"## {figure}: {opts['title']}", ""]
    lines += [f"Runs of `{source}`; overrides: `{json.dumps(overrides)}`.", ""] \
        if source != figure or overrides else []
    lines += [f"![{figure}]({links['png']})", ""] if "png" in links else []
    lines += [" ".join(f"[{fmt.upper()}]({link})" for fmt, link in links.items()), ""]
    lines += _table(final_table(runs, opts["metric"]), opts["ylabel"].lower()) + [""]
    if missing:
        lines += ["Missing or incomplete:", ""] + [f"- {m}" for m in missing] + [""]
    return lines


def report(results="results", out=None):
    """Re-plot every figure found under ``results`` and write the index.

    ``out``: the Markdown file to write, or a folder for ``REPORT.md``;
    default ``<results>/REPORT.md``. Images go to ``plots/`` beside it (so
    ``<results>/plots`` by default; the results folder is only read when
    ``out`` is elsewhere) and are linked relatively. Returns the Markdown
    file's path.
    """
    if not Path(results).is_dir():
        raise FileNotFoundError(f"results folder {str(results)!r} does not exist "
                                "(byzsgd run FIGURE writes its logs there; see --results)")
    out = Path(out) if out is not None else Path(results) / "REPORT.md"
    out = out if out.suffix.lower() == ".md" else out / "REPORT.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    found = figures(results)
    lines = _HEADER.format(results=results, what="accuracy").splitlines() + [""]
    lines += ["Figures: " + (", ".join(f"[{f}](#{f})" for f, _, _ in found) or "none yet"), ""]
    for figure, source, overrides in found:
        lines += _section(figure, source, overrides, results, out.parent)
    out.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return out
