import json

import pytest
import torch

from xception.data import build_datasets, split_indices
from xception.errors import ConfigError
from xception.training.config import RunConfig, apply_overrides
from xception.training.fit import fit


def tiny_run(tiny: dict, *extra: str) -> RunConfig:
    model = [f"model.{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"
             for k, v in tiny.items()]
    return apply_overrides(RunConfig(), ["data.image_size=16", "train.epochs=3", *model, *extra])


def test_short_training_run_on_digits_is_far_above_chance(tiny, tmp_path):
    result = fit(tiny_run(tiny), tmp_path / "run", log=lambda s: None)
    assert len(result.history) == 3
    assert result.final["val_top1"] >= 0.8  # chance is 0.1
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert files == {"config.json", "metrics.jsonl", "metrics.csv", "curves.png", "model.safetensors",
                     "checkpoint.pt"}
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert RunConfig.from_dict(json.loads((tmp_path / "run/config.json").read_text())) == tiny_run(tiny)


def test_same_seed_same_result(tiny):
    cfg = tiny_run(tiny, "train.epochs=1", "data.train_subset=128")
    a = fit(cfg, None, log=lambda s: None)
    b = fit(cfg, None, log=lambda s: None)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    for (n, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), n


def test_split_is_fixed_stratified_and_disjoint():
    train, val, info = build_datasets(RunConfig().data)
    assert len(train) + len(val) == 1797 and len(val) == 359
    assert info.num_classes == 10 and info.preprocess.in_chans == 1
    labels = torch.arange(10).repeat_interleave(50).numpy()
    t1, v1 = split_indices(labels, 0.2, 0)
    t2, v2 = split_indices(labels, 0.2, 0)
    assert (v1 == v2).all() and not set(t1) & set(v1)
    assert all((labels[v1] == c).sum() == 10 for c in range(10))
    x, _ = val[0]
    assert x.shape == (1, 32, 32) and x.min() >= -1 and x.max() <= 1


def test_run_folder_that_holds_files_is_refused_before_training(tiny, tmp_path):
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="already holds files"):
        fit(tiny_run(tiny), tmp_path, log=lambda s: None)
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]


def test_bad_model_setting_writes_nothing(tiny, tmp_path):
    with pytest.raises(ConfigError, match="segments"):
        fit(tiny_run(tiny, "model.segments=3"), tmp_path / "run", log=lambda s: None)
    assert not (tmp_path / "run").exists()
