"""timm / Cadene state dicts -> this model: key names per architecture.

Two families: timm's ``legacy_xception`` (the Cadene/tstandley port of the Keras weights: ``conv1``,
``block1.rep.0.conv1``, ``block1.skip``, ``conv3``/``bn3``, ``fc``; Cadene renames ``fc`` to
``last_linear`` and tstandley stored pointwise kernels as 2-D), and timm's aligned ``xception41/65/71``
(``stem.0.conv``, ``blocks.0.stack.conv1.conv_dw``/``bn_dw``/``conv_pw``/``bn_pw``, ``head.fc``).
Each of our keys is translated to the name it has there; whatever does not line up is an error that
names the key. The legacy port ran with symmetric padding and BatchNorm eps 1e-5, the aligned models
with symmetric padding (stem included) and eps 1e-3: ``NUMERICS`` says so, and the loader applies it.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import WeightsError
from ..models.xception import Xception
from .native import check_tensor

NUMERICS = {
    "timm_legacy": {"padding": "symmetric", "stem_padding": "valid", "bn_eps": 1e-5},
    "timm_aligned": {"padding": "symmetric", "stem_padding": "symmetric", "bn_eps": 1e-3},
}
DESCRIPTION = {"timm_legacy": "timm legacy_xception / Cadene state dict",
               "timm_aligned": "timm aligned Xception (xception41/65/71) state dict"}
# number of blocks of timm's aligned models -> the name of the matching config
ALIGNED_BY_BLOCKS = {13: "xception41", 21: "xception65", 23: "xception71"}

_OUR_BLOCK = re.compile(r"^\w+_flow\.(block\d+)\.(sepconvs|bns|shortcut)\.(.+)$")


# How timm evaluated its ImageNet weights (its pretrained configs): bicubic resize of the short
# side to 299 / crop, centre crop 299, [-1, 1]. ``predict`` repeats it for imported timm weights.
EVAL_CROP = {"xception": 0.8975, "xception41": 0.903, "xception65": 0.94, "xception71": 0.903}


def kind_of(state: dict[str, torch.Tensor]) -> str | None:
    """"timm_legacy", "timm_aligned", "xception" (this project's keys) or None."""
    keys = state.keys()
    if "stem.conv1.weight" in keys:
        return "xception"
    if any(k.startswith("block1.rep.") for k in keys) and "conv1.weight" in keys:
        return "timm_legacy"
    if "stem.0.conv.weight" in keys or any(k.startswith("blocks.0.stack.") for k in keys):
        if any(re.match(r"^blocks\.\d+\.norm\.", k) for k in keys):
            raise WeightsError("this is a pre-activation aligned Xception (timm xception41p/65p); "
                               "only xception41/65/71 are supported")
        return "timm_aligned"
    return None


def _blocks(model: Xception) -> dict[str, tuple[int, bool, bool]]:
    """Our block name -> (index among all blocks, is the final block, starts with a ReLU)."""
    names = [(name, block) for flow in (model.entry_flow, model.middle_flow, model.exit_flow)
             for name, block in flow.named_children()]
    return {name: (j, j == len(names) - 1, block.spec.relu_first)
            for j, (name, block) in enumerate(names)}


def _legacy_key(key: str, blocks: dict, head: str) -> str | None:
    if m := re.match(r"^stem\.(conv|bn)([12])\.(.+)$", key):
        return f"{m[1]}{m[2]}.{m[3]}"
    if key.startswith("head.classifier."):
        return f"{head}.{key.rsplit('.', 1)[1]}"
    m = _OUR_BLOCK.match(key)
    if not m:
        return None
    j, final, relu_first = blocks[m[1]]
    part, rest = m[2], m[3]
    if part == "shortcut":
        sub, tail = rest.split(".", 1)
        return f"block{j + 1}.{'skip' if sub == 'conv' else 'skipbn'}.{tail}"
    k_str, tail = rest.split(".", 1)
    k = int(k_str)
    if part == "bns":
        return f"bn{3 + k}.{tail}" if final else f"block{j + 1}.rep.{3 * k + int(relu_first) + 1}.{tail}"
    attr = {"spatial.weight": "conv1.weight", "pointwise.weight": "pointwise.weight"}.get(tail)
    if attr is None:  # mid_norm and the like: the legacy model has no such layer
        return None
    return f"conv{3 + k}.{attr}" if final else f"block{j + 1}.rep.{3 * k + int(relu_first)}.{attr}"


def _aligned_key(key: str, blocks: dict, head: str) -> str | None:
    if m := re.match(r"^stem\.(conv|bn)([12])\.(.+)$", key):
        return f"stem.{int(m[2]) - 1}.{m[1]}.{m[3]}"
    if key.startswith("head.classifier."):
        return f"{head}.{key.rsplit('.', 1)[1]}"
    m = _OUR_BLOCK.match(key)
    if not m:
        return None
    j = blocks[m[1]][0]
    part, rest = m[2], m[3]
    if part == "shortcut":
        return f"blocks.{j}.shortcut.{rest}"
    k_str, tail = rest.split(".", 1)
    conv = f"blocks.{j}.stack.conv{int(k_str) + 1}"
    if part == "bns":
        return f"{conv}.bn_pw.{tail}"
    for ours, theirs in (("spatial.", "conv_dw."), ("mid_norm.", "bn_dw."),
                         ("pointwise.", "conv_pw.")):
        if tail.startswith(ours):
            return conv + "." + theirs + tail[len(ours):]
    return None


def to_state(model: nn.Module, state: dict[str, torch.Tensor], kind: str,
             ignore_head: bool = False,
             source: str = "the file") -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """``model``'s state dict filled from a timm/Cadene one, and the (their key, our key) pairs.
    Every tensor is checked (dtype, finite values) before it is cast; ``source`` names the file."""
    if not isinstance(model, Xception):
        raise WeightsError(f"{DESCRIPTION[kind]} weights load into an Xception model only")
    blocks = _blocks(model)
    if kind == "timm_legacy":
        head = "last_linear" if "last_linear.weight" in state else "fc"
        translate = _legacy_key
    else:
        head, translate = "head.fc", _aligned_key
    own = model.state_dict()
    out, pairs, used = dict(own), [], set()
    for key, target in own.items():
        if ignore_head and key.startswith("head.classifier."):
            continue
        src = translate(key, blocks, head)
        if src is None:
            raise WeightsError(f"the model's {key!r} has no counterpart in a {DESCRIPTION[kind]}; "
                               "build the model that matches the file (see `xception convert`)")
        if src not in state:
            if key.endswith("num_batches_tracked"):
                continue
            raise WeightsError(f"the {DESCRIPTION[kind]} lacks {src!r}, which the model needs for "
                               f"{key!r}: it was saved from a different architecture")
        value = state[src]
        if value.dim() == 2 and target.dim() == 4 and target.shape[2:] == (1, 1):
            value = value[:, :, None, None]  # tstandley stored pointwise kernels as matrices
        if value.shape != target.shape:
            raise WeightsError(f"layer {src!r} has shape {tuple(value.shape)} in the file but the "
                               f"model's {key!r} has {tuple(target.shape)}")
        check_tensor(src, value, target, source)
        out[key] = value.detach().to(target.dtype).contiguous()
        pairs.append((src, key))
        used.add(src)
    ignored = {k for k in state if ignore_head and (k.startswith(head + ".") or k == head)}
    extra = [k for k in state if k not in used and k not in ignored]
    if extra:
        hint = " (check num_classes, or load with ignore_head=True)" if \
            any(k.startswith(head) for k in extra) else ""
        raise WeightsError(f"the {DESCRIPTION[kind]} has {len(extra)} tensor(s) the model lacks "
                           f"(first: {extra[0]!r}){hint}")
    return out, pairs


def config_name(state: dict[str, torch.Tensor], kind: str) -> str:
    """The registered model name a timm state dict was saved from."""
    if kind == "timm_legacy":
        return "xception"
    n = 1 + max((int(m[1]) for k in state if (m := re.match(r"^blocks\.(\d+)\.", k))), default=-1)
    if n not in ALIGNED_BY_BLOCKS:
        raise WeightsError(f"a timm aligned Xception with {n} blocks is none of xception41 (13), "
                           "xception65 (21) or xception71 (23)")
    return ALIGNED_BY_BLOCKS[n]


def num_classes_of(state: dict[str, torch.Tensor], kind: str) -> int:
    for key in (("fc.weight", "last_linear.weight") if kind == "timm_legacy" else ("head.fc.weight",)):
        if key in state:
            return int(state[key].shape[0])
    return 0


def in_chans_of(state: dict[str, torch.Tensor], kind: str) -> int:
    key = "conv1.weight" if kind == "timm_legacy" else "stem.0.conv.weight"
    return int(state[key].shape[1]) if key in state else 3
