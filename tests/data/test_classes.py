"""Part of a data set's classes (``data.classes``) and k images per class (``data.per_class``):
the data a transfer-learning run needs."""

from __future__ import annotations

import numpy as np
import pytest
from idx_helpers import write_set

from xception.config import RunConfig, apply_overrides
from xception.data import build_splits
from xception.errors import DataError


def _splits(tmp_path, *sets):
    data = write_set(tmp_path, n_train=100, n_val=40)
    cfg = apply_overrides(RunConfig(), ["data.name=fashion-mnist", f"data.root={tmp_path}",
                                        "data.image_size=16", *sets])
    return data, build_splits(cfg.data, seed=0)


def test_the_named_classes_are_kept_and_relabelled_in_the_order_given(tmp_path):
    data, splits = _splits(tmp_path, "data.classes=Bag,5,Shirt")
    assert splits.info.class_names == ("Bag", "Sandal", "Shirt") and splits.info.num_classes == 3
    original = data["train"][1]
    kept = [int(i) for i in splits.train.indices]
    assert sorted(set(original[kept].tolist())) == [5, 6, 8]
    relabel = {8: 0, 5: 1, 6: 2}
    assert splits.train.targets() == [relabel[int(original[i])] for i in kept]
    assert len(splits.val) == 12 and set(splits.val.targets()) == {0, 1, 2}
    image, label = splits.train[0]
    assert label == relabel[int(original[kept[0]])]


def test_k_images_per_class_after_the_holdout(tmp_path):
    _, splits = _splits(tmp_path, "data.classes=0,1,2,3,4", "data.val_holdout=10",
                        "data.per_class=3")
    assert len(splits.val) == 10 and len(splits.test) == 20      # held out of the 5 classes
    assert np.bincount(splits.train.targets()).tolist() == [3] * 5
    assert not set(splits.train.indices) & set(splits.val.indices)
    _, again = _splits(tmp_path, "data.classes=0,1,2,3,4", "data.val_holdout=10",
                       "data.per_class=3", "data.split_seed=1")
    assert not np.array_equal(splits.train.indices, again.train.indices)


@pytest.mark.parametrize("sets,message", [
    (["data.classes=Bag,Hat"], "'Hat' is neither a class name nor an index below 10"),
    (["data.classes=Bag,8"], "names 'Bag' twice"),
    (["data.classes=Bag"], "keeps 1 class"),
    (["data.classes=0,1", "data.per_class=50"], "class 0 has only 10 training images")])
def test_bad_class_settings_say_what_is_wrong(tmp_path, sets, message):
    with pytest.raises(DataError, match=message):
        _splits(tmp_path, *sets)
