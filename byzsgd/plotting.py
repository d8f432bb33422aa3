"""The paper's figures from the runner's JSON-lines logs (format: README.md, Logs).

Conventions, the same in every figure:
- a line is the mean over seeds of one arm (label); the shaded band spans the
  min-max over those seeds (error bars in "final_vs_x" plots likewise);
- the no-failure reference (config "reference": true) is dashed;
- each rule has a fixed colour and marker (``RULE_STYLES``; other rules get a
  deterministic one from their name); several arms of one rule in a figure
  differ by line style and shade;
- a legend entry "Krum [3/10 diverged]" counts the arm's diverged seeds; their
  accuracy after divergence is plotted as logged;
- ``plot.zoom = [lo, hi]`` adds a second panel "(b) ... (zoomed)" with that
  y-range (Figs. 4, 5, 11-15).
Plots go to ``<results>/plots/<figure>.{png,pdf}`` unless ``out`` says
otherwise, beside a ``<figure>.json`` manifest (source, overrides, missing
runs) from which ``report`` rebuilds derived figures. Matplotlib is used
without pyplot, so no display or global backend is involved.
"""
import json
import sys
import textwrap
import zlib
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

# Log reading lives in results.py; re-exported because plots are read from here.
from .results import (METRICS, _natural, _scan, curve_stats, final_values,  # noqa: F401
                      load_runs, missing_runs, series)

__all__ = ["RULE_STYLES", "load_runs", "missing_runs", "series", "curve_stats",
           "final_values", "rule_style", "plot_options", "build_figure",
           "plot_figure", "report", "plots_dir"]

# rule -> (colour, marker); colours are matplotlib's tab10, mean in black.
RULE_STYLES = {
    "mean": ("#000000", "o"), "medoid": ("#8c564b", "s"), "krum": ("#d62728", "v"),
    "multikrum": ("#ff7f0e", "^"), "geomed": ("#2ca02c", "D"), "marmed": ("#1f77b4", "P"),
    "meamed": ("#9467bd", "X"), "trmean": ("#bcbd22", "<"), "phocas": ("#17becf", ">"),
    "bulyan": ("#e377c2", "h"), "cclip": ("#7f7f7f", "*"),
}
_FALLBACK_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
                     "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363")
_FALLBACK_MARKERS = ("p", "d", "8", "H", "1", "2", "3", "4")
# Several arms of one rule in a figure: k-th arm's line style and shade
# (negative darkens, positive lightens). Dashed is kept for the reference.
_VARIANT_STYLES = ("-", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))
_VARIANT_SHADES = (0.0, -0.35, 0.4, -0.6, 0.6)
# Bands of many arms stack up to an opaque blob: thin them as arms are added.
_BAND_ALPHA = 0.18
_BAND_ALPHA_TOTAL = 0.7
_MARKERS_PER_LINE = 8
RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
      "legend.fontsize": 10, "xtick.labelsize": 10, "ytick.labelsize": 10,
      "lines.linewidth": 1.6, "lines.markersize": 5, "axes.grid": True,
      "grid.alpha": 0.3, "savefig.dpi": 150, "pdf.fonttype": 42}
# Plot-dict defaults; keys beyond README's Logs section are optional extras a figure
# spec (or an override) may set.
PLOT_DEFAULTS = {"kind": "curves", "metric": "top1", "zoom": None, "title": None,
                 "xlabel": None, "ylabel": None, "group_title": None, "legend_cols": None}
# No dates or versions in the files: the same logs give the same bytes.
_SAVE_METADATA = {"png": {"Software": None}, "svg": {"Date": None},
                  "pdf": {"CreationDate": None, "Producer": None}}


# ------------------------------------------------------------------ styles
def rule_style(rule):
    """{"color", "marker"} of a rule: fixed for the paper's rules, else from a
    CRC32 of the name (stable across runs and machines, unlike hash())."""
    rule = str(rule).lower()
    if rule in RULE_STYLES:
        color, marker = RULE_STYLES[rule]
    else:
        h = zlib.crc32(rule.encode())
        color = _FALLBACK_COLOURS[h % len(_FALLBACK_COLOURS)]
        marker = _FALLBACK_MARKERS[(h // len(_FALLBACK_COLOURS)) % len(_FALLBACK_MARKERS)]
    return {"color": color, "marker": marker}


def _shade(color, amount):
    rgb = np.array(to_rgb(color))
    target = 1.0 if amount > 0 else 0.0
    return tuple(rgb + (target - rgb) * abs(amount))


def _arm_styles(arms):
    """Line style of each arm: rule colour/marker; dashed for the reference;
    the k-th non-reference arm of a rule gets the k-th variant style."""
    seen, styles = {}, []
    for arm in arms:
        st = rule_style(arm["rule"])
        if arm["reference"]:
            st["linestyle"] = "--"
        else:
            k = seen.get(arm["rule"], 0)
            seen[arm["rule"]] = k + 1
            st["linestyle"] = _VARIANT_STYLES[k % len(_VARIANT_STYLES)]
            st["color"] = _shade(st["color"], _VARIANT_SHADES[k % len(_VARIANT_SHADES)])
        styles.append(st)
    return styles


def _legend_label(arm, with_x=False):
    label = arm["label"] + (f" (x={arm['x']})" if with_x and arm["x"] is not None else "")
    bad = sum(r["diverged"] for r in arm["runs"])
    return label + (f" [{bad}/{len(arm['runs'])} diverged]" if bad else "")


# ----------------------------------------------------------------- drawing
def plot_options(runs, **overrides):
    """The figure's plot dict: defaults < the runs' config "plot" < overrides.

    "ylabel" defaults to "Top-1 accuracy" / "Top-<config topk> accuracy" by
    metric, "title" to the config's figure.
    """
    first = runs[0]["config"] if runs else {}
    opts = {**PLOT_DEFAULTS, **(first.get("plot") or {}), **overrides}
    if opts["metric"] not in METRICS:
        raise ValueError(f"metric={opts['metric']!r}: the logs hold {', '.join(METRICS)} "
                         f"(topk is top-{first.get('topk', 'k')} here)")
    k = 1 if opts["metric"] == "top1" else first.get("topk", 1)
    opts["ylabel"] = opts["ylabel"] or (
        "Training loss" if opts["metric"] == "train_loss" else f"Top-{k} accuracy")
    opts["title"] = opts["title"] or first.get("figure", "")
    if opts["zoom"] is not None:
        zoom = [float(v) for v in np.ravel(opts["zoom"])]
        if len(zoom) != 2 or not zoom[0] < zoom[1]:
            raise ValueError(f"zoom must be [lo, hi] with lo < hi, got {opts['zoom']!r}")
        opts["zoom"] = zoom
    return opts


def _draw_arms(ax, arms, opts, with_x=False):
    """One mean line per arm and its min-max band; returns the lines."""
    lines, alpha = [], min(_BAND_ALPHA, _BAND_ALPHA_TOTAL / max(1, len(arms)))
    for i, (arm, st) in enumerate(zip(arms, _arm_styles(arms))):
        rounds, mean, lo, hi = curve_stats(arm["runs"], opts["metric"])
        step = max(1, len(rounds) // _MARKERS_PER_LINE)
        line, = ax.plot(rounds, mean, label=_legend_label(arm, with_x),
                        markevery=(i % step, step), **st)
        if len(arm["runs"]) > 1:
            ax.fill_between(rounds, lo, hi, color=st["color"], alpha=alpha,
                            linewidth=0, label="_band")
        lines.append(line)
    ax.set_xlabel(opts["xlabel"] or "Round")
    ax.set_ylabel(opts["ylabel"])
    return lines


def _legend(fig, lines, opts, spread, reference, runs):
    """One legend below the panels, as many columns (<= 4) as fit the width;
    beside them, on a widened figure, when that would take over 5 rows."""
    labels = [ln.get_label() for ln in lines]
    entry = 6.0 * max(map(len, labels)) + 45  # points, at the 10 pt legend font
    fit = int(fig.get_figwidth() * 72 // entry)
    cols = opts["legend_cols"] or max(1, min(4, len(lines), fit))
    loc = "outside lower center"
    if -(-len(lines) // cols) > 5 and not opts["legend_cols"]:
        loc, cols = "outside right upper", 1
        fig.set_figwidth(fig.get_figwidth() + entry / 72)
    seeds = {r["config"].get("seed") for r in runs}
    note = (f"mean over seeds, {spread}: min\u2013max" if len(seeds) > 1 else
            f"seed {next(iter(seeds))} (one run per arm)") + \
        ("; dashed: no failure" if reference else "")
    fig.legend(lines, labels, loc=loc, ncols=cols, title=note,
               title_fontsize=RC["legend.fontsize"])


def _title(ax, text, width=52):
    """A panel title, wrapped: one line would overrun a 6.4-inch panel."""
    ax.set_title(textwrap.fill(text, width))


def _ambiguous_x(arms):
    labels = [(a["group"], a["label"]) for a in arms]
    return len(set(labels)) < len(labels)


def _draw_curves(fig, runs, opts):
    arms = series(runs)
    panels = 1 if opts["zoom"] is None else 2
    fig.set_size_inches(6.4 * panels, 5.2)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    lines = [_draw_arms(ax, arms, opts, _ambiguous_x(arms)) for ax in axes][0]
    if panels == 2:
        _title(axes[0], f"(a) {opts['title']}")
        _title(axes[1], f"(b) {opts['title']} (zoomed)")
        axes[1].set_ylim(*opts["zoom"])
    else:
        _title(axes[0], opts["title"])
    _legend(fig, lines, opts, "band", any(a["reference"] for a in arms), runs)


def _draw_final_vs_x(fig, runs, opts):
    fig.set_size_inches(6.4, 5.2)
    ax = fig.subplots()
    by_label = {}
    for arm in series(runs):
        by_label.setdefault(arm["label"], []).append(arm)
    handles, ticks = [], set()
    # the figure's last round: a point whose arm stopped earlier is marked
    end = max((e["round"] for r in runs for e in r["evals"][-1:]), default=None)
    for arms, st in zip(by_label.values(), _arm_styles([a[0] for a in by_label.values()])):
        merged = dict(arms[0], runs=[r for a in arms for r in a["runs"]])
        if all(a["x"] is None for a in arms) and arms[0]["reference"]:  # a level to beat
            values = final_values(merged["runs"], opts["metric"])[1]
            if np.isfinite(values).any():
                handles.append(ax.axhline(np.nanmean(values), label=_legend_label(merged), **st))
            continue
        pts = []
        for a in arms:
            last, values, _ = final_values(a["runs"], opts["metric"])
            if a["x"] is not None and np.isfinite(values).any():   # no evaluation yet: no point
                pts.append((float(a["x"]), values, last))
        pts.sort(key=lambda p: p[0])
        if pts:
            x, mean = np.array([p[0] for p in pts]), np.array([np.nanmean(v) for _, v, _ in pts])
            err = [mean - [np.nanmin(v) for _, v, _ in pts],
                   [np.nanmax(v) for _, v, _ in pts] - mean]
            handles.append(ax.errorbar(x, mean, yerr=err, label=_legend_label(merged),
                                       capsize=3, **st))
            for xi, mi, (_, _, last) in zip(x, mean, pts):
                if last != end:   # not a final value: say which round it is
                    ax.annotate(f"round {last}", (xi, mi), textcoords="offset points",
                                xytext=(4, 4), fontsize=7, color=st.get("color"))
            ticks.update(x)
    if ticks and all(float(v).is_integer() for v in ticks):
        ax.set_xticks(sorted(ticks))
    ax.set_xlabel(opts["xlabel"] or "x")
    # accuracies live in [0, 1]: a row of crashed runs at 0 must not be
    # auto-scaled into a band of +-0.04 that reads like noise
    if opts["metric"] != "train_loss":
        ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(f"Final {opts['ylabel'][0].lower()}{opts['ylabel'][1:]}")
    _title(ax, opts["title"])
    _legend(fig, handles, opts, "bars", any(a[0]["reference"] for a in by_label.values()),
            runs)


def _group_title(opts, group, runs):
    if opts["group_title"]:
        return opts["group_title"].format(group=group)
    if all(r["config"].get("batch_size") == group for r in runs):
        return f"batch size {group}"  # Fig. 9: one panel per batch size
    return str(group)


def _draw_groups(fig, runs, opts):
    groups = {}
    for run in runs:
        groups.setdefault(run["config"].get("group"), []).append(run)
    keys = sorted(groups, key=_natural)
    cols = 2 if len(keys) == 4 else min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig.set_size_inches(4.6 * cols, 3.8 * rows + 1.4)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    handles, runs_of = {}, {}   # by label: one legend entry, its runs in every panel
    for ax, key in zip(axes, keys):
        arms = series(groups[key])
        for arm, line in zip(arms, _draw_arms(ax, arms, opts)):
            handles.setdefault(arm["label"], line)
            runs_of.setdefault(arm["label"], []).extend(arm["runs"])
        _title(ax, _group_title(opts, key, groups[key]))
    for label, line in handles.items():   # divergence counted over all panels
        line.set_label(_legend_label({"label": label, "x": None, "runs": runs_of[label]}))
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(opts["title"])
    _legend(fig, list(handles.values()), opts, "band",
            any(r["config"].get("reference") for r in runs), runs)


KINDS = {"curves": _draw_curves, "final_vs_x": _draw_final_vs_x, "groups": _draw_groups}


def build_figure(runs, **overrides):
    """The matplotlib Figure for ``runs`` (see module docstring for conventions).

    ``overrides`` (zoom, title, kind, metric, xlabel, ...) take precedence over
    the runs' config "plot" dict.
    """
    if not runs:
        raise ValueError("build_figure needs at least one run")
    opts = plot_options(runs, **overrides)
    if opts["kind"] not in KINDS:
        raise ValueError(f"unknown plot kind {opts['kind']!r}; valid kinds: {sorted(KINDS)}")
    with matplotlib.rc_context(RC):
        fig = Figure(layout="constrained")
        KINDS[opts["kind"]](fig, runs, opts)
    return fig


def plots_dir(results="results"):
    """Default output folder of the plots: ``<results>/plots``."""
    return Path(results) / "plots"


def plot_figure(figure, results="results", out=None, formats=("png", "pdf"), *,
                source=None, quiet=False, **overrides):
    """Plot ``figure`` from its logs; return the paths written.

    Reads ``<results>/<source or figure>/*.jsonl``; writes
    ``<out>/<figure>.<fmt>`` per format and ``<out>/<figure>.json`` (how it
    was made and what is missing); ``out`` defaults to ``<results>/plots``.
    ``overrides`` (e.g. zoom=[0.8, 0.95]) beat the config's plot dict. What is
    missing or incomplete is printed (unless quiet) and kept in the manifest.
    """
    src = source or figure
    runs, unreadable = _scan(results, src)
    if not runs:
        raise FileNotFoundError(f"no run logs for {src!r} in {Path(results) / src}")
    opts = plot_options(runs, **overrides)
    notes = [f"{figure}: {p.name} has no config line yet (skipped)" for p in unreadable]
    notes += missing_runs(runs, figure, opts["kind"], opts["metric"])
    fig = build_figure(runs, **overrides)
    out = Path(out) if out is not None else plots_dir(results)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with matplotlib.rc_context(RC):
        for fmt in formats:
            path = out / f"{figure}.{fmt}"
            fig.savefig(path, format=fmt, metadata=_SAVE_METADATA.get(fmt))
            paths.append(path)
    manifest = {"figure": figure, "source": src, "overrides": overrides,
                "files": [p.name for p in paths], "missing": notes}
    text = json.dumps(manifest, indent=1, default=lambda v: getattr(v, "tolist", lambda: str(v))())
    (out / f"{figure}.json").write_text(text + "\n", encoding="utf-8")
    if not quiet:
        for note in notes:
            print(note, file=sys.stderr)
    return paths


def report(results="results", out=None):
    """Write the results index (see ``byzsgd.report.report``); return its path."""
    from . import report as _report  # report builds on this module
    return _report.report(results, out)
