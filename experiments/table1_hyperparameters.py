"""Table 1: the experiment summary - dataset sizes and default hyperparameters
per dataset - built from the figure modules' SPECs, not copied from the paper.

Fixed: nothing is trained. For each (dataset, model) the figures use, the
row shows the setting most of its figures share (learning rate gamma, rounds,
batch size per worker, evaluation metric, optimizer), the train/test sizes
read from the data files and the model's parameter count d.
Varies: nothing; figures that depart from a row's defaults (a Spec field or
an arm's batch size or gamma, e.g. Fig. 9) are listed under the table.
Run: ``byzsgd run table1 [--data-dir D]`` or ``python experiments/table1_hyperparameters.py``.
"""
import argparse
from collections import Counter

import numpy as np

from byzsgd import data
from byzsgd.experiment import figures, load_spec

COLUMNS = ("Dataset", "# train", "# test", "\u03b3", "# rounds", "Batch size",
           "Evaluation metric", "Optimizer", "Model", "d")


def figure_specs():
    """The distinct SPECs of the figure modules (derived figures share their source's)."""
    specs = {}
    for name in figures():
        if name.startswith("fig"):
            spec = load_spec(name)
            specs.setdefault(spec.figure, spec)
    return list(specs.values())


def _optimizer(spec):
    params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in sorted(spec.optimizer_params.items()))
    return spec.optimizer + (f" ({params})" if params else "")


def _settings(spec):
    """The Table 1 columns a figure fixes, as {column: value}."""
    return {"\u03b3": f"{spec.lr:g}", "# rounds": spec.rounds, "Batch size": spec.batch_size,
            "Evaluation metric": f"top-{spec.topk} accuracy", "Optimizer": _optimizer(spec)}


def _arm_departures(spec):
    """Notes for arms that override the batch size or gamma."""
    notes = []
    for field, column in (("batch_size", "batch size"), ("lr", "\u03b3")):
        values = sorted({getattr(a, field) for a in spec.arms if getattr(a, field) is not None})
        if values:
            notes.append(f"{spec.figure}: {column} per arm " + ", ".join(f"{v:g}" for v in values))
    return notes


def parameter_count(model, input_shape):
    """d: the number of parameters of ``model`` on inputs of ``input_shape`` (C, H, W)."""
    import mxnet as mx

    from byzsgd import models
    net = models.get_model(model)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1,) + tuple(input_shape)))
    return sum(int(np.prod(p.shape)) for p in net.collect_params().values())


def rows(data_dir=None, specs=None):
    """(rows as {column: value}, notes on departures) over ``specs`` (default: every figure)."""
    groups = {}
    for spec in specs or figure_specs():
        groups.setdefault((spec.dataset, spec.model), []).append(spec)
    out, notes = [], []
    for (dataset, model), group in groups.items():
        settings = [_settings(s) for s in group]
        common = {col: Counter(s[col] for s in settings).most_common(1)[0][0]
                  for col in settings[0]}
        for spec, s in zip(group, settings):
            notes += [f"{spec.figure}: {col} {s[col]}" for col in s if s[col] != common[col]]
            notes += _arm_departures(spec)
        x_train, _ = data.load_raw(dataset, data_dir, train=True)   # downloads if missing
        x_test, _ = data.load_raw(dataset, data_dir, train=False)
        out.append({"Dataset": data.DATASETS[dataset].title, "# train": f"{len(x_train):,}",
                    "# test": f"{len(x_test):,}", **common, "Model": model.upper(),
                    "d": f"{parameter_count(model, x_train.shape[1:]):,}",
                    "figures": sorted(s.figure for s in group)})
    return out, notes


def format_table(table, notes=()):
    """Markdown table of ``rows()``, with its figures and the departures below."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in table]
    lines += [""] + [f"{r['Dataset']}: {', '.join(r['figures'])}" for r in table]
    if notes:
        lines += ["", "Departures from the defaults above:"] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def main(argv=None):
    """Print Table 1 (``--data-dir``: folder holding mnist/ and cifar10/)."""
    parser = argparse.ArgumentParser(prog="byzsgd run table1",
                                     description="Table 1: experiment summary (trains nothing: "
                                                 "the run options do not apply)")
    parser.add_argument("--data-dir", metavar="D", help="default $BYZSGD_DATA")
    args = parser.parse_args(argv)
    print(format_table(*rows(args.data_dir)))
    return 0


if __name__ == "__main__":
    main()
