"""byzsgd report: the index lists exactly the figures with logs, and its
tables hold the hand-computed final accuracies."""
import re
import statistics

from byzsgd import plotting, report
from synthetic_logs import write_run, write_scenario


def _section(text, figure):
    return text.split(f'<a id="{figure}"></a>')[1].split("<a id=")[0]


def _rows(text, figure):
    """[[cells]] of the table in ``figure``'s section, header left out."""
    return [[c.strip() for c in line.strip().strip("|").split(" | ")]
            for line in _section(text, figure).splitlines()
            if line.startswith("| ") and not line.startswith("| Arm")]


def test_report_table_numbers(tmp_path):
    info = write_scenario(tmp_path, "fig03", plot={"title": "MNIST with Gaussian"})
    path = plotting.report(tmp_path)
    assert path == tmp_path / "REPORT.md"
    rows = {r[0]: r[1:] for r in _rows(path.read_text(), "fig03")}
    assert list(rows) == ["Mean (no failure) (reference)", "Mean", "Krum", "MeaMed"]
    for arm, cells in rows.items():
        finals = list(info["finals"][arm.replace(" (reference)", "")].values())
        rnd, acc, used, runs, diverged, incomplete = cells
        mean, std = statistics.mean(finals), statistics.stdev(finals)
        assert rnd == "100"
        assert acc == f"{mean:.4f} \u00b1 {std:.4f}"
        assert int(used) == len(finals)
    assert rows["Krum"][2:] == ["3", "3", "1", "0"]     # used, runs, diverged, incomplete
    assert rows["MeaMed"][2:] == ["2", "3", "0", "1"]
    assert rows["Mean"][2:] == ["2", "2", "0", "0"]
    text = path.read_text()
    assert "- fig03: MeaMed seed 2 incomplete (round 60/100)" in text
    assert "- fig03: Mean seed 2 missing" in text


def test_report_lists_exactly_the_figures_present(tmp_path):
    write_scenario(tmp_path, "fig03")
    for q in (2, 4):
        for seed in (0, 1):
            write_run(tmp_path, "fig08", "Krum", seed, rule="krum", x=q,
                      plot={"kind": "final_vs_x", "xlabel": "q"})
    (tmp_path / "empty").mkdir()
    (tmp_path / "fig05").mkdir()
    (tmp_path / "fig05" / "starting__seed0.jsonl").write_text("")  # no config line yet
    plotting.plot_figure("fig11", tmp_path, source="fig03", zoom=[0.8, 0.95], quiet=True)
    out = tmp_path / "site"
    path = plotting.report(tmp_path, out)
    assert path == out / "REPORT.md"
    text = path.read_text()
    assert re.findall(r'<a id="([^"]+)"></a>', text) == ["fig03", "fig05", "fig08", "fig11"]
    assert "No readable run logs yet." in _section(text, "fig05")
    assert "Runs of `fig03`" in text and '"zoom": [0.8, 0.95]' in text
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert images == ["plots/fig03.png", "plots/fig08.png", "plots/fig11.png"]
    assert all((out / img).is_file() for img in images)
    # the results folder is read, not written: only the fig11 plot made above is there
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["fig11.json", "fig11.pdf",
                                                                      "fig11.png"]
    # final_vs_x: one row per (label, x), with an x column.
    assert [r[:3] for r in _rows(text, "fig08")] == [["Krum", "2", "100"], ["Krum", "4", "100"]]
    assert "| Arm | X | Round |" in _section(text, "fig08")


def test_figures_and_final_table_api(tmp_path):
    write_scenario(tmp_path, "fig02")
    assert report.figures(tmp_path) == [("fig02", "fig02", {})]
    rows = report.final_table(plotting.load_runs(tmp_path, "fig02"))
    assert [r["label"] for r in rows] == ["Mean (no failure)", "Mean", "Krum", "MeaMed"]
    assert report.figures(tmp_path / "absent") == []


def test_report_says_when_every_value_is_null(tmp_path):
    """Logs from elsewhere may hold null (non-finite) values: an arm whose
    every final value is null is said to be so, not "no evaluation yet"."""
    for seed in (0, 1):
        path = write_run(tmp_path, "fig03", "Mean", seed)
        lines = path.read_text().splitlines()
        path.write_text("\n".join(re.sub(r'"top1": [0-9.e-]+', '"top1": null', ln)
                                  for ln in lines) + "\n")
    write_run(tmp_path, "fig03", "MarMed", 0, rule="marmed")
    rows = {r[0]: r[1:] for r in _rows(plotting.report(tmp_path).read_text(), "fig03")}
    assert rows["Mean"][1] == "no finite value (every one null)"
    assert rows["MarMed"][1].startswith("0.9")
