"""``xception benchmark``: our model against timm's legacy_xception and torchvision's
inception_v3, same process, same settings; a table on screen and the full record as JSON."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

from ..bench import CONTENDERS, DEFAULT_CONTENDERS, MODES
from . import example, non_negative_int, positive_int


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark", help="time our model against timm and torchvision peers",
        description="Inference at batch 1 and batch N and a full training step for our model "
        "(as built, optimized for inference, fused kernels on GPU), timm's legacy_xception "
        "(if installed) and torchvision's inception_v3, interleaved, medians reported.",
        **example("xception benchmark --model xception_small --batch 8 --out bench.json"))
    p.add_argument("--model", default="xception", help="our model's name (default: xception)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"),
                   help="bf16 = autocast to bfloat16")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="NHWC weights and inputs (default: on)")
    p.add_argument("--compile", action="store_true", help="torch.compile every contender")
    p.add_argument("--cuda-graphs", action="store_true", help="replay each step as a CUDA graph")
    p.add_argument("--checkpointing", action="store_true",
                   help="activation checkpointing in our training step")
    p.add_argument("--image-size", type=positive_int, default=299)
    p.add_argument("--batch", type=positive_int, default=32, help="N for batch-N inference and training")
    p.add_argument("--reps", type=positive_int, default=5, help="timed repetitions (median reported)")
    p.add_argument("--iters", type=positive_int, default=1, help="steps per repetition")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed steps before timing")
    p.add_argument("--modes", type=_names, default=MODES, help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--contenders", type=_names, default=DEFAULT_CONTENDERS,
                   help=f"comma list of {', '.join(CONTENDERS)} (default: all but ours_ref, "
                   "our model in plain fp32 NCHW eager whatever the other settings)")
    p.add_argument("--threads", type=positive_int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--num-classes", type=positive_int, default=1000)
    p.add_argument("--out", metavar="FILE", help="write the full report as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import BenchSettings, format_table, run_benchmark
    from ..files import atomic_write_text
    from ..models.registry import model_config

    settings = BenchSettings(
        model=args.model, device=args.device, dtype=args.dtype, channels_last=args.channels_last,
        compile=args.compile, cuda_graphs=args.cuda_graphs, checkpointing=args.checkpointing,
        image_size=args.image_size, batch=args.batch, reps=args.reps, iters=args.iters,
        warmup=args.warmup, modes=args.modes, contenders=args.contenders, threads=args.threads,
        num_classes=args.num_classes)
    model_config(args.model)  # an unknown model fails here, before any work
    load_before = os.getloadavg()[0]
    report = run_benchmark(settings)
    # the figures' provenance: what ran, when, and how busy the machine was (other jobs on the
    # cores slow every contender; RESULTS.md reports runs at load <= ~2.5 on 2 cores)
    report["command"] = "xception " + shlex.join(sys.argv[1:])
    report["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    print(format_table(report))
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
        print(f"report: {args.out}")
    return 0
