"""``xception eval`` and ``xception predict``: use what ``xception train`` wrote."""

from __future__ import annotations

import argparse

from . import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run folder or weights file on its validation set")
    p.add_argument("weights", metavar="RUN_OR_WEIGHTS")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("predict", help="top-k classes of image files")
    p.add_argument("weights", metavar="WEIGHTS", help="a weights file or run folder")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.add_argument("--top-k", type=positive_int, default=5)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_predict)


def run_eval(args: argparse.Namespace) -> int:
    from ..files import printable
    from ..inference import evaluate_saved

    m = evaluate_saved(args.weights, args.batch_size, args.device)
    line = (f"{m['data']} val ({m['count']} images): top-1 {100 * m['top1']:.2f}%  "
            f"top-5 {100 * m['top5']:.2f}%  loss {m['loss']:.4f}")
    if "map100" in m:
        line += f"  MAP@100 {100 * m['map100']:.2f}%  mAP {100 * m['map']:.2f}%"
    if m.get("bad"):
        line += f"  ({m['bad']} unreadable images skipped)"
    print(printable(line))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from ..files import printable
    from ..inference import load_for_inference, predict_files

    model, meta, device = load_for_inference(args.weights, args.device)
    for path, top in predict_files(model, meta, args.images, args.top_k, device):
        ranked = "  ".join(f"{name} ({100 * p:.1f}%)" for name, p in top)
        print(printable(f"{path}: {ranked}"))  # a file name that is not UTF-8 prints escaped
    return 0
