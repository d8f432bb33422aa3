"""The round and scaling benchmarks run end to end on real MNIST and report
what they promise: ratios, phases, the unavoidable work, the throughput."""
import re

import pytest

from byzsgd import bench


@pytest.fixture
def mnist(data_root, monkeypatch):
    monkeypatch.setenv("BYZSGD_DATA", str(data_root))


def _number(pattern, text):
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in:\n{text}"
    return float(m.group(1))


def test_bench_round_reports_ratios_phases_and_floors(mnist, tmp_path, capsys):
    out = tmp_path / "round.txt"
    assert bench.main(["round", "--rules", "mean", "marmed", "--attacks", "none", "gaussian",
                       "--repeats", "2", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.strip() == capsys.readouterr().out.strip()
    assert "gradients: batched" in text and "cores usable" in text
    for rule in ("mean", "marmed"):
        for attack in ("none", "gaussian"):
            ratio = _number(rf"\n{rule}\s+{attack}\s+[\d.]+\s+([\d.]+)", text)
            assert ratio > 0
    for what in ("weight products", "float32 normals", "evaluation of the test set"):
        assert _number(rf"{what}.*?([\d.]+)x", text) > 0
    assert "709,692 float32 normals" in text          # 6 rows x d = 118,282
    assert _number(r"floor of a Gaussian-attack round.*: ([\d.]+)x", text) > 1


def test_bench_scaling_compares_one_process_with_two(mnist, capsys):
    assert bench.main(["scaling", "--jobs", "2", "--seconds", "1", "--rule", "mean",
                       "--attack", "none"]) == 0
    text = capsys.readouterr().out
    one = _number(r"1 process\(es\) at once:\s+([\d.]+) rounds/s", text)
    two = _number(r"2 process\(es\) at once:\s+([\d.]+) rounds/s", text)
    assert one > 0 and two > 0
    assert _number(r"throughput of 2 against 1: ([\d.]+)x", text) == pytest.approx(
        two / one, rel=0.02)
    assert len(re.search(r"2 process\(es\).*median round (.*) ms", text).group(1).split(",")) == 2


def test_bench_scaling_refuses_no_jobs(capsys):
    """Bad input: one line naming it, exit status 2, as `byzsgd run` does."""
    assert bench.main(["scaling", "--jobs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "byzsgd: error: --jobs=0 must be >= 1"


def test_bench_figure_times_the_runs_it_trains(mnist, tmp_path, capsys):
    args = ["figure", "fig02", "--jobs", "2", "--seeds", "0", "--rounds", "3",
            "--results", str(tmp_path)]
    assert bench.main(args) == 0
    text = capsys.readouterr().out
    assert re.search(r"fig02: 7 runs \(7 arms x 1 seeds\) x 3 rounds", text), text
    wall = _number(r"wall time (\d+) s", text)
    assert 0 < _number(r"per run .*median ([\d.]+) s", text) <= wall
    assert len(list((tmp_path / "fig02").glob("*.jsonl"))) == 7
    assert bench.main(args) == 0                      # all done: nothing to time
    assert "all 7 runs were already done" in capsys.readouterr().out
