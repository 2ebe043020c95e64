"""``xception convert`` and ``xception export``: move weights between formats and runtimes."""

from __future__ import annotations

import argparse

from ..weights.download import KERAS_IMAGENET
from . import example, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="any supported weights file -> this project's safetensors",
        description="Convert Keras (.h5, .weights.h5, .keras), timm/Cadene (.pth, .bin, "
        ".safetensors) or project weights to the project's safetensors, with the model config, "
        "ImageNet class names and preprocessing in its metadata. SRC may also be "
        f"{' or '.join(KERAS_IMAGENET)}: the official Keras ImageNet weights, fetched only "
        "with --download.",
        **example("xception convert xception_weights_tf_dim_ordering_tf_kernels.h5 xception.safetensors"))
    p.add_argument("src", metavar="SRC", help="weights file, run folder, or keras:imagenet[-notop]")
    p.add_argument("dst", metavar="DST", help="output .safetensors file")
    p.add_argument("--model", help="model name for bare state dicts (e.g. xception, xception41)")
    p.add_argument("--download", action="store_true",
                   help="fetch keras:imagenet[-notop] from Google's storage (checked by MD5)")
    p.add_argument("--cache-dir", help="where downloads go (default $XCEPTION_CACHE or "
                   "~/.cache/xception)")
    p.add_argument("--url", help="fetch from this mirror instead (still checked by MD5)")
    p.add_argument("--md5", help="expected MD5 of the mirror's file")
    p.add_argument("--quiet", action="store_true", help="do not list the mapped layers")
    p.set_defaults(func=run_convert)

    p = sub.add_parser(
        "export", help="export weights to ONNX or a torch.export program (checked against PyTorch)",
        description="Write the model (BatchNorm folded) as an ONNX graph or a torch.export program "
        "(.pt2) for any batch size and any image size >= the model's minimum, checked against "
        "PyTorch at two batch sizes and two image sizes before the file is written.",
        **example("xception export runs/pets --format onnx pets.onnx"))
    p.add_argument("weights", metavar="WEIGHTS", help="any weights file load_model reads")
    p.add_argument("--format", choices=["onnx", "pt2"], required=True)
    p.add_argument("out", metavar="OUT")
    p.add_argument("--image-size", type=positive_int,
                   help="a graph for N x N inputs only (default: any size; traced and checked at "
                   "the weights' preprocessing size, else 299, and one pixel more)")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (onnx only)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip comparing the exported graph's outputs with PyTorch's")
    p.set_defaults(func=run_export)


def _module(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def run_convert(args: argparse.Namespace) -> int:
    from ..weights import convert
    from ..weights.download import resolve_remote

    src = args.src
    if src in KERAS_IMAGENET:
        src = resolve_remote(src, args.download, args.url, args.md5, args.cache_dir)
    model, loaded, out = convert(src, args.dst, name=args.model)
    if not args.quiet:
        seen: list[tuple[str, str]] = []
        for theirs, ours in loaded.pairs:
            pair = (theirs, ours) if loaded.source.kind == "keras" else \
                (_module(theirs), _module(ours))
            if pair not in seen:
                seen.append(pair)
        for theirs, ours in seen:
            print(f"  {theirs} -> {ours}")
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    print(f"read {loaded.source.description} from {loaded.source.path}")
    print(f"mapped {len(loaded.pairs)} tensors onto {type(model).__name__} ({n:,} parameters, "
          f"{cfg.num_classes} classes, padding={cfg.padding!r}, bn_eps={cfg.bn_eps:g})")
    print(f"wrote {out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..export import export_onnx, export_pt2
    from ..weights import load_model

    model, meta = load_model(args.weights)
    dynamic = args.image_size is None
    size = args.image_size or max((meta.get("preprocess") or {}).get("image_size") or 299,
                                  model.config.min_input_size)
    if args.format == "onnx":
        out, check = export_onnx(model, args.out, size, args.opset, verify=not args.no_verify,
                                 dynamic_size=dynamic)
        checker = "onnxruntime"
    else:
        out, check = export_pt2(model, args.out, size, verify=not args.no_verify,
                                dynamic_size=dynamic)
        checker = "torch.export.load"
    shape = f"any image size >= {model.config.min_input_size}" if dynamic else \
        f"{size}x{size} inputs"
    check = "" if check is None else f"; {checker} matches PyTorch: {check}"
    print(f"wrote {out} ({shape}, any batch size{check})")
    return 0
