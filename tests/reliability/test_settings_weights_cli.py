"""Bad settings, weights files and command lines, one table: each case builds its input in tmp_path.

The outcome of a bad input is exit status 2 with one error line holding the fragments (the key or
tensor, the file), and nothing written (the paths in ``absent``); a good input's outcome is status 0
and the fragments in what it printed. CLI cases run ``xception.cli.main.main`` in this process,
except the one that needs a UTF-8 stdout of its own (``Sub``); ``Py`` cases call the Python API,
a ``XceptionError`` counting as status 2.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, TINY_RUN, cli_env, save_png

import xception
from xception.cli.main import main
from xception.errors import ConfigError, XceptionError

NAMES = ["ant", "bee", "cat"]
PRE = {"image_size": 16, "in_chans": 3}
KEY = "stem.conv1.weight"                     # the tensor the bad weights cases damage
BAD_NAME = os.fsdecode(b"bad\xff.png")       # a file name that is not UTF-8 (lone surrogate)


# ---- what a case runs ---------------------------------------------------------------------------

@dataclass
class Cli:
    """``xception ARGS`` in this process."""
    args: list[str]


@dataclass
class Sub:
    """``python -m xception ARGS`` with ``PYTHONIOENCODING=utf-8``: strict UTF-8 output."""
    args: list[str]


@dataclass
class Py:
    """A Python call; its return value is what it printed."""
    call: Callable[[], object]


def run(what: Cli | Sub | Py, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one call."""
    if isinstance(what, Sub):
        env = {**cli_env(), "PYTHONIOENCODING": "utf-8"}
        proc = subprocess.run([sys.executable, "-m", "xception", *what.args], capture_output=True,
                              env=env, timeout=300)
        return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")
    if isinstance(what, Py):
        try:
            return 0, str(what.call()), ""
        except XceptionError as e:
            return 2, "", str(e)
    capsys.readouterr()
    try:
        rc = main(what.args)
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


# ---- inputs -------------------------------------------------------------------------------------

def tiny_model() -> torch.nn.Module:
    return xception.create_model("xception_small", **TINY, num_classes=3, min_input_size=8)


def weights(tmp: Path, change: Callable[[dict], None] | None = None,
            meta: dict[str, str] | None = None) -> Path:
    """A tiny model's weights file (3 classes, 16 px preprocessing) and an image beside it;
    ``change`` edits its tensors in place, ``meta`` replaces metadata fields (raw strings)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = tmp / "w.safetensors"
    xception.save_weights(tiny_model(), path, class_names=NAMES, preprocess=PRE)
    save_png(tmp / "img.png", 0)
    if change or meta:
        with safe_open(str(path), "pt") as f:
            old = f.metadata()
        tensors = load_file(path)
        if change:
            change(tensors)
        save_file(tensors, path, metadata={**old, **(meta or {})})
    return path


def nan_at(key: str) -> Callable[[dict], None]:
    def change(tensors: dict) -> None:
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = float("nan")
    return change


def cast_floats(dtype: torch.dtype) -> Callable[[dict], None]:
    def change(tensors: dict) -> None:
        tensors.update({k: v.to(dtype) for k, v in tensors.items() if v.is_floating_point()})
    return change


def predict(change=None, meta=None, *extra: str) -> Callable[[Path], Cli]:
    return lambda tmp: Cli(["predict", str(weights(tmp, change, meta)), str(tmp / "img.png"),
                            "--device", "cpu", *extra])


def convert(change=None, meta=None) -> Callable[[Path], Cli]:
    return lambda tmp: Cli(["convert", str(weights(tmp, change, meta)), str(tmp / "out.safetensors"),
                            "--quiet"])


def train(*args: str, config: bytes | None = None) -> Callable[[Path], Cli]:
    """``xception train`` of a tiny model into tmp/run; ``config``: a --config file's bytes."""
    def build(tmp: Path) -> Cli:
        extra = []
        if config is not None:
            (tmp / "c.json").write_bytes(config)
            extra = ["--config", str(tmp / "c.json")]
        sets = [a for s in TINY_RUN for a in ("--set", s)]
        return Cli(["train", *sets, *extra, *args, "--out", str(tmp / "run")])
    return build


def resume_latin1(tmp: Path) -> Cli:
    run_dir = tmp / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_bytes(b'{"data": {"root": "caf\xe9"}}')  # Latin-1, not UTF-8
    return Cli(["train", "--resume", str(run_dir)])


def load_latin1(tmp: Path) -> Py:
    (tmp / "c.json").write_bytes(b'{"data": {"root": "caf\xe9"}}')
    return Py(lambda: xception.config.RunConfig.load(tmp / "c.json"))


def bare_state_dict_nan(tmp: Path) -> Py:
    state = tiny_model().state_dict()
    nan_at("head.classifier.weight")(state)
    torch.save(state, tmp / "bare.pth")
    return Py(lambda: xception.load_weights(tiny_model(), tmp / "bare.pth"))


def timm_legacy_int64(tmp: Path) -> Py:
    """The tiny model's tensors under timm legacy_xception's names, one cast to int64."""
    from xception.weights import timm

    model = tiny_model()
    blocks = timm._blocks(model)
    state = {timm._legacy_key(k, blocks, "fc"): v for k, v in model.state_dict().items()}
    state["conv1.weight"] = state["conv1.weight"].to(torch.int64)
    torch.save(state, tmp / "legacy.pth")
    return Py(lambda: xception.load_weights(tiny_model(), tmp / "legacy.pth"))


def keras_h5_nan(tmp: Path) -> Py:
    """The tiny model's tensors as a Keras 2 HDF5 weights file, block1_conv1's kernel NaN."""
    h5py = pytest.importorskip("h5py")
    from xception.weights import keras

    model = tiny_model()
    own, auto, names = model.state_dict(), {"conv": 0, "bn": 0}, []
    with h5py.File(tmp / "k.h5", "w") as f:
        for slot in keras.keras_slots(model):
            name = slot.name
            if name is None:  # residual shortcuts: Keras' automatic names, in creation order
                n, auto[slot.kind] = auto[slot.kind], auto[slot.kind] + 1
                name = {"conv": "conv2d", "bn": "batch_normalization"}[slot.kind] + (f"_{n}" if n else "")
            group, variables = f.create_group(name), []
            for var, (attr, perm) in keras._TARGETS[slot.kind].items():
                t = own[f"{slot.module}.{attr}"]
                if perm is not None and t.dim() == len(perm):
                    t = t.permute(*np.argsort(perm).tolist())  # back to Keras' HWIO
                array = t.numpy().copy()
                if name == "block1_conv1":
                    array.flat[0] = np.nan
                group.create_dataset(var, data=array)
                variables.append(var.encode())
            group.attrs["weight_names"] = np.array(variables)
            names.append(name.encode())
        f.attrs["layer_names"] = np.array(names)
    return Py(lambda: xception.load_weights(tiny_model(), tmp / "k.h5"))


def header_0x80(tmp: Path) -> Cli:
    """A project file whose header length ends in byte 0x80: its first byte is a pickle's."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = weights(tmp)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    for pad in range(256):
        save_file(tensors, path, metadata={**meta, "pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            return Cli(["predict", str(path), str(tmp / "img.png"), "--device", "cpu"])
    raise AssertionError("no padding gives a header length ending in 0x80")


def predict_non_utf8_name(tmp: Path) -> Sub:
    path = weights(tmp)
    save_png(tmp / BAD_NAME, 0)
    return Sub(["predict", str(path), str(tmp / BAD_NAME), "--device", "cpu"])


def runlog_non_utf8_name(tmp: Path) -> Py:
    """The skipped-image warning of a run, logged to a strict UTF-8 stream (as a log file is)."""
    from xception.training.runlog import RunLog

    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")

    def call() -> str:
        rl = RunLog(None, lambda m: stream.write(m + "\n"), True, False, 1, False, "t")
        rl.bad_images([(str(tmp / BAD_NAME), "truncated")])
        stream.flush()
        return stream.buffer.getvalue().decode("utf-8")
    return Py(call)


def evaluate_saved_batch_0(tmp: Path) -> Py:
    from xception.inference import evaluate_saved

    return Py(lambda: evaluate_saved(weights(tmp), batch_size=0))


def cli(*args: str) -> Callable[[Path], Cli]:
    return lambda tmp: Cli(list(args))


# ---- the table ----------------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    build: Callable[[Path], Cli | Sub | Py]
    rc: int                        # 2: refused (one error line); 0: a correct result
    fragments: tuple[str, ...]     # in the error (rc 2) or in what was printed (rc 0)
    absent: tuple[str, ...] = ()   # paths under tmp_path that must not exist afterwards


NONFINITE = (f"'{KEY}'", "non-finite", "w.safetensors")
INT64 = (f"'{KEY}'", "is int64", "w.safetensors")
LATIN1 = ("c.json", "is not readable JSON/UTF-8")
ARG = "must be >= 1, got 0"

CASES = [
    # 1. settings: a non-finite float is refused by name, at parse time, before the run folder
    Case("set-lr-infinity", train("--set", "optimizer.lr=Infinity"), 2,
         ("optimizer.lr must be a finite number, got inf",), ("run",)),
    Case("set-decay-every-1e999", train("--set", "schedule.decay_every=1e999"), 2,
         ("schedule.decay_every must be a finite number, got inf",), ("run",)),
    Case("config-file-nan", train(config=b'{"optimizer": {"momentum": NaN}}'), 2,
         ("optimizer.momentum must be a finite number, got nan",), ("run",)),
    Case("set-model-bn-eps-nan", train("--set", "model.bn_eps=NaN"), 2,
         ("model.bn_eps must be a finite number, got nan",), ("run",)),
    Case("lr-flag-inf", train("--lr", "inf"), 2, ("argument --lr", "finite number > 0"), ("run",)),
    # 2. weights: non-float or non-finite tensors and malformed metadata, in every format
    Case("predict-nan-tensor", predict(nan_at(KEY)), 2, NONFINITE),
    Case("predict-int64-tensors", predict(cast_floats(torch.int64)), 2, INT64),
    Case("convert-nan-tensor", convert(nan_at(KEY)), 2, NONFINITE, ("out.safetensors",)),
    Case("convert-int64-tensors", convert(cast_floats(torch.int64)), 2, INT64, ("out.safetensors",)),
    Case("bare-state-dict-nan", bare_state_dict_nan, 2,
         ("'head.classifier.weight'", "non-finite", "bare.pth")),
    Case("timm-legacy-int64", timm_legacy_int64, 2, ("'conv1.weight'", "is int64", "legacy.pth")),
    Case("keras-h5-nan", keras_h5_nan, 2, ("'block1_conv1/kernel'", "non-finite", "k.h5")),
    Case("preprocess-nonsense", predict(meta={"preprocess": "nonsense"}), 2,
         ("metadata field 'preprocess' must be a JSON object", "w.safetensors")),
    Case("preprocess-wrong-type", predict(meta={"preprocess": '{"image_size": "16", "in_chans": 3}'}),
         2, ("'preprocess.image_size' must be a positive integer",)),
    Case("preprocess-bad-crop", convert(meta={"preprocess": json.dumps({**PRE, "crop_fraction": "all"})}),
         2, ("'preprocess.crop_fraction'",), ("out.safetensors",)),
    Case("class-names-not-a-list", predict(meta={"class_names": "7"}), 2,
         ("metadata field 'class_names' must be a JSON list of strings",)),
    Case("class-names-too-few", predict(meta={"class_names": '["ant"]'}), 2,
         ("'class_names' has 1 names but the model has 3 classes",)),
    Case("float64-weights-still-load", predict(cast_floats(torch.float64)), 0, ("img.png: ",)),
    Case("good-weights-predict", predict(), 0, ("img.png: ", "ant (")),
    Case("safetensors-header-length-0x80", header_0x80, 0, ("img.png: ",)),
    # 3. config files that are not UTF-8
    Case("config-file-latin1", train(config=b'{"data": {"root": "caf\xe9"}}'), 2, LATIN1, ("run",)),
    Case("resume-config-latin1", resume_latin1, 2, ("config.json", "is not readable JSON/UTF-8"),
         ("run/checkpoint.pt", "run/metrics.jsonl")),
    Case("runconfig-load-latin1", load_latin1, 2, LATIN1),
    # 4. file names that are not UTF-8 print escaped
    Case("predict-non-utf8-name", predict_non_utf8_name, 0, ("bad\\xff.png: ", "ant (")),
    Case("runlog-non-utf8-name", runlog_non_utf8_name, 0,
         ("warning: skipped unreadable image", "bad\\xff.png (truncated)")),
    # 5. counts and sizes are checked by the argument parser
    Case("eval-batch-size-0", cli("eval", "w.safetensors", "--batch-size", "0"), 2,
         ("argument --batch-size", ARG)),
    Case("eval-batch-size-negative", cli("eval", "w.safetensors", "--batch-size", "-1"), 2,
         ("argument --batch-size", "must be >= 1, got -1")),
    Case("predict-top-k-0", cli("predict", "w.safetensors", "x.png", "--top-k", "0"), 2,
         ("argument --top-k", ARG)),
    Case("train-epochs-0", train("--epochs", "0"), 2, ("argument --epochs", ARG), ("run",)),
    Case("train-batch-size-0", train("--batch-size", "0"), 2, ("argument --batch-size", ARG), ("run",)),
    Case("train-workers-negative", train("--workers", "-1"), 2,
         ("argument --workers", "must be >= 0, got -1"), ("run",)),
    Case("benchmark-batch-0", cli("benchmark", "--batch", "0"), 2, ("argument --batch", ARG)),
    Case("benchmark-reps-0", cli("benchmark", "--reps", "0"), 2, ("argument --reps", ARG)),
    Case("experiment-seeds-0", cli("experiment", "residual", "--seeds", "0"), 2, ("argument --seeds", ARG)),
    Case("experiment-epochs-0", cli("experiment", "residual", "--epochs", "0"), 2,
         ("argument --epochs", ARG)),
    Case("experiment-steps-0", cli("experiment", "residual", "--steps", "0"), 2, ("argument --steps", ARG)),
    Case("export-image-size-0", cli("export", "w.safetensors", "--format", "onnx", "o.onnx",
                                    "--image-size", "0"), 2, ("argument --image-size", ARG)),
    Case("predict-batch-size-0", cli("predict", "w.safetensors", "x.png", "--batch-size", "0"), 2,
         ("argument --batch-size", ARG)),
    Case("embed-workers-negative", cli("embed", "w.safetensors", "x.png", "--out", "e.npy",
                                       "--workers", "-1"), 2,
         ("argument --workers", "must be >= 0, got -1")),
    Case("embed-out-suffix", lambda tmp: Cli(["embed", str(weights(tmp)), str(tmp / "img.png"),
                                              "--out", str(tmp / "e.txt")]), 2,
         ("end the file name with .safetensors or .npy",), ("e.txt",)),
    Case("export-pt2-image-size-0", cli("export", "w.safetensors", "--format", "pt2", "o.pt2",
                                        "--image-size", "0"), 2, ("argument --image-size", ARG)),
    Case("evaluate-saved-batch-size-0", evaluate_saved_batch_0, 2,
         ("batch_size must be an integer >= 1, got 0",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_settings_weights_and_arguments(case: Case, tmp_path, capsys, one_thread, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a case that wrongly runs (an experiment, say) writes only here
    what = case.build(tmp_path)
    rc, out, err = run(what, capsys)
    assert rc == case.rc, (out, err)
    if case.rc == 0:
        assert "Traceback" not in err, err
        for fragment in case.fragments:
            assert fragment in out, (fragment, out)
    else:
        message = err.strip().splitlines()[-1] if err.strip() else ""
        if not isinstance(what, Py):
            assert message.startswith("xception "), err  # one line: "xception CMD: error: ..."
        for fragment in case.fragments:
            assert fragment in message, (fragment, err)
        if isinstance(what, Py) and case.id.startswith(("runconfig", "evaluate-saved")):
            with pytest.raises(ConfigError):  # the error type Python callers catch
                what.call()
    for path in case.absent:
        assert not (tmp_path / path).exists(), path
