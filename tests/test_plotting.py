"""byzsgd.plotting on synthetic logs: what is loaded, what is drawn, what is
written, what is reported missing."""
import json
import statistics

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex

from byzsgd import plotting
from synthetic_logs import DIVERGED_ACCURACY, accuracy_curve, write_run, write_scenario


@pytest.fixture
def scenario(tmp_path):
    info = write_scenario(tmp_path, "fig03", plot={"title": "MNIST with Gaussian"})
    return tmp_path, info


def _legend_texts(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()]


def _data_lines(ax):
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def test_load_runs_tolerates_partial_logs(scenario, tmp_path):
    results, info = scenario
    (results / "fig03" / "starting__seed9.jsonl").write_text('{"type": "conf')  # no config yet
    runs = plotting.load_runs(results, "fig03")
    assert len(runs) == len(info["paths"]) == 11
    torn = next(r for r in runs if r["run_id"] == "meamed__seed2")
    assert not torn["complete"] and torn["skipped"] == 1 and torn["done"] is None
    assert [e["round"] for e in torn["evals"]] == list(range(10, 61, 10))
    diverged = [r["run_id"] for r in runs if r["diverged"]]
    assert diverged == ["krum__seed2"]
    assert all(r["complete"] for r in runs if r is not torn)
    assert plotting.load_runs(results, "nothing-here") == []


def test_missing_runs_names_missing_incomplete_and_torn(scenario):
    results, _ = scenario
    msgs = plotting.missing_runs(plotting.load_runs(results, "fig03"), "fig03")
    assert msgs == ["fig03: Mean seed 2 missing",
                    "fig03: MeaMed seed 2 incomplete (round 60/100)",
                    "fig03: meamed__seed2.jsonl: 1 unreadable line(s) skipped"]


def test_curves_lines_labels_styles_and_bands(scenario):
    results, info = scenario
    fig = plotting.build_figure(plotting.load_runs(results, "fig03"))
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    lines = _data_lines(ax)
    labels = [ln.get_label() for ln in lines]
    assert labels == ["Mean (no failure)", "Mean", "Krum [1/3 diverged]", "MeaMed"]
    assert _legend_texts(fig) == labels
    assert [ln.get_linestyle() for ln in lines] == ["--", "-", "-", "-"]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 4  # every arm has >= 2 runs
    assert ax.get_title() == "MNIST with Gaussian"
    assert ax.get_ylabel() == "Top-1 accuracy"
    # The mean line at the last round is the mean of the complete runs' finals
    # (the diverged Krum seed contributes its post-divergence accuracy).
    for ln in lines:
        label = ln.get_label().split(" [")[0]
        assert ln.get_xdata()[-1] == 100
        assert ln.get_ydata()[-1] == pytest.approx(statistics.mean(info["finals"][label].values()))
    # The band of Krum spans the diverged seed's accuracy.
    krum = lines[2]
    band = bands[2].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(DIVERGED_ACCURACY)
    assert to_hex(krum.get_color()) == plotting.RULE_STYLES["krum"][0]
    assert krum.get_marker() == plotting.RULE_STYLES["krum"][1]


def test_incomplete_run_counts_until_it_stops(scenario):
    results, _ = scenario
    meamed = [r for r in plotting.load_runs(results, "fig03") if r["config"]["label"] == "MeaMed"]
    rounds, mean, lo, hi = plotting.curve_stats(meamed, "top1")
    at = {int(r): i for i, r in enumerate(rounds)}
    finals = [0.86, 0.87, 0.88]  # write_scenario: 0.80 + 0.03 * 2 + 0.01 * seed
    assert mean[at[60]] == pytest.approx(np.mean([accuracy_curve(60, 100, f) for f in finals]))
    assert mean[at[70]] == pytest.approx(np.mean([accuracy_curve(70, 100, f) for f in finals[:2]]))
    assert hi[at[60]] == pytest.approx(accuracy_curve(60, 100, 0.88))


def test_zoom_panel_from_config_and_overrides(tmp_path):
    write_scenario(tmp_path, "fig04", plot={"title": "MNIST with omniscient", "zoom": [0.8, 0.95]})
    runs = plotting.load_runs(tmp_path, "fig04")
    fig = plotting.build_figure(runs)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_title() == "(a) MNIST with omniscient"
    assert fig.axes[1].get_title() == "(b) MNIST with omniscient (zoomed)"
    assert fig.axes[1].get_ylim() == pytest.approx((0.8, 0.95))
    assert len(_data_lines(fig.axes[1])) == 4
    assert len(plotting.build_figure(runs, zoom=None).axes) == 1
    fig = plotting.build_figure(runs, zoom=[0.5, 0.9], title="other")
    assert fig.axes[1].get_ylim() == pytest.approx((0.5, 0.9))
    assert fig.axes[0].get_title() == "(a) other"


def test_styles_fixed_per_rule_and_variants_differ(tmp_path):
    for i, (label, rule) in enumerate([("Krum (q=2)", "krum"), ("Krum (q=8)", "krum"),
                                       ("MarMed", "marmed"), ("Mine", "my-rule")]):
        for seed in (0, 1):
            write_run(tmp_path, "fig10", label, seed, rule=rule, final=0.5 + 0.1 * i)
    lines = _data_lines(plotting.build_figure(plotting.load_runs(tmp_path, "fig10")).axes[0])
    assert [ln.get_label() for ln in lines] == ["Krum (q=2)", "Krum (q=8)", "MarMed", "Mine"]
    assert lines[0].get_linestyle() != lines[1].get_linestyle()
    assert lines[0].get_marker() == lines[1].get_marker() == "v"
    assert to_hex(lines[2].get_color()) == plotting.RULE_STYLES["marmed"][0]
    mine = plotting.rule_style("my-rule")
    assert mine == plotting.rule_style("My-Rule")  # deterministic, case-blind
    assert mine["color"] not in {c for c, _ in plotting.RULE_STYLES.values()}
    assert to_hex(lines[3].get_color()) == mine["color"]


def test_topk_metric_and_axis_label(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, "fig07", "MarMed", seed, rule="marmed", final=0.6, topk=3,
                  plot={"metric": "topk", "title": "CIFAR10 with gambler"})
    fig = plotting.build_figure(plotting.load_runs(tmp_path, "fig07"))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "Top-3 accuracy"
    assert _data_lines(ax)[0].get_ydata()[-1] == pytest.approx(0.65)  # topk = top1 + 0.05


def test_final_vs_x_points_at_x_with_means(tmp_path):
    finals = {}
    plot = {"kind": "final_vs_x", "xlabel": "q", "title": "Krum-based under bit-flip"}
    for label, rule, base in (("Krum", "krum", 0.2), ("Multi-Krum", "multikrum", 0.3)):
        for q in (1, 2, 4, 8):
            for seed in (0, 1, 2):
                final = base + 0.01 * q + 0.02 * seed
                diverged_at = 50 if (label, q, seed) == ("Krum", 8, 2) else None
                write_run(tmp_path, "fig08", label, seed, rule=rule, x=q, final=final,
                          diverged_at=diverged_at, plot=plot)
                finals.setdefault((label, q), []).append(
                    DIVERGED_ACCURACY if diverged_at else final)
    fig = plotting.build_figure(plotting.load_runs(tmp_path, "fig08"))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "q" and ax.get_ylabel() == "Final top-1 accuracy"
    bars = ax.containers
    assert [b.get_label() for b in bars] == ["Krum [1/12 diverged]", "Multi-Krum"]
    assert _legend_texts(fig) == [b.get_label() for b in bars]
    for (ln, _, _), label in zip(bars, ("Krum", "Multi-Krum")):
        assert list(ln.get_xdata()) == [1, 2, 4, 8]
        assert ln.get_ydata() == pytest.approx([np.mean(finals[(label, q)]) for q in (1, 2, 4, 8)])
    assert list(ax.get_xticks()) == [1, 2, 4, 8]
    assert ax.get_ylim() == pytest.approx((-0.02, 1.02))   # accuracy's whole range
    # Error bars span min-max over seeds; Krum q=8 reaches down to the diverged seed.
    segments = bars[0][2][0].get_segments()
    assert segments[-1][:, 1] == pytest.approx(sorted([min(finals[("Krum", 8)]),
                                                      max(finals[("Krum", 8)])]))
    assert min(finals[("Krum", 8)]) == DIVERGED_ACCURACY


def test_final_vs_x_skips_arms_without_evaluations_and_marks_unfinished_ones(tmp_path):
    """An x whose runs logged only their config line has no point (it
    crashed plot and report); one whose runs stopped early is annotated
    with the round its value is from."""
    plot = {"kind": "final_vs_x", "xlabel": "q"}
    for q in (1, 2, 4):
        for seed in (0, 1):
            path = write_run(tmp_path, "fig08", "Krum", seed, rule="krum", x=q, final=0.5,
                             plot=plot, stop_at=30 if q == 2 else None)
            if q == 4:   # only the config line
                path.write_text(path.read_text().splitlines()[0] + "\n")
    fig = plotting.build_figure(plotting.load_runs(tmp_path, "fig08"))
    ax = fig.axes[0]
    [bars] = ax.containers
    assert list(bars[0].get_xdata()) == [1, 2]
    assert [t.get_text() for t in ax.texts] == ["round 30"]


def test_groups_one_panel_per_group(tmp_path):
    plot = {"kind": "groups", "title": "MNIST, no failure, batch size varies"}
    for bs in (32, 64, 128):
        for label, rule in (("Mean", "mean"), ("Krum", "krum"), ("MeaMed", "meamed")):
            for seed in (0, 1):
                write_run(tmp_path, "fig09", label, seed, rule=rule, group=bs, batch_size=bs,
                          final=0.8 + bs / 1000, plot=plot)
    fig = plotting.build_figure(plotting.load_runs(tmp_path, "fig09"))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["batch size 32", "batch size 64", "batch size 128"]
    for ax, bs in zip(axes, (32, 64, 128)):
        lines = _data_lines(ax)
        assert [ln.get_label() for ln in lines] == ["Mean", "Krum", "MeaMed"]
        assert lines[0].get_ydata()[-1] == pytest.approx(0.8 + bs / 1000)
    assert fig._suptitle.get_text() == plot["title"]
    assert _legend_texts(fig) == ["Mean", "Krum", "MeaMed"]
    titled = plotting.build_figure(plotting.load_runs(tmp_path, "fig09"), group_title="b={group}")
    assert titled.axes[0].get_title() == "b=32"


def test_groups_legend_counts_divergence_over_all_panels(tmp_path):
    """One legend for the figure: one entry per rule, its count over every
    panel (it showed one entry per panel's count, with no panel named)."""
    plot = {"kind": "groups"}
    for bs, bad in ((32, {0}), (64, {0, 1, 2}), (128, set())):
        for seed in range(4):
            write_run(tmp_path, "fig09", "Krum", seed, rule="krum", group=bs, batch_size=bs,
                      plot=plot, diverged_at=50 if seed in bad else None)
            write_run(tmp_path, "fig09", "Mean", seed, group=bs, batch_size=bs, plot=plot)
    fig = plotting.build_figure(plotting.load_runs(tmp_path, "fig09"))
    assert sorted(_legend_texts(fig)) == ["Krum [4/12 diverged]", "Mean"]


def test_unknown_kind_and_bad_zoom_are_refused(scenario):
    runs = plotting.load_runs(scenario[0], "fig03")
    with pytest.raises(ValueError, match="curves"):
        plotting.build_figure(runs, kind="pie")
    with pytest.raises(ValueError, match="lo < hi"):
        plotting.build_figure(runs, zoom=[0.9, 0.8])


def test_curves_name_x_when_a_label_repeats(tmp_path):
    for q in (2, 4):
        write_run(tmp_path, "fig10", "MeaMed", 0, rule="meamed", x=q)
    lines = _data_lines(plotting.build_figure(plotting.load_runs(tmp_path, "fig10")).axes[0])
    assert [ln.get_label() for ln in lines] == ["MeaMed (x=2)", "MeaMed (x=4)"]


def test_plot_figure_writes_files_manifest_and_says_what_is_missing(scenario, capsys):
    results, _ = scenario
    paths = plotting.plot_figure("fig03", results)
    out = results / "plots"
    assert paths == [out / "fig03.png", out / "fig03.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 10_000
    assert paths[1].read_bytes()[:5] == b"%PDF-" and paths[1].stat().st_size > 5_000
    err = capsys.readouterr().err
    assert "fig03: MeaMed seed 2 incomplete (round 60/100)" in err
    assert "fig03: Mean seed 2 missing" in err
    manifest = json.loads((out / "fig03.json").read_text())
    assert manifest["source"] == "fig03" and len(manifest["missing"]) == 3
    # Deterministic output: plotting again gives the same bytes.
    first = [p.read_bytes() for p in paths]
    plotting.plot_figure("fig03", results, quiet=True)
    assert [p.read_bytes() for p in paths] == first


def test_plot_figure_from_another_figures_runs(scenario, tmp_path):
    results, _ = scenario
    paths = plotting.plot_figure("fig11", results, out=tmp_path / "elsewhere", formats=("png",),
                                 source="fig03", zoom=[0.8, 0.95], quiet=True)
    assert paths == [tmp_path / "elsewhere" / "fig11.png"]
    manifest = json.loads((tmp_path / "elsewhere" / "fig11.json").read_text())
    assert manifest["source"] == "fig03" and manifest["overrides"] == {"zoom": [0.8, 0.95]}
    assert not (results / "fig11").exists()
    with pytest.raises(FileNotFoundError, match="fig99"):
        plotting.plot_figure("fig99", results)


def test_logs_that_cannot_be_averaged_together_are_refused_naming_them(tmp_path):
    """A copy from another figure, a backup of a seed, a run of other settings:
    averaged or dropped without a word before."""
    for seed in (0, 1):
        write_run(tmp_path, "fig03", "MarMed", seed, rule="marmed")
    foreign = write_run(tmp_path, "fig02", "MarMed", 2, rule="marmed")
    moved = tmp_path / "fig03" / "from-fig02.jsonl"
    moved.write_text(foreign.read_text())
    with pytest.raises(ValueError, match="from-fig02.jsonl holds a run of figure 'fig02'"):
        plotting.load_runs(tmp_path, "fig03")
    moved.unlink()
    backup = tmp_path / "fig03" / "marmed__seed1.bak.jsonl"
    backup.write_text((tmp_path / "fig03" / "marmed__seed1.jsonl").read_text())
    with pytest.raises(ValueError, match="marmed__seed1.*are both seed 1 of MarMed"):
        plotting.load_runs(tmp_path, "fig03")
    backup.unlink()
    write_run(tmp_path, "fig03", "MarMed", 2, rule="marmed", rounds=60)
    with pytest.raises(ValueError, match="MarMed's runs differ in settings \\(rounds=60 there, "
                                         "100 in marmed__seed0.jsonl\\)"):
        plotting.plot_figure("fig03", tmp_path, quiet=True)


def test_report_says_why_a_figure_is_not_plotted_and_goes_on(tmp_path):
    write_run(tmp_path, "fig03", "MarMed", 0, rule="marmed")
    write_run(tmp_path, "fig03", "MarMed", 1, rule="marmed", rounds=60)
    write_run(tmp_path, "fig05", "MarMed", 0, rule="marmed")
    text = plotting.report(tmp_path, tmp_path / "out").read_text()
    assert "Not plotted: " in text and "differ in settings" in text
    assert "![fig05](plots/fig05.png)" in text


def test_an_eval_line_with_a_value_that_is_no_number_is_skipped_and_named(tmp_path, capsys):
    path = write_run(tmp_path, "fig03", "MarMed", 0, rule="marmed")
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace('"top1": 0.', '"top1": "abc", "was": 0.')
    path.write_text("\n".join(lines) + "\n")
    plotting.plot_figure("fig03", tmp_path)
    assert "marmed__seed0.jsonl: 1 unreadable line(s) skipped" in capsys.readouterr().err


def test_null_final_values_are_said_to_be_left_out(tmp_path):
    write_run(tmp_path, "fig03", "Krum", 0, rule="krum")
    path = write_run(tmp_path, "fig03", "Krum", 1, rule="krum")
    lines = path.read_text().splitlines()
    last = json.loads(lines[-2])
    lines[-2] = json.dumps({**last, "top1": None})
    path.write_text("\n".join(lines) + "\n")
    notes = plotting.missing_runs(plotting.load_runs(tmp_path, "fig03"), "fig03")
    assert notes == ["fig03: Krum seed 1: top1 null at round 100 (left out of the mean)"]


def test_metrics_the_logs_do_not_hold_are_refused_and_loss_is_labelled(scenario):
    runs = plotting.load_runs(scenario[0], "fig03")
    with pytest.raises(ValueError, match="metric='top3': the logs hold top1, topk, train_loss"):
        plotting.build_figure(runs, metric="top3")
    ax = plotting.build_figure(runs, metric="train_loss").axes[0]
    assert ax.get_ylabel() == "Training loss"


def test_one_seed_is_not_called_a_mean_over_seeds(tmp_path):
    write_run(tmp_path, "fig07", "MarMed", 0, rule="marmed")
    write_run(tmp_path, "fig07", "Mean", 0, reference=True)
    fig = plotting.build_figure(plotting.load_runs(tmp_path, "fig07"))
    assert fig.legends[0].get_title().get_text() == ("seed 0 (one run per arm); "
                                                     "dashed: no failure")
