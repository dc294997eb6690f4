"""Test-only: the clinitune CLI with accelerate's FSDP enabled on CPU processes (gloo).

accelerate turns FSDP on only when a GPU-type device is present; torch's FSDP2 itself runs on a
CPU mesh. This relabels the process group as multi-GPU just before the Trainer builds its
Accelerator, so the rest is accelerate's own FSDP2 path (see docs/distributed.md)."""

import os
import sys

import transformers
from accelerate.state import PartialState
from accelerate.utils import DistributedType

_orig = transformers.Trainer.create_accelerator_and_postprocess


def _patched(self):  # type: ignore[no-untyped-def]
    ps = PartialState._shared_state
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if ps.get("distributed_type") == DistributedType.MULTI_CPU and fsdp:
        ps["distributed_type"] = DistributedType.MULTI_GPU  # AcceleratorState makes this FSDP
    return _orig(self)


transformers.Trainer.create_accelerator_and_postprocess = _patched

if __name__ == "__main__":
    from clinitune.cli import app

    sys.argv[0] = "clinitune"
    app()
