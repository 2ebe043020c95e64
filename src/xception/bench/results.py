"""What a benchmark found and how it reads: one Entry per contender and mode, the machine it ran on,
time ratios against the peers, a table."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

import torch

from ..provenance import cpu_name

PEERS = ("timm", "inception")


@dataclass
class Entry:
    """One contender in one mode: what was measured, or why not."""

    times_ms: list[float] = field(default_factory=list)
    median_ms: float | None = None
    cpu_ms: list[float] = field(default_factory=list)   # process CPU time (all threads) per step
    median_cpu_ms: float | None = None
    img_per_s: float | None = None
    warmup_s: float | None = None
    peak_mb: float | None = None              # CUDA: max allocated during one step, above idle
    saved_mb_per_image: float | None = None   # activations kept for backward (train), any device
    error: str | None = None
    note: str | None = None


def environment(device: torch.device) -> dict:
    import torchvision

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "machine": platform.machine(),
           "processor": cpu_name(), "threads": torch.get_num_threads(), "device": str(device)}
    for mod in ("timm", "triton"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def ratios(results: dict[str, dict[str, Entry]]) -> dict:
    """Per mode: each of our variants' median time over each peer's (below 1 = we are faster)."""
    out: dict[str, dict] = {}
    for mode, entries in results.items():
        for name in ("ours", "ours_opt", "ours_fused"):
            mine = entries.get(name)
            if mine is None or mine.median_ms is None:
                continue
            for peer in (*PEERS, "ours_ref"):
                theirs = entries.get(peer)
                if theirs is not None and theirs.median_ms:
                    out.setdefault(mode, {}).setdefault(name, {})[f"time_vs_{peer}"] = \
                        round(mine.median_ms / theirs.median_ms, 4)
    return out


def format_table(report: dict) -> str:
    """The report as a fixed-width table: one row per contender and mode; "vs" columns are
    time ratios (below 1: ours is faster)."""
    s = report["settings"]
    env = report["environment"]
    where = env.get("gpu") or f"{env['processor']} ({env['threads']} threads)"
    lines = [f"{s['model']} vs peers on {where}: {s['dtype']}, "
             f"channels_last={s['channels_last']}, compile={s['compile']}, "
             f"cuda_graphs={s['cuda_graphs']}, {s['image_size']} px, batch N={s['batch']}, "
             f"median of {s['reps']} x {s['iters']}",
             f"{'mode':7s} {'model':11s} {'ms/step':>10s} {'img/s':>10s} {'vs timm':>8s} "
             f"{'vs incep':>8s} {'vs ref':>7s} {'cpu ms':>9s} {'peak MB':>9s} {'act MB/img':>10s}"]
    for mode, entries in report["results"].items():
        for name, e in entries.items():
            if e["median_ms"] is None:
                lines.append(f"{mode:7s} {name:11s} {e['error'] or 'not measured'}")
                continue
            r = report["ratios"].get(mode, {}).get(name, {})
            cols = [f"{r[k]:.3f}" if k in r else "-"
                    for k in ("time_vs_timm", "time_vs_inception", "time_vs_ours_ref")]
            peak = f"{e['peak_mb']:.0f}" if e["peak_mb"] is not None else "-"
            act = f"{e['saved_mb_per_image']:.1f}" if e["saved_mb_per_image"] is not None else "-"
            lines.append(f"{mode:7s} {name:11s} {e['median_ms']:10.2f} {e['img_per_s']:10.1f} "
                         f"{cols[0]:>8s} {cols[1]:>8s} {cols[2]:>7s} {e['median_cpu_ms']:9.1f} {peak:>9s} "
                         f"{act:>10s}" + (f"  ({e['note']})" if e.get("note") else ""))
    return "\n".join(lines)
