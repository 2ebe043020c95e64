"""``xception eval``: saved weights on the data they were trained on, or on any data whose class
names they know (``--data``), with per-class accuracy and a confusion matrix (``--out``)."""

from __future__ import annotations

import argparse
import sys

from . import example, non_negative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a run folder or weights file on its validation set or on --data",
        description="Top-1/top-5/loss of saved weights on the validation split they were trained "
        "against or, with --data, on other data whose class names are the weights' (matched by "
        "name); with --data or --out also per-class accuracy and the confusion matrix.",
        **example("xception eval runs/pets --data zoo/ --out runs/pets/zoo"))
    p.add_argument("weights", metavar="RUN_OR_WEIGHTS")
    p.add_argument("--data", metavar="DATA",
                   help="a data set name (digits, fashion-mnist, mnist, cifar10, cifar100: its "
                   "validation split), an ImageFolder root (train/ + val/: val/ is evaluated), a "
                   "folder of class folders, or a multi-label manifest folder or file")
    p.add_argument("--out", metavar="DIR",
                   help="write per_class.csv, confusion_matrix.csv and confusion_matrix.png here")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--workers", type=non_negative_int, default=0,
                   help="loader processes that read image files (0: this one)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_eval)


def _headline(data: str, m: dict) -> str:
    line = (f"{data} ({m['count']} images): top-1 {100 * m['top1']:.2f}%  "
            f"top-5 {100 * m['top5']:.2f}%  loss {m['loss']:.4f}")
    if "map100" in m:
        line += f"  MAP@100 {100 * m['map100']:.2f}%  mAP {100 * m['map']:.2f}%"
    if m.get("bad"):
        line += f"  ({m['bad']} unreadable images skipped)"
    return line


def run_eval(args: argparse.Namespace) -> int:
    from ..files import printable

    if args.data is None and args.out is None:  # the headline only, as it always was
        from ..inference import evaluate_saved

        m = evaluate_saved(args.weights, args.batch_size, args.device)
        print(printable(_headline(f"{m['data']} val", m)))
        return 0
    from ..inference import evaluate_data, write_eval_report

    report = evaluate_data(args.weights, args.data, args.batch_size, args.device, args.workers)
    print(printable(_headline(report.data, report.metrics)))
    for path, reason in report.bad_paths:
        print(printable(f"xception eval: skipped unreadable image {path}: {reason}"),
              file=sys.stderr)
    rows = report.per_class()
    if rows:
        width = min(max(len(name) for name, _, _ in rows), 40)
        print(f"per class: {'class':<{width}}  images  correct   top-1")
        for name, n, k in rows:
            print(printable(f"           {name:<{width}}  {n:>6}  {k:>7}  {100 * k / n:6.2f}%"))
    elif report.confusion is None:
        print("(multi-label data: no per-class accuracy or confusion matrix"
              + ("; nothing written to --out)" if args.out is not None else ")"))
    if report.missing:
        shown = ", ".join(report.missing[:10]) + (", ..." if len(report.missing) > 10 else "")
        print(printable(f"no images of {len(report.missing)} of the weights' "
                        f"{len(report.class_names)} classes: {shown}"))
    if args.out is not None:
        for path in write_eval_report(report, args.out):
            print(printable(f"wrote {path}"))
    return 0
