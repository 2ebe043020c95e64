"""DDP under torchrun (2 CPU processes, gloo) computes what one process computes.

With a global batch of 16 split over 2 processes (8 each), DDP must end with the parameters of
one process that accumulates the same two micro-batches of 8 (same BatchNorm batches, same mean
gradient). Tolerance: 1e-5 absolute on every parameter after 8 steps, for float summation order
(with 2 processes and power-of-two loss scales the sums coincide: we observe bitwise equality).
Both ranks must hold identical weights, and the all-reduced evaluation must count each of the 13
validation images once (13 is odd: one rank gets 7, the other 6, nothing padded).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from conftest import TINY_RUN, cli_env, save_png, write_manifest
from safetensors.torch import load_file

from xception.config import RunConfig, apply_overrides
from xception.data import build_datasets, make_loader
from xception.evaluation import evaluate
from xception.training.fit import fit
from xception.weights import load_model

RUN = [*TINY_RUN, "data.train_subset=64", "data.val_subset=13", "train.batch_size=16",
       "train.epochs=2", "train.ema=true", "train.ema_decay=0.5", "train.eval_batch_size=4"]
WORKER = str(Path(__file__).parents[1] / "ddp_worker.py")


def test_two_process_ddp_matches_one_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", WORKER, str(tmp_path), *RUN],
                          env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es) x 1 micro-batch(es) of 8" in proc.stdout
    assert "Grad strides do not match" not in proc.stderr  # gradients laid out as DDP's buckets
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    for k in r0:  # both ranks: same parameters, BatchNorm statistics and EMA, bit for bit
        assert torch.equal(r0[k], r1[k]), k

    single = fit(apply_overrides(RunConfig(), [*RUN, "train.accum_steps=2"]), None,
                 log=lambda _: None)
    ref = dict(single.model.named_parameters())
    worst = max((r0[k] - ref[k].detach()).abs().max().item() for k in ref)
    assert worst < 1e-5, f"DDP and single-process parameters differ by {worst}"

    hist = json.loads((tmp_path / "rank0.json").read_text())
    assert [h["val_count"] for h in hist] == [13, 13]
    assert [h["steps"] for h in hist] == [4, 8]
    for h, s in zip(hist, single.history, strict=True):
        assert abs(h["train_loss"] - s["train_loss"]) < 1e-4
    # the all-reduced evaluation equals a one-process evaluation of rank 0's final weights
    model = single.model
    model.load_state_dict({k[len(""):]: v for k, v in r0.items() if not k.startswith("ema.")})
    _, val, _ = build_datasets(apply_overrides(RunConfig(), RUN).data)
    m = evaluate(model, make_loader(val, 5), torch.device("cpu"))
    assert m["count"] == 13
    assert abs(m["loss"] - hist[-1]["val_loss"]) < 1e-5 and m["top1"] == hist[-1]["val_top1"]
    assert (tmp_path / "run" / "model.safetensors").is_file()  # rank 0 wrote the run folder


def test_two_process_multi_label_evaluation_matches_one_process(tmp_path):
    """MAP@100 and per-class mAP all-reduced over 2 ranks (each rank ranks one block of classes
    over every image) equal a one-process evaluation of the same weights."""
    root = tmp_path / "jft"
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("a\nb\nc\nd\ne\n")
    rows = [(f"{i}.png", sorted({"abcde"[i % 5], "abcde"[(i // 3) % 5]})) for i in range(29)]
    for i in range(29):
        save_png(root / f"{i}.png", i, size=18)
    write_manifest(root, "train", rows[:16], "jsonl")
    write_manifest(root, "val", rows[16:], "jsonl")  # 13 images: 7 on one rank, 6 on the other
    run = [*TINY_RUN, "data.name=manifest", f"data.root={root}", "train.batch_size=8",
           "train.epochs=1", "train.eval_batch_size=4"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", WORKER, str(tmp_path), *run],
                          env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    hist = json.loads((tmp_path / "rank0.json").read_text())
    other = json.loads((tmp_path / "rank1.json").read_text())
    for key in ("val_loss", "val_top1", "val_map100", "val_map", "val_count"):
        assert hist[-1][key] == other[-1][key], key  # every rank got the same sums
    model, _ = load_model(tmp_path / "run" / "model.safetensors")  # rank 0's final weights
    _, val, _ = build_datasets(apply_overrides(RunConfig(), run).data)
    m = evaluate(model, make_loader(val, 5), torch.device("cpu"))
    assert m["count"] == hist[-1]["val_count"] == 13
    assert abs(m["map100"] - hist[-1]["val_map100"]) < 1e-6
    assert abs(m["map"] - hist[-1]["val_map"]) < 1e-6


def test_sync_bn_over_two_processes_is_one_process_with_the_whole_batch(tmp_path):
    """train.sync_bn: 2 processes x 8 images normalise with the statistics of all 16, so they
    end where one process training on batches of 16 ends (not where its 2 micro-batches of 8
    end, which is what plain DDP matches: test above)."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", WORKER, str(tmp_path), *RUN,
                           "train.sync_bn=true"],
                          env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "train.sync_bn: " in proc.stdout and "BatchNorm layers normalise over the global" \
        in proc.stdout
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k

    def gap(sets):
        ref = fit(apply_overrides(RunConfig(), [*RUN, *sets]), None, log=lambda _: None).model
        state = ref.state_dict()
        return max((r0[k] - state[k]).abs().max().item() for k in state
                   if state[k].is_floating_point())

    whole, micro = gap([]), gap(["train.accum_steps=2"])
    assert whole < 1e-5, f"synchronised BatchNorm and one whole batch differ by {whole}"
    assert micro > 100 * whole + 1e-4, "the statistics were not synchronised"  # plain DDP's


def test_a_run_resumed_on_fewer_processes_keeps_its_micro_batch(tmp_path):
    """2 processes x 8 stop after epoch 1; resumed in 1 process the run takes 2 micro-batches of
    8 per step (train.accum_steps 1 -> 2), so it ends where one process with 2 x 8 ends."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", WORKER, str(tmp_path), *RUN],
                          env={**cli_env(), "STOP_AFTER_EPOCH": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir, logs = tmp_path / "run", []
    assert not (run_dir / "model.safetensors").exists()  # stopped after epoch 1 of 2
    resumed = fit(RunConfig.load(run_dir / "config.json"), run_dir, log=logs.append, resume=True)
    assert any("train.accum_steps 1 -> 2" in line and "micro-batch (8)" in line for line in logs)
    assert RunConfig.load(run_dir / "config.json").train.accum_steps == 2
    single = fit(apply_overrides(RunConfig(), [*RUN, "train.accum_steps=2"]), None,
                 log=lambda _: None)
    ref, got = dict(single.model.named_parameters()), dict(resumed.model.named_parameters())
    worst = max((got[k] - ref[k]).abs().max().item() for k in ref)
    assert worst < 1e-5, f"resumed on 1 process, the parameters differ by {worst}"
