"""keep_micro_batch: a resume on another number of processes keeps the per-process micro-batch."""

import pytest

from xception.config import RunConfig, apply_overrides
from xception.errors import ConfigError
from xception.training.membership import keep_micro_batch


def checkpoint(world: int, accum: int, batch: int = 48) -> dict:
    cfg = apply_overrides(RunConfig(), [f"train.batch_size={batch}", f"train.accum_steps={accum}"])
    return {"world_size": world, "config": cfg.to_json()}


def command(accum: int = 1, batch: int = 48) -> RunConfig:
    return apply_overrides(RunConfig(), [f"train.batch_size={batch}", f"train.accum_steps={accum}"])


@pytest.mark.parametrize(("before", "accum", "world", "expected"),
                         [(4, 1, 2, 2), (2, 2, 4, 1), (4, 1, 1, 4), (2, 3, 3, 2), (2, 1, 2, 1)])
def test_the_accumulation_steps_follow_the_number_of_processes(before, accum, world, expected):
    logs: list[str] = []
    cfg = keep_micro_batch(command(), checkpoint(before, accum), world, logs.append)
    assert cfg.train.accum_steps == expected and cfg.train.batch_size == 48
    assert bool(logs) == (before != world)


def test_a_split_that_cannot_keep_the_micro_batch_is_refused_with_what_to_change():
    with pytest.raises(ConfigError, match=r"3 process\(es\) x 1 micro-batch\(es\) of 16 images; "
                                          r"2 processes cannot .* divides 3.*train\.accum_steps"):
        keep_micro_batch(command(), checkpoint(3, 1), 2, print)


def test_a_new_global_batch_is_the_users_split():
    cfg = keep_micro_batch(command(batch=96), checkpoint(4, 1), 2, print)
    assert cfg.train.accum_steps == 1 and cfg.train.batch_size == 96
