"""GlobalBatchNorm2d (train.sync_bn) in one process is nn.BatchNorm2d; the conversion is in place."""

import copy

import torch
from torch import nn

from xception.training.freezing import freeze
from xception.training.sync_bn import GlobalBatchNorm2d, synchronise_batch_norm


def test_in_one_process_it_is_batch_norm_and_keeps_the_model():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.01), nn.ReLU())
    synced = copy.deepcopy(plain)
    keys, params = synced.state_dict().keys(), [id(p) for p in synced.parameters()]
    assert synchronise_batch_norm(synced) == 1
    assert type(synced[1]) is GlobalBatchNorm2d
    assert synced.state_dict().keys() == keys and [id(p) for p in synced.parameters()] == params
    x = torch.randn(5, 3, 8, 8)
    assert torch.equal(plain(x), synced(x))
    assert torch.equal(plain[1].running_var, synced[1].running_var)


def test_a_frozen_layer_is_synchronised_again_once_unfrozen():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    synchronise_batch_norm(model)
    freeze(model, "none", freeze_bn=True)
    assert isinstance(model[1], GlobalBatchNorm2d) and type(model[1]) is not GlobalBatchNorm2d
    freeze(model, "none", freeze_bn=False)
    assert type(model[1]) is GlobalBatchNorm2d
