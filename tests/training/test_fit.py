"""fit end to end on tiny models: the digits far above chance, determinism, the run folder, EMA,
multi-label, bad images, non-finite losses."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from conftest import TINY, TINY_RUN, save_png, write_broken_files, write_manifest
from safetensors import safe_open

import xception.training.engine as engine
from xception.cli.main import main
from xception.config import RunConfig, apply_overrides
from xception.data.preprocess import Preprocess, load_image
from xception.errors import ConfigError, DataError, TrainingError
from xception.inference import load_for_inference, predict_files
from xception.training.checkpoint import CHECKPOINT, PREVIOUS
from xception.training.fit import fit

SMALL = [*TINY_RUN, "data.train_subset=96", "data.val_subset=40", "train.batch_size=16"]


def tiny(*sets: str) -> RunConfig:
    return apply_overrides(RunConfig(), [*SMALL, *sets])


def digits_run(*extra: str) -> RunConfig:
    """The digits at 16 px, three epochs, conftest's TINY model."""
    model = [f"model.{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in TINY.items()]
    return apply_overrides(RunConfig(), ["data.image_size=16", "train.epochs=3", *model, *extra])



def test_fit_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    lines: list[str] = []
    res = fit(tiny("train.epochs=2"), out, log=lines.append)
    assert [h["epoch"] for h in res.history] == [1, 2]
    for key in ("train_loss", "val_loss", "val_top1", "val_top5", "lr", "train_img_per_s",
                "peak_mem_mb", "steps"):
        assert key in res.final
    assert res.final["steps"] == 12 and res.final["val_count"] == 40
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "curves.png", "model.safetensors",
                 CHECKPOINT):
        assert (out / name).is_file(), name
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == res.history
    assert not (out / PREVIOUS).exists()  # a finished run keeps one checkpoint
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert {"data_config", "class_names", "preprocess"} <= set(meta)
    assert any("img/s" in ln and "MiB" in ln for ln in lines)
    with pytest.raises(Exception, match="already holds files"):
        fit(tiny(), out, log=lines.append)
    # the saved weights evaluate to what training reported
    assert main(["eval", str(out), "--device", "cpu"]) == 0
    assert f"top-1 {100 * res.final['val_top1']:.2f}%" in capsys.readouterr().out


def test_max_steps_budget_and_accumulation(tmp_path):
    res = fit(tiny("train.epochs=5", "train.max_steps=7", "train.accum_steps=2",
                   "train.keep_checkpoint=false"), tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run" / CHECKPOINT).exists()
    assert res.global_step == 7 and [h["steps"] for h in res.history] == [6, 7]
    assert res.final["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at the budget


def test_ema_is_evaluated_and_saved(tmp_path):
    out = tmp_path / "run"
    res = fit(tiny("train.epochs=1", "train.ema=true", "train.ema_decay=0.5"), out,
              log=lambda _: None)
    assert {"ema_val_loss", "ema_val_top1", "ema_val_top5"} <= set(res.final)
    assert res.ema_model is not None
    ema_w = {k: v for k, v in res.ema_model.state_dict().items()}
    raw_w = res.model.state_dict()
    assert any(not torch.equal(ema_w[k], raw_w[k]) for k in raw_w if raw_w[k].is_floating_point())
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata()["weights"] == "ema"
        assert torch.equal(f.get_tensor("head.classifier.weight"), ema_w["head.classifier.weight"])
    assert (out / "model_raw.safetensors").is_file()


def test_bf16_autocast_on_cpu():
    res = fit(tiny("train.epochs=1", "train.precision=bf16", "train.channels_last=true"), None,
              log=lambda _: None)
    assert res.final["val_count"] == 40 and torch.isfinite(torch.tensor(res.final["train_loss"]))


def test_multi_label_manifest_training_reports_map(tmp_path, capsys):
    root = tmp_path / "jft"
    root.mkdir()
    (root / "classes.txt").write_text("a\nb\nc\nd\n")
    rows = []
    for i in range(24):
        save_png(root / f"{i}.png", i, size=18)
        rows.append((f"{i}.png", sorted({"abcd"[i % 4], "abcd"[(i // 4) % 4]})))
    write_manifest(root, "train", rows, "jsonl")
    write_manifest(root, "val", rows[:10], "csv")
    out = tmp_path / "run"
    res = fit(apply_overrides(RunConfig(), [*TINY_RUN, "data.name=manifest", f"data.root={root}",
                                            "data.class_weights=frequency", "train.batch_size=8",
                                            "train.epochs=1", "train.ema=true"]),
              out, log=lambda _: None)
    f = res.final
    for key in ("val_map100", "val_map", "ema_val_map100", "val_top1"):
        assert 0.0 <= f[key] <= 1.0, key
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        assert json.loads(fh.metadata()["multi_label"]) is True
    # eval of the saved (EMA) weights reports the MAP@100 training measured for them
    assert main(["eval", str(out), "--device", "cpu"]) == 0
    assert f"MAP@100 {100 * f['ema_val_map100']:.2f}%" in capsys.readouterr().out
    # predict gives independent per-class probabilities (sigmoid), not a softmax over classes
    model, meta, device = load_for_inference(out, "cpu")
    (_, top), = predict_files(model, meta, [str(root / "0.png")], top_k=4, device=device)
    logits = model(load_image(root / "0.png", Preprocess(**meta["preprocess"]))[None])
    assert [p for _, p in top] == pytest.approx(sorted(logits.sigmoid()[0].tolist(), reverse=True))


@pytest.mark.slow
def test_compiled_training_runs():  # ~2 minutes of compilation on 2 CPU cores
    res = fit(tiny("train.epochs=1", "train.compile=true"), None, log=lambda _: None)
    assert res.final["val_count"] == 40


def test_broken_images_are_counted_and_too_many_abort(image_folder, tmp_path):
    write_broken_files(image_folder / "train" / "cat")
    base = [*TINY_RUN, "data.name=imagefolder", f"data.root={image_folder}",
            "data.image_size=32", "train.batch_size=8", "train.epochs=2"]
    res = fit(apply_overrides(RunConfig(), [*base, "data.max_bad_fraction=0.2"]), None,
              log=lambda _: None)
    assert [h["train_bad"] for h in res.history] == [4, 4]
    assert res.final["val_bad"] == 0 and res.final["val_count"] == 9
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"4 of 28 images \(14.3%\) are unreadable"):
        fit(apply_overrides(RunConfig(), [*base, "data.max_bad_fraction=0.1"]), out,
            log=lambda _: None)
    assert not (out / "model.safetensors").exists()


def _nan_on(calls: set[int] | None, after: int | None = None):
    """A loss that turns NaN on the given training calls (or every call after ``after``)."""
    real, count = engine.loss_sum, [0]

    def loss(logits, y, label_smoothing=0.0):
        out = real(logits, y, label_smoothing)
        if not logits.requires_grad:  # evaluation
            return out
        count[0] += 1
        bad = (calls is not None and count[0] in calls) or (after is not None and count[0] > after)
        return out * float("nan") if bad else out

    return loss


def test_a_nonfinite_loss_skips_the_step(monkeypatch):
    monkeypatch.setattr(engine, "loss_sum", _nan_on({3}))
    lines: list[str] = []
    res = fit(tiny("train.epochs=1"), None, log=lines.append)
    assert res.final["skipped_steps"] == 1 and res.global_step == 6
    assert any("step 3: loss is not finite; update skipped" in ln for ln in lines)
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_nonfinite_losses_in_a_row_abort_and_keep_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(engine, "loss_sum", _nan_on(None, after=4))
    with pytest.raises(TrainingError, match="3 non-finite losses in a row at step 7"):
        fit(tiny("train.epochs=2", "train.checkpoint_every=2", "train.max_nonfinite=3"), out,
            log=lambda _: None)
    ckpt = torch.load(out / CHECKPOINT, weights_only=True)
    assert ckpt["progress"]["global_step"] == 4  # the last checkpoint before the NaNs
    assert not (out / "model.safetensors").exists()


def test_short_training_run_on_digits_is_far_above_chance(tmp_path):
    result = fit(digits_run(), tmp_path / "run", log=lambda s: None)
    assert len(result.history) == 3
    assert result.final["val_top1"] >= 0.8  # chance is 0.1
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert files == {"config.json", "metrics.jsonl", "metrics.csv", "curves.png", "model.safetensors",
                     "checkpoint.pt"}
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert RunConfig.from_dict(json.loads((tmp_path / "run/config.json").read_text())) == digits_run()


def test_same_seed_same_result():
    cfg = digits_run("train.epochs=1", "data.train_subset=128")
    a = fit(cfg, None, log=lambda s: None)
    b = fit(cfg, None, log=lambda s: None)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    for (n, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), n


def test_run_folder_that_holds_files_is_refused_before_training(tmp_path):
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="already holds files"):
        fit(digits_run(), tmp_path, log=lambda s: None)
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]


def test_the_first_line_comes_before_the_optimizer_is_built(monkeypatch):
    """The first torch.optim optimizer imports torch._dynamo (~1.5 s of start-up on 2 cores):
    the run's first line must not wait for it (issue 12: a line within 5 s)."""
    assembly = importlib.import_module("xception.training.assembly")  # where fit builds it
    lines: list[str] = []
    seen: list[int] = []
    build = assembly.build_optimizer

    def spy(*args, **kwargs):
        seen.append(len(lines))
        return build(*args, **kwargs)

    monkeypatch.setattr(assembly, "build_optimizer", spy)
    fit(tiny("train.max_steps=1"), None, log=lines.append)
    assert seen and seen[0] >= 1 and lines[0].startswith("training xception_small (")
