"""The CLI end to end, through real subprocesses: train -> eval -> predict, and user errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits


def xception(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xception", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from conftest import TINY

    out = tmp_path_factory.mktemp("cli") / "run"
    sets = [a for k, v in TINY.items()
            for a in ("--set", f"model.{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}")]
    r = xception("train", "--epochs", "2", "--set", "data.image_size=16", *sets, "--out", out)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1].startswith("final val top-1: ")
    assert any(line.startswith("epoch   2 ") and "train loss" in line for line in lines)
    return out, float(lines[-1].split()[3].rstrip("%"))


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    d = load_digits()
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i in range(3):
        p = folder / f"digit{d.target[i]}.png"
        Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def test_train_writes_a_complete_run_folder(run_dir):
    out, acc = run_dir
    assert {p.name for p in out.iterdir()} == {
        "config.json", "metrics.jsonl", "metrics.csv", "curves.png", "model.safetensors",
        "checkpoint.pt"}
    assert 0 <= acc <= 100


def test_eval_reproduces_the_final_accuracy(run_dir):
    out, acc = run_dir
    for target in (out, out / "model.safetensors"):
        r = xception("eval", target)
        assert r.returncode == 0, r.stderr
        assert f"top-1 {acc:.2f}%" in r.stdout and "(359 images)" in r.stdout


def test_predict_prints_top_k_with_class_names(run_dir, digit_pngs):
    r = xception("predict", run_dir[0], *digit_pngs, "--top-k", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3
    for path, line in zip(digit_pngs, lines, strict=True):
        name, ranked = line.split(": ", 1)
        assert name == str(path)
        classes = [c.split(" (")[0] for c in ranked.split("  ")]
        assert len(classes) == 3 and set(classes) <= set("0123456789")


def assert_user_error(r: subprocess.CompletedProcess, message: str) -> None:
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr, r.stderr


def test_unknown_model_is_one_line_and_writes_nothing(tmp_path):
    assert_user_error(xception("train", "--model", "xceptoin", "--out", tmp_path / "r"),
                      "unknown model 'xceptoin'; available:")
    assert not (tmp_path / "r").exists()


def test_non_dividing_segments(tmp_path):
    assert_user_error(xception("train", "--set", "model.segments=3", "--out", tmp_path / "r"),
                      "segments=3 must divide")
    assert not (tmp_path / "r").exists()


def test_bad_setting_lists_valid_keys():
    assert_user_error(xception("train", "--set", "optimizer.lrr=1"), "valid: ['optimizer.name'")


def test_missing_and_corrupt_weights(tmp_path, digit_pngs):
    assert_user_error(xception("eval", tmp_path / "none.safetensors"), "does not exist")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x01\x02garbage")
    assert_user_error(xception("predict", bad, digit_pngs[0]), "is not a weights format xception reads")


def test_unreadable_image(run_dir, tmp_path, digit_pngs):
    """An unreadable file is listed and skipped, the others predicted, exit status 1; an input
    that does not exist is a user error (status 2) before any work."""
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    r = xception("predict", run_dir[0], digit_pngs[0], text)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert [line.split(": ")[0] for line in r.stdout.strip().splitlines()] == [str(digit_pngs[0])]
    assert f"cannot read {text}: " in r.stderr
    assert "predicted 1 of 2 images" in r.stderr and "exit status 1" in r.stderr
    assert_user_error(xception("predict", run_dir[0], tmp_path / "missing.png"), "does not exist")


def test_the_command_freezes_the_heap_after_the_work(monkeypatch):
    """``xception`` (the console script and ``python -m xception``) runs ``main``, then
    ``gc.freeze()``, so the interpreter's exit does not walk every tracked object again."""
    from pathlib import Path

    from xception.cli import main as cli

    events = []
    monkeypatch.setattr(cli, "main", lambda: events.append("main") or 3)
    monkeypatch.setattr(cli.gc, "freeze", lambda: events.append("freeze"))
    assert cli.console() == 3 and events == ["main", "freeze"]
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert 'xception = "xception.cli.main:console"' in pyproject  # the console script
    assert "console()" in (Path(cli.__file__).parents[1] / "__main__.py").read_text()
