"""The benchmark: settings validation, ratio arithmetic, and the CLI end to end on a tiny run."""

import json
import subprocess
import sys

import pytest

from xception.bench import BenchSettings, Entry, format_table, ratios
from xception.errors import ConfigError


def test_settings_reject_unknown_modes_and_contenders():
    with pytest.raises(ConfigError, match="mode"):
        BenchSettings(modes=("infer1", "fast"))
    with pytest.raises(ConfigError, match="contender"):
        BenchSettings(contenders=("ours", "resnet"))
    with pytest.raises(ConfigError, match="dtype"):
        BenchSettings(dtype="fp16")
    with pytest.raises(ConfigError, match="batch"):
        BenchSettings(batch=0)


def test_ratios_are_our_time_over_the_peers():
    results = {"infer1": {"ours": Entry(median_ms=30.0), "ours_opt": Entry(median_ms=10.0),
                          "timm": Entry(median_ms=100.0), "inception": Entry(median_ms=40.0)},
               "train": {"ours": Entry(median_ms=50.0), "timm": Entry(error="skipped: x")}}
    r = ratios(results)
    assert r["infer1"]["ours_opt"] == {"time_vs_timm": 0.1, "time_vs_inception": 0.25}
    assert r["infer1"]["ours"]["time_vs_timm"] == 0.3
    assert "train" not in r  # no peer was measured


def test_benchmark_cli_end_to_end(tmp_path):
    """Tiny model and peers at their minimum input size, one repetition: every path runs and the
    JSON holds the numbers the table shows."""
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "xception", "benchmark", "--model", "xception_small",
         "--image-size", "75", "--batch", "2", "--reps", "1", "--warmup", "1", "--threads", "1",
         "--num-classes", "10", "--modes", "infer1,inferN,train", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["settings"]["model"] == "xception_small"
    assert report["environment"]["torch"]
    res = report["results"]
    for mode in ("infer1", "inferN", "train"):
        assert res[mode]["ours"]["median_ms"] > 0
        assert res[mode]["inception"]["median_ms"] > 0
    assert res["infer1"]["ours_opt"]["median_ms"] > 0
    assert res["train"]["ours_opt"]["error"].startswith("skipped")
    assert res["train"]["ours"]["saved_mb_per_image"] > 0
    assert "vs timm" in r.stdout and "xception_small vs peers" in r.stdout
    assert report["ratios"]["inferN"]["ours_opt"]["time_vs_inception"] > 0
    if report["environment"]["timm"]:
        assert res["train"]["timm"]["median_ms"] > 0
    assert format_table(report).splitlines()[0] in r.stdout


def test_benchmark_cli_rejects_bad_settings_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "xception", "benchmark", "--contenders", "resnet",
                        "--out", str(tmp_path / "x.json")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert "contender" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_gpu_check_script_dry_run(tmp_path):
    """benchmarks/gpu_check.py end to end on CPU (interpreter, tiny shapes; several minutes)."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    r = subprocess.run([sys.executable, str(script), "--dry-run", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["sections"]["kernels"]["all_ok"] and report["sections"]["model"]["all_ok"]
    assert report["sections"]["train_eager"]["results"]["train"]["ours"]["median_ms"] > 0
    assert "goals" in report


def test_training_step_updates_with_fit_s_fused_kernel(monkeypatch):
    """The benchmark times the optimizer fit uses (fused SGD on CPU), not a slower stand-in."""
    import torch

    from xception.bench.timing import _train_step

    calls = []
    real = torch._fused_sgd_
    monkeypatch.setattr(torch, "_fused_sgd_", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x, y = torch.randn(2, 3, 5, 5), torch.tensor([0, 1])
    model(x)
    step = _train_step(model, x, y, BenchSettings(device="cpu"), torch.device("cpu"))
    step()
    assert calls


def test_side_by_side_training_times_every_model_in_turns(monkeypatch, tiny):
    import xception.bench.timing as timing
    from xception import create_model

    order: list[str] = []
    time_round_robin = timing._time_round_robin

    def recording(steps, entries, settings, device, log):
        wrapped = {name: (lambda name=name, step=step: (order.append(name), step())[1])
                   for name, step in steps.items()}
        return time_round_robin(wrapped, entries, settings, device, log)

    monkeypatch.setattr(timing, "_time_round_robin", recording)
    models = {"a": create_model("xception_small", num_classes=4, in_chans=1, **tiny),
              "b": create_model("xception_small", num_classes=4, in_chans=1, residual=False, **tiny)}
    rates = timing.side_by_side_training(models, (1, 32, 32), 4, batch=4, reps=3, warmup=1)
    assert set(rates) == {"a", "b"} and all(rate > 0 for rate in rates.values())
    assert order == ["a", "b"] * 3  # in turns, one step each per repetition
