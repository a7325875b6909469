"""The speed benchmark: its arithmetic against hand values, and a tiny run end to end."""

import json

import numpy as np
import pytest
import torch

from actrange import bench, bench_run
from actrange.bench import (
    Line,
    NotebookDataset,
    flop_per_image,
    matmul_peak,
    measure_engine,
    seconds_per_model_epoch,
)
from actrange.bench_precision import CheckSettings, format_check, precision_check
from actrange.bench_report import closing_sentence, format_report
from actrange.bench_run import BenchSettings, limit_seconds, line_figures, run_benchmark
from actrange.data import normalise
from actrange.devicedata import DeviceData
from actrange.errors import UsageError
from tests.helpers import REAL_DATA, synthetic_dataset

# forward multiply-adds x 2 per layer: conv1 28*28*8*9 = 56,448, conv2 14*14*16*8*9 = 225,792,
# conv3 7*7*32*16*9 = 225,792, conv4 5*5*64*32*9 = 460,800, conv5 3*3*64*64*9 = 331,776,
# lin1 576*64 = 36,864, lin2 64*32 = 2,048, lin3 32*10 = 320: 1,339,840 -> 2,679,680 FLOP.
# Backward is twice that, less conv1's input gradient (the images need none): 112,896.
FORWARD_FLOP = 2_679_680
TRAIN_STEP_FLOP = 3 * FORWARD_FLOP - 112_896  # 7,926,144


TINY = BenchSettings(groups=[1, 2], batches=1, notebook_batches=1, check_epochs=1, check_images=128)


@pytest.fixture
def tiny(monkeypatch):
    """Synthetic data (6 batches: one loader pass covers warm-up and the timed step), a small
    matmul for the peak, and one thread, which keeps the run quick on a busy machine."""
    monkeypatch.setattr(bench_run, "load_fashion_mnist", lambda: synthetic_dataset(768, 64))
    monkeypatch.setattr(bench, "MATMUL_SIDE", {"cpu": 128, "cuda": 128})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_flop_per_image_is_the_hand_count():
    flop = flop_per_image()
    assert 7.5e6 <= flop <= 8.5e6
    assert flop == TRAIN_STEP_FLOP


def test_seconds_per_model_epoch_extrapolates_steps_and_divides_by_group():
    assert seconds_per_model_epoch(2.0, 20, 1) == pytest.approx(46.9)  # 0.1 s a step * 469
    assert seconds_per_model_epoch(2.0, 20, 4) == pytest.approx(11.725)
    # 0.5 s happen once per epoch: (2.0 / 20 * 469 + 0.5) / 2
    assert seconds_per_model_epoch(2.5, 20, 2, once_per_epoch=0.5) == pytest.approx(23.7)


def test_line_figures_ratios_limit_and_costs_by_hand():
    notebook = Line("(a) notebook pipeline", 1, "fp32", steps=1, seconds=0.5, peak_memory_bytes=1)
    engine_line = Line("(c) engine G=2", 2, "fp32", 1, 0.6, 1, statistics_seconds=0.1,
                       evaluation_seconds=0.4)  # fmt: skip
    # limit: 60,000 images * 1e6 FLOP / 1e9 FLOP/s = 60 s per model-epoch
    figures = line_figures(engine_line, notebook, flop=1e6, peaks={"fp32": 1e9})

    model_epoch = (0.5 * 469 + 0.1) / 2  # 117.3
    assert figures["seconds_per_model_epoch"] == pytest.approx(model_epoch)
    assert figures["images_per_second"] == pytest.approx(60_000 / model_epoch)
    assert figures["x_faster_than_notebook"] == pytest.approx(0.5 * 469 / model_epoch)
    assert figures["percent_of_limit"] == pytest.approx(100 * 60 / model_epoch)
    assert figures["statistics_percent_of_epoch"] == pytest.approx(100 * 0.1 / (2 * model_epoch))
    assert figures["evaluation_seconds_per_model"] == pytest.approx(0.2)
    assert line_figures(engine_line, None, 1e6, {"fp32": 1e9})["x_faster_than_notebook"] is None


def test_a_precision_slower_than_fp32_is_limited_by_fp32s_rate():
    # bf16 emulated at 1e6 FLOP/s: the step could run in fp32 at 1e9, 60 s per model-epoch
    line = Line("(c) engine G=1 bf16", 1, "bf16", steps=1, seconds=0.128, peak_memory_bytes=1)
    peaks = {"fp32": 1e9, "bf16": 1e6}
    figures = line_figures(line, None, flop=1e6, peaks=peaks)
    assert figures["seconds_per_model_epoch"] == pytest.approx(60.032)  # 0.128 * 469
    assert figures["percent_of_limit"] == pytest.approx(100 * 60 / 60.032)
    # a faster reduced precision keeps its own rate: 60,000 images * 1e6 FLOP / 2e9 = 30 s
    assert limit_seconds(1e6, {"fp32": 1e9, "bf16": 2e9}, "bf16") == pytest.approx(30.0)


def test_closing_sentence_names_the_fastest_line_other_than_the_notebook():
    def figures(name, seconds, ratio, percent):
        return {"name": name, "seconds_per_model_epoch": seconds,
                "x_faster_than_notebook": ratio, "percent_of_limit": percent}  # fmt: skip

    lines = [
        figures("(a) notebook pipeline", 4.3, 1.0, 13.5),
        figures("(b) in-memory StudyCNN", 2.0, 2.15, 29.0),
        figures("(c) engine G=16", 1.0, 4.3, 58.0),
        figures("(c) engine G=4", 1.5, 2.87, 38.7),
    ]
    assert closing_sentence(lines) == (
        "best: engine G=16 is 4.3x faster than the notebook pipeline, "
        "at 58% of the arithmetic limit"
    )
    without_notebook = [dict(f, x_faster_than_notebook=None) for f in lines[1:]]
    assert closing_sentence(without_notebook) == (
        "best: engine G=16 at 1 s per model-epoch, 58% of the arithmetic limit "
        "(notebook not measured)"
    )


def test_notebook_dataset_converts_like_totensor_and_normalize():
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1], images[1, 5, 7] = 255, 51, 102
    dataset = NotebookDataset(torch.from_numpy(images), torch.tensor([3, 9]), mean=0.5, std=0.5)

    image, label = dataset[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert label == 3 and isinstance(label, int)
    assert image[0, 0, 0] == 1.0 and image[0, 0, 2] == -1.0
    assert image[0, 0, 1] == pytest.approx(-0.6)  # 51 / 255 = 0.2
    expected = normalise(torch.from_numpy(images), 0.5, 0.5)  # [2, 28, 28]
    assert all(torch.equal(dataset[i][0][0], expected[i]) for i in range(2))
    assert len(dataset) == 2


def test_tiny_benchmark_writes_every_line_and_prints_one_row_each(tiny, tmp_path, capsys):
    out = tmp_path / "bench" / "speed.json"
    assert run_benchmark(TINY, "cpu", out) == 0

    document = json.loads(out.read_text())
    names = [f["name"] for f in document["lines"]]
    assert names[:4] == ["(a) notebook pipeline", "(b) in-memory StudyCNN", "(c) engine G=1",
                         "(c) engine G=2"]  # fmt: skip
    # bf16 at the group size that was the faster of the two in fp32
    fp32_lines = document["lines"][2:4]
    fastest = min(fp32_lines, key=lambda f: f["seconds_per_model_epoch"])["group"]
    # then the same group size with PyTorch's operations in place of the compiled CPU kernels
    assert names[4:] == [
        f"(c) engine G={fastest} bf16",
        f"(c) engine G={fastest}, no compiled kernels",
    ]
    assert document["flop_per_image"] == TRAIN_STEP_FLOP
    assert document["peak_flop_per_second"]["fp32"] > 0
    assert document["settings"]["batches"] == 1 and document["test_images"] == 64
    for figures in document["lines"]:
        for key in ("seconds", "seconds_per_model_epoch", "images_per_second",
                    "x_faster_than_notebook", "percent_of_limit", "peak_memory_bytes"):  # fmt: skip
            assert figures[key] > 0, (figures["name"], key)
        assert figures["images_per_second"] * figures["seconds_per_model_epoch"] == pytest.approx(
            60_000
        )
    assert document["lines"][0]["x_faster_than_notebook"] == 1.0
    engine_lines = document["lines"][2:]
    assert [(f["group"], f["precision"]) for f in engine_lines] == [(1, "fp32"), (2, "fp32"),
                                                                    (fastest, "bf16"),
                                                                    (fastest, "fp32")]  # fmt: skip
    assert document["environment"]["cpu_kernels"].startswith("compiled with")
    # the CPU's vector instructions decide the sums' order, so the record names them
    capability = torch.backends.cpu.get_cpu_capability()
    assert (
        document["device"] == document["environment"]["device"] == f"cpu (1 threads, {capability})"
    )
    check = document["precision_check"]
    assert (check["epochs"], check["images"]) == (1, 128)
    assert len(check["fp32"]["test_accuracy"]) == len(check["bf16"]["test_accuracy"]) == 4
    assert all(f["statistics_seconds"] > 0 and f["evaluation_seconds"] > 0 for f in engine_lines)

    printed = capsys.readouterr().out
    assert printed.rstrip("\n") == format_report(document)  # a stored document prints the same
    table_rows = [row for row in printed.splitlines() if row.startswith("(")]
    assert [row.split("  ")[0].strip() for row in table_rows] == names
    assert document["best"].startswith("best: ")


def test_without_the_notebook_ratios_are_not_available_and_no_json_is_written(
    tiny, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    settings = BenchSettings(groups=[1], batches=1, notebook=False, check_epochs=0)
    assert run_benchmark(settings, "cpu", None) == 0

    printed = capsys.readouterr().out
    rows = [row for row in printed.splitlines() if row.startswith("(")]
    # (b); the engine in fp32, in bf16 and in fp32 without the compiled CPU kernels
    assert [row[:3] for row in rows] == ["(b)", "(c)", "(c)", "(c)"]
    assert "precision check" not in printed
    assert all(" n/a " in row for row in rows)
    assert "(notebook not measured)" in printed
    assert list(tmp_path.iterdir()) == []


def test_the_engine_line_in_bf16_runs_its_own_precision(tiny):
    data = DeviceData(bench_run.load_fashion_mnist(), torch.device("cpu"))
    line = measure_engine(data, group=2, batches=1, precision="bf16")
    assert (line.name, line.group, line.precision, line.steps) == (
        "(c) engine G=2 bf16",
        2,
        "bf16",
        1,
    )
    assert line.seconds > 0 and line.statistics_seconds > 0 and line.evaluation_seconds > 0


def test_the_matmul_side_stops_growing_once_a_product_is_slow(monkeypatch):
    # products of side 256 take 0.01 s, of 512 and more 0.1 s: past the 0.05 s probe budget
    probes = []

    def fake_seconds(side, device, dtype, calls):
        probes.append((side, calls))
        return 0.01 if side < 512 else 0.1

    monkeypatch.setattr(bench, "_matmul_seconds", fake_seconds)
    peak = matmul_peak(torch.device("cpu"), "bf16", side=2048)
    assert probes == [(256, 2), (512, 2), (512, 4)]
    assert peak == pytest.approx(2 * 512**3 / 0.1)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_matmul_peak_is_positive_and_leaves_the_tf32_flag_alone(precision):
    before = torch.backends.cuda.matmul.allow_tf32
    assert matmul_peak(torch.device("cpu"), precision, side=64) > 0
    assert torch.backends.cuda.matmul.allow_tf32 == before


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"groups": []}, "at least one group"),
        ({"groups": [1, 0]}, "group size 0 is outside"),
        ({"groups": [4097]}, "group size 4097 is outside"),
        ({"process_group": 0}, "group size 0 is outside"),
        ({"batches": 0}, "--batches: 0 is outside 1..469"),
        ({"batches": 470}, "--batches: 470 is outside 1..469"),
        ({"notebook_batches": 0}, "--notebook-batches: 0 is outside 1..469"),
        ({"processes": -1}, "--processes: -1 is outside 0..64"),
        ({"check_epochs": 21}, "--check-epochs: 21 is outside 0..20"),
        ({"check_images": 127}, "--check-images: 127 is outside 128..60000"),
        ({"check_images": 60_001}, "--check-images: 60001 is outside 128..60000"),
    ],
)
def test_bad_settings_are_usage_errors_before_any_data_is_loaded(changes, problem, monkeypatch):
    monkeypatch.setattr(bench_run, "load_fashion_mnist", lambda: pytest.fail("loaded data"))
    with pytest.raises(UsageError, match=problem):
        run_benchmark(BenchSettings(**changes), "cpu", None)


def test_settings_drop_repeated_group_sizes_and_keep_their_order():
    assert BenchSettings(groups=[4, 1, 4, 16, 1]).validated().groups == [4, 1, 16]


def test_an_unknown_device_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(bench_run, "load_fashion_mnist", lambda: pytest.fail("loaded data"))
    with pytest.raises(UsageError, match="CUDA is not available"):
        run_benchmark(BenchSettings(groups=[1], batches=1), "cuda", None)


def test_the_precision_check_of_fp32_against_itself_finds_no_difference(tiny):
    dataset = bench_run.load_fashion_mnist()
    data = DeviceData(dataset, torch.device("cpu"))
    check = precision_check(dataset, data, ["fp32"], CheckSettings(epochs=1, images=256))
    assert check["runs"] == ["relu [-1, 1]", "tanh [-1, 1]", "relu [-5, 5]", "tanh [-5, 5]"]
    assert (check["epochs"], check["images"]) == (1, 256)
    # trained twice from the same seed and batch order: the same numbers
    assert check["largest_accuracy_difference"] == {"fp32": 0.0}
    assert all(0 <= accuracy <= 100 for accuracy in check["fp32"]["test_accuracy"])


def test_the_precision_check_trains_no_more_images_than_there_are(tiny):
    dataset = bench_run.load_fashion_mnist()  # 768 training images
    data = DeviceData(dataset, torch.device("cpu"))
    check = precision_check(dataset, data, ["bf16"], CheckSettings(epochs=1, images=10_000))
    assert check["images"] == 768
    assert 0 <= check["largest_accuracy_difference"]["bf16"] <= 100


def test_the_precision_check_prints_one_aligned_row_per_run():
    check = {
        "runs": ["relu [-1, 1]", "tanh [-5, 5]"],
        "epochs": 2,
        "images": 10_000,
        "fp32": {"test_accuracy": [71.5, 80.25], "train_loss": [1.0, 0.5]},
        "bf16": {"test_accuracy": [71.0, 80.5], "train_loss": [1.0, 0.5]},
        "largest_accuracy_difference": {"bf16": 0.5},
    }
    assert format_check(check) == [
        "precision check: the study's 2 runs, 2 epoch(s) on the first 10,000 training images; "
        "final test accuracy (%):",
        "  run                    fp32         bf16  bf16 - fp32",
        "  relu [-1, 1]          71.50        71.00        -0.50",
        "  tanh [-5, 5]          80.25        80.50        +0.25",
        "  largest difference from fp32: bf16 0.50 points",
    ]


@pytest.mark.slow
def test_the_processes_line_trains_both_processes_and_adds_up_their_models(tmp_path):
    # the worker processes are spawned, so they load the real data (CI installs it)
    assert REAL_DATA.exists(), f"{REAL_DATA} is missing: apt-get install dataset-fashion-mnist"
    out = tmp_path / "speed.json"
    settings = BenchSettings(
        groups=[1], batches=1, notebook=False, processes=2, process_group=2, check_epochs=0
    )
    assert run_benchmark(settings, "cpu", out) == 0
    lines = json.loads(out.read_text())["lines"]
    assert [line["name"] for line in lines][-2:] == [
        "(c) engine 2 processes x G=2",
        "(c) engine 2 processes x G=2 bf16",
    ]
    assert lines[-1]["precision"] == "bf16"
    together = lines[-2]
    assert together["group"] == 4 and together["steps"] == 1
    assert together["statistics_seconds"] > 0 and together["evaluation_seconds"] > 0
    assert together["seconds_per_model_epoch"] > 0 and together["peak_memory_bytes"] > 0
