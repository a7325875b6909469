"""`actrange bench --repeats`: whole runs in fresh processes and their summary."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from actrange.bench_repeats import child_arguments, closing_sentences, run_repeated, summarise
from actrange.bench_run import BenchSettings, run_benchmark
from actrange.cli import bench_settings, build_parser
from actrange.cli import main as cli_main
from tests.helpers import REAL_DATA
from tests.test_bench import TINY, tiny  # noqa: F401  (the fixture)


def _line(name: str, seconds: float, ratio: float | None, precision: str = "fp32") -> dict:
    return {"name": name, "precision": precision, "seconds_per_model_epoch": seconds,
            "x_faster_than_notebook": ratio, "percent_of_limit": 100 * 2.0 / seconds}  # fmt: skip


# two runs: (a) took 16 s, then 12 s; the group of 4 took 4 s, then 6 s (4.0x, then 2.0x)
RUNS = [
    {"lines": [_line("(a) notebook pipeline", 16.0, 1.0), _line("(c) engine G=4", 4.0, 4.0),
               _line("(c) engine G=4 bf16", 3.2, 5.0, "bf16")]},
    {"lines": [_line("(a) notebook pipeline", 12.0, 1.0), _line("(c) engine G=4", 6.0, 2.0),
               _line("(c) engine G=8 bf16", 2.4, 5.0, "bf16")]},
]  # fmt: skip


def test_the_summary_takes_each_lines_median_and_range_over_the_runs():
    summary = {entry["name"]: entry for entry in summarise(RUNS)}
    group = summary["(c) engine G=4"]
    assert group["runs"] == 2
    assert group["seconds_per_model_epoch"] == {"median": 5.0, "min": 4.0, "max": 6.0}
    assert group["x_faster_than_notebook"] == {"median": 3.0, "min": 2.0, "max": 4.0}
    assert group["percent_of_limit"] == {"median": pytest.approx(41.667, abs=1e-3),
                                         "min": pytest.approx(33.333, abs=1e-3),
                                         "max": 50.0}  # fmt: skip
    # a line whose name differs between runs is summarised over the runs that measured it
    assert summary["(c) engine G=8 bf16"]["runs"] == 1
    assert summary["(c) engine G=8 bf16"]["seconds_per_model_epoch"]["median"] == 2.4
    assert list(summary) == ["(a) notebook pipeline", "(c) engine G=4", "(c) engine G=4 bf16",
                             "(c) engine G=8 bf16"]  # fmt: skip


def test_without_the_notebook_the_ratio_has_no_spread():
    runs = [{"lines": [_line("(c) engine G=1", 5.0, None)]}]
    (entry,) = summarise(runs)
    assert entry["x_faster_than_notebook"] is None


def test_the_closing_sentences_name_the_fastest_fp32_line_and_the_fastest_of_all():
    sentences = closing_sentences(summarise(RUNS))
    assert sentences == [
        "fastest fp32 line by median: engine G=4, 3.00x (2.00x-4.00x) faster than the notebook"
        " pipeline",
        "fastest line by median: engine G=8 bf16, 5.00x (5.00x-5.00x) faster than the notebook"
        " pipeline",
    ]


def test_when_fp32_is_fastest_of_all_the_second_sentence_says_so():
    # bf16 emulated, as on a CPU without bf16 instructions: slower than (a) itself
    runs = [{"lines": [_line("(a) notebook pipeline", 16.0, 1.0), _line("(c) engine G=4", 4.0, 4.0),
                       _line("(c) engine G=4 bf16", 40.0, 0.4, "bf16")]}]  # fmt: skip
    assert closing_sentences(summarise(runs)) == [
        "fastest fp32 line by median: engine G=4, 4.00x (4.00x-4.00x) faster than the notebook"
        " pipeline",
        "fastest line by median: the same",
    ]


def test_a_runs_options_parse_back_to_the_same_settings(tmp_path):
    settings = BenchSettings(
        groups=[1, 8], batches=7, notebook=False, notebook_batches=30, processes=2,
        process_group=3, check_epochs=0, check_images=256,
    )  # fmt: skip
    options = child_arguments(settings, "cpu", tmp_path / "run.json")
    args = build_parser().parse_args(["bench", *options])
    assert bench_settings(args) == settings  # repeats 1: one run
    assert (args.device, args.out) == ("cpu", str(tmp_path / "run.json"))


def test_repeated_runs_are_summarised_and_every_run_is_kept(tiny, tmp_path, capsys):  # noqa: F811
    def in_this_process(settings, device_name, out):
        assert settings.repeats == 1
        return run_benchmark(settings, device_name, out)

    out = tmp_path / "bench.json"
    settings = replace(TINY, groups=[1], check_epochs=0, repeats=2)
    assert run_repeated(settings.validated(), "cpu", out, in_this_process) == 0

    document = json.loads(out.read_text())
    assert len(document["runs"]) == 2
    names = [line["name"] for line in document["runs"][0]["lines"]]
    assert [entry["name"] for entry in document["summary"]][: len(names)] == names
    for entry in document["summary"]:
        spread = entry["seconds_per_model_epoch"]
        assert spread["min"] <= spread["median"] <= spread["max"]
    printed = capsys.readouterr().out
    assert printed.count("--- run ") == 2
    assert "--- summary of 2 runs: median (smallest-largest)" in printed
    assert printed.rstrip().splitlines()[-1].startswith("fastest line by median: ")


def test_a_failed_run_stops_the_series_and_writes_nothing(tmp_path, capsys):
    calls = []

    def failing(settings, device_name, out):
        calls.append(out)
        return 3

    out = tmp_path / "bench.json"
    assert run_repeated(replace(TINY, repeats=3), "cpu", out, failing) == 3
    assert len(calls) == 1 and not out.exists()
    assert "benchmark run 1 failed (exit status 3)" in capsys.readouterr().err


def test_too_many_repeats_is_a_usage_error(capsys):
    assert cli_main(["bench", "--repeats", "21"]) == 2
    assert capsys.readouterr().err.strip() == "actrange: error: --repeats: 21 is outside 1..20"


@pytest.mark.slow
def test_repeats_run_the_real_command_in_fresh_processes(tmp_path, capsys):
    assert REAL_DATA.exists(), f"{REAL_DATA} is missing: apt-get install dataset-fashion-mnist"
    out = tmp_path / "bench.json"
    status = cli_main(["bench", "--groups", "1", "--batches", "1", "--notebook-batches", "1",
                       "--check-epochs", "0", "--repeats", "2", "--out", str(out)])  # fmt: skip
    assert status == 0
    document = json.loads(out.read_text())
    assert len(document["runs"]) == 2
    assert all(run["command"][1:3] == ["bench", "--groups"] for run in document["runs"])
    assert Path(document["runs"][0]["command"][0]).name == "cli.py"  # python -m actrange.cli
    assert "--- summary of 2 runs" in capsys.readouterr().out
