"""Launched by test_distributed.py under torchrun: train, then save this rank's final state.

Not a test module itself (no ``test_`` prefix); argv: OUT_DIR then ``section.key=value`` items.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from xception.config import RunConfig, apply_overrides
from xception.training.fit import fit


def stop_after_epoch(epoch: int) -> None:
    """Every rank leaves at once after ``epoch``'s checkpoint (a job whose nodes all went away)."""
    from xception.training.fit import _Run

    real = _Run._end_epoch

    def end_epoch(self, *args):
        real(self, *args)
        if self.state.progress.epoch > epoch:
            os._exit(0)

    _Run._end_epoch = end_epoch


def main() -> None:
    out, sets = Path(sys.argv[1]), sys.argv[2:]
    rank = int(os.environ["RANK"])
    if os.environ.get("STOP_AFTER_EPOCH"):
        stop_after_epoch(int(os.environ["STOP_AFTER_EPOCH"]))
    res = fit(apply_overrides(RunConfig(), sets), out / "run", log=print)
    state = {k: v.detach().contiguous() for k, v in res.model.state_dict().items()}
    if res.ema_model is not None:
        state |= {f"ema.{k}": v.detach().contiguous() for k, v in res.ema_model.state_dict().items()}
    save_file(state, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps(res.history))


if __name__ == "__main__":
    main()
