"""``xception predict`` and ``xception embed``: classify image files, or turn files or a data set
into pre-logit features, streamed in batches. Unreadable files are listed on stderr and skipped;
the exit status is 1 when any was, 0 when every file was read."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from . import example, non_negative_int, positive_int

if TYPE_CHECKING:
    from ..data.images import BadSample

# inference.embed.POOLS and inference.sources.SPLITS (written out: building the parser must not
# import torch; a test holds them together)
POOLS = ("avg", "max", "none")
SPLITS = ("train", "val", "test")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="top-k classes of image files and folders",
        description="Top-k classes (with class names) of image files; folders are searched "
        "recursively. Lines on stdout, or one CSV row / JSONL record per image with --out. "
        "Unreadable files are listed on stderr and skipped: exit status 1 if any was.",
        **example("xception predict runs/pets photos/ --out predictions.csv"))
    p.add_argument("weights", metavar="WEIGHTS", help="a weights file or run folder")
    p.add_argument("images", metavar="INPUT", nargs="+", help="image files and folders")
    p.add_argument("--out", metavar="FILE", help="write predictions.csv or predictions.jsonl")
    p.add_argument("--top-k", type=positive_int, default=5)
    _loading(p, 64)
    p.set_defaults(func=run_predict)

    p = sub.add_parser(
        "embed", help="pre-logit features of image files, folders or a data set",
        description="Features of image files (folders searched recursively) or of a data set's "
        "split, written as .safetensors (tensors 'embeddings', and 'labels' + 'indices' for a "
        "data set; file names in the metadata) or .npy + FILE.names.txt.",
        **example("xception embed runs/pets photos/ --out features.safetensors"))
    p.add_argument("weights", metavar="WEIGHTS", help="a weights file or run folder")
    p.add_argument("inputs", metavar="INPUT", nargs="+",
                   help="image files and folders, or one data set name (digits, fashion-mnist, "
                   "mnist, cifar10, cifar100)")
    p.add_argument("--out", metavar="FILE", required=True, help="FILE.safetensors or FILE.npy")
    p.add_argument("--pool", choices=POOLS, default="avg",
                   help="avg: the classifier's input (forward_head(..., pre_logits=True)); max: "
                   "global max pooling; none: the feature map (default: avg)")
    p.add_argument("--split", choices=SPLITS, help="a data set's split (default: val)")
    _loading(p, 64)
    p.set_defaults(func=run_embed)


def _loading(p: argparse.ArgumentParser, batch: int) -> None:
    p.add_argument("--batch-size", type=positive_int, default=batch)
    p.add_argument("--workers", type=non_negative_int, default=0,
                   help="loader processes that read the files (0: this one)")
    p.add_argument("--device", default="auto")


class _Tally:
    """Counts what was read; lists each unreadable file on stderr as it is met."""

    def __init__(self, command: str, total: int) -> None:
        self.command, self.total, self.bad = command, total, 0

    def say(self, text: str) -> None:
        from ..files import printable

        print(printable(f"xception {self.command}: {text}"), file=sys.stderr)

    def on_bad(self, bad: BadSample) -> None:
        self.bad += 1
        self.say(f"cannot read {bad.path}: {bad.reason}")

    def finish(self, verb: str, written: str = "") -> int:
        done = self.total - self.bad
        if not self.bad:
            self.say(f"{verb} {done:,} image{'s' * (done != 1)}{written}")
            return 0
        self.say(f"{verb} {done:,} of {self.total:,} images{written}; {self.bad:,} could not be "
                 f"read (listed above): exit status 1")
        return 1


def run_predict(args: argparse.Namespace) -> int:
    from ..files import printable
    from ..inference import find_images, load_for_inference, predict_stream, write_predictions
    from ..inference.inputs import NothingRead, skip_bad
    from ..inference.predict import prediction_format

    if args.out is not None:
        prediction_format(args.out)  # a wrong suffix is refused before any work
    found = find_images(args.images)
    model, meta, device = load_for_inference(args.weights, args.device)
    tally = _Tally("predict", len(found.paths))
    tally.say(f"found {found.describe()}")
    stream = skip_bad(predict_stream(model, meta, found.paths, args.top_k, device,
                                     args.batch_size, args.workers), tally.on_bad)
    if args.out is None:
        for path, top in stream:
            ranked = "  ".join(f"{name} ({100 * p:.1f}%)" for name, p in top)
            print(printable(f"{path}: {ranked}"), flush=True)  # non-UTF-8 names print escaped
        return tally.finish("predicted")
    try:
        out, rows = write_predictions(args.out, stream)
    except NothingRead:
        return tally.finish("predicted", "; nothing written")
    print(printable(f"wrote {out} ({rows:,} rows)"))
    return tally.finish("predicted")


def run_embed(args: argparse.Namespace) -> int:
    from ..data.build import NAMED
    from ..errors import ConfigError
    from ..files import printable
    from ..inference import embed_stream, find_images, load_for_inference, write_embeddings
    from ..inference.embed import dataset_inputs, embedding_format, file_inputs
    from ..inference.inputs import NothingRead, skip_bad

    embedding_format(args.out)  # a wrong suffix is refused before any work
    names = [i for i in args.inputs if i in NAMED and not os.path.exists(i)]
    if names and len(args.inputs) > 1:
        raise ConfigError(f"a data set name ({names[0]!r}) must be the only INPUT; embed files "
                          "and folders, or one data set")
    if args.split is not None and not names:
        raise ConfigError("--split applies to a data set INPUT (digits, fashion-mnist, ...), not "
                          "to image files")
    model, meta, device = load_for_inference(args.weights, args.device)
    if names:
        inputs = dataset_inputs(names[0], args.split or "val", meta, model)
        total = len(inputs.dataset)
        tally = _Tally("embed", total)
        tally.say(f"{inputs.description}: {total:,} images")
    else:
        found = find_images(args.inputs)
        inputs = file_inputs(found.paths, meta)
        tally = _Tally("embed", len(found.paths))
        tally.say(f"found {found.describe()}")
    stream = skip_bad(embed_stream(model, inputs.dataset, args.pool, device, args.batch_size,
                                   args.workers), tally.on_bad)
    try:
        written, shape = write_embeddings(args.out, stream, inputs,
                                          {"pool": args.pool, "weights": str(args.weights)})
    except NothingRead:
        return tally.finish("embedded", "; nothing written")
    for path in written:
        print(printable(f"wrote {path}" + (f" (embeddings {list(shape)}, float32)"
                                           if path == written[0] else "")))
    return tally.finish("embedded")
