"""torchrun restarts with ``--resume auto`` (issue 28), on one host, CPU and gloo: a rank killed
under ``--max-restarts`` -> torchrun starts the same command again, which continues from the
checkpoint to the uninterrupted run's weights, bit for bit; two agents on 127.0.0.1 (two
"nodes", c10d rendezvous) train what one agent with 2 processes trains; one agent killed with
its worker and started again (a node preempted and requeued) rejoins, and the run completes.
Only loopback addresses; output goes to files, not pipes (two agents writing to pipes read one
after the other can block each other)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import TINY_RUN, cli_env, wait_for_checkpoint
from safetensors.torch import load_file

RUN = [*TINY_RUN, "data.train_subset=160", "data.val_subset=20", "train.batch_size=16",
       "train.checkpoint_every=3", "model.dropout=0.3"]
LONG = 20
# torchrun's agents share their rendezvous store with the workers by default, and then a node
# that joins a later round waits for a MASTER_ADDR that the round's rank-0 agent never writes
# (it wrote it in round 0): pytorch/pytorch#135712. Each round its own store, as
# docs/training-at-scale.md says.
AGENT_ENV = {**cli_env(), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def _train(epochs: int) -> list[str]:
    return ["-m", "xception", "train", "--no-progress", "--resume", "auto",
            *[a for s in [*RUN, f"train.epochs={epochs}"] for a in ("--set", s)]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent(out: Path, port: int, run_id: str, log: Path, epochs: int = 3) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
               "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint",
               f"127.0.0.1:{port}", "--rdzv_id", run_id, "--max-restarts", "2",
               *_train(epochs), "--out", str(out)]
    with open(log, "w") as f:  # the child keeps its own descriptor
        return subprocess.Popen(command, env=AGENT_ENV, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _listening(port: int, agent: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert agent.poll() is None and time.monotonic() < deadline, "no rendezvous store"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (torchrun starts its workers in sessions of their
    own, so the agent's process group does not hold them)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    for child in children.stdout.split():
        _kill_tree(int(child))
    os.kill(pid, signal.SIGKILL)


def _wait(agent: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    try:
        agent.wait(timeout=timeout)
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
    text = log.read_text()
    assert agent.returncode == 0, text[-4000:]
    return text


def _reference(tmp_path: Path, epochs: int = 3) -> dict[str, torch.Tensor]:
    out = tmp_path / "reference"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", *_train(epochs), "--out", str(out)], env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return load_file(out / "model.safetensors")


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_torchrun_restarts_after_a_rank_is_killed_and_ends_bitwise(tmp_path):
    """SIGKILL to one rank after the first checkpoint; torchrun stops the other and starts the
    same command again, which continues from the checkpoint. (Without the agent's own store per
    round it hung once in three tries here, both restarted ranks waiting: AGENT_ENV.)"""
    reference, out, log = _reference(tmp_path, LONG), tmp_path / "run", tmp_path / "agent.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "--max-restarts", "2", *_train(LONG), "--out", str(out)]
    with open(log, "w") as f:
        agent = subprocess.Popen(command, env=AGENT_ENV, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    wait_for_checkpoint(agent, out, timeout=300)
    ranks = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True)
    pids = [int(p) for p in ranks.stdout.split()]
    assert len(pids) == 2, ranks.stdout
    _kill_tree(pids[-1])
    assert not (out / "model.safetensors").exists()  # mid-run
    text = _wait(agent, log)
    assert "holds a checkpoint; continuing it" in text and "pytorch/pytorch#135712" not in text
    weights = load_file(out / "model.safetensors")
    assert all(torch.equal(reference[k], weights[k]) for k in reference)


def test_two_agents_train_what_one_agent_with_two_processes_trains(tmp_path):
    reference, port, out = _reference(tmp_path), _free_port(), tmp_path / "run"
    logs = [tmp_path / f"agent{i}.log" for i in (0, 1)]
    agents = [_agent(out, port, "two-agents", log) for log in logs]
    texts = [_wait(agent, log) for agent, log in zip(agents, logs, strict=True)]
    assert sum("2 process(es) x 1 micro-batch(es) of 8" in text for text in texts) == 1  # rank 0
    assert _close(reference, load_file(out / "model.safetensors")) < 1e-6


def test_an_agent_killed_and_started_again_rejoins_and_the_run_completes(tmp_path):
    # long enough (about a second an epoch) that the kill lands mid-run on a busy machine
    reference, port, out = _reference(tmp_path, LONG), _free_port(), tmp_path / "run"
    logs = [tmp_path / f"agent{i}.log" for i in (0, 1, 2)]
    # the first agent hosts the rendezvous store (the endpoint's port): the node a cluster keeps
    # (torchrun's c10d store lives in that agent; losing it ends the job); the other is lost
    survivor = _agent(out, port, "requeued", logs[0], LONG)
    _listening(port, survivor)
    lost = _agent(out, port, "requeued", logs[1], LONG)
    wait_for_checkpoint(survivor, out, timeout=300)
    _kill_tree(lost.pid)  # the node: its agent and its worker, at once
    assert not (out / "model.safetensors").exists()  # mid-run
    lost.wait(timeout=60)
    back = _agent(out, port, "requeued", logs[2], LONG)  # the requeued node: the same command
    texts = [_wait(survivor, logs[0]), _wait(back, logs[2])]
    assert any("holds a checkpoint; continuing it" in text for text in texts), texts[0][-3000:]
    assert _close(reference, load_file(out / "model.safetensors")) < 1e-6


def test_a_restartable_job_that_shares_its_store_is_told_how_not_to_hang(monkeypatch):
    from xception.distributed import restart_advice

    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "2")
    monkeypatch.delenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", raising=False)
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in restart_advice()
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    assert restart_advice() is None
    monkeypatch.delenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")
    assert restart_advice() is None  # nothing restarts
