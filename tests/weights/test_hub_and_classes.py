"""hubconf.py from a checkout, and the ImageNet class names shipped with the package."""

from __future__ import annotations

from pathlib import Path

import torch

from xception import Xception, create_model, save_weights
from xception.data.imagenet import imagenet_class_names

REPO = Path(__file__).resolve().parents[2]


def test_torch_hub_load_from_checkout(tmp_path):
    model = torch.hub.load(str(REPO), "xception", source="local", num_classes=10)
    assert isinstance(model, Xception) and model.num_classes == 10
    small = create_model("xception41", num_classes=3)
    save_weights(small, tmp_path / "w.safetensors")
    loaded = torch.hub.load(str(REPO), "xception41", source="local", num_classes=3,
                            weights=str(tmp_path / "w.safetensors"))
    assert torch.equal(loaded.stem.conv1.weight, small.stem.conv1.weight)


def test_imagenet_names_are_torchvisions():
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    names = imagenet_class_names()
    assert list(names) == list(_IMAGENET_CATEGORIES)
    assert len(set(names)) == 1000 and names[0] == "tench"
