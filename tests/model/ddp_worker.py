"""Worker of test_ddp.py: one distillation run, alone or as one of ``torchrun``'s processes.

Usage: ``python ddp_worker.py RECIPE[,RECIPE...] OUT_DIR`` (or under ``torchrun``); rank 0 writes
``OUT_DIR/<recipe>.json``: the loss history and the final student's parameter checksum.
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: tiny_models

from inhibitron.model import ddp  # noqa: E402
from inhibitron.model.recipes import (  # noqa: E402
    default_config,
    distill_full,
    distill_layerwise,
    distill_layerwise_full,
)
from inhibitron.model.surgery import to_inhibitor  # noqa: E402
from tiny_models import make_teacher, random_tokens  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    recipes, out = sys.argv[1].split(","), Path(sys.argv[2])
    env = ddp.setup("cpu")
    try:
        for recipe in recipes:
            _one(recipe, out, env)
    finally:
        ddp.teardown()


def _one(recipe: str, out: Path, env) -> None:
    teacher = make_teacher()
    student = to_inhibitor(teacher)
    # Equal-length sequences and no eta fit: parameters whose exact gradient is 0 (positions only
    # ever padded; eta right after its least-squares fit) get float-noise gradients that depend on
    # how the batch is split, and Adam's first step (~ lr * sign(g)) turns that noise into +-lr.
    # The same holds for the grid of gamma/delta (it fits eta too).
    extra = {"fit_eta": False, "fit_scalars": False} if recipe.startswith("layerwise") else {}
    if recipe == "layerwise_full":
        extra["full_max_steps"] = 2
        extra["full_epochs"] = 10.0
    cfg = default_config(recipe, max_steps=3, batch_size=4, grad_accum=2, lr=3e-3, warmup_ratio=0.0,
                         checkpoint_every=0, **extra)
    fn = {"layerwise": distill_layerwise, "full": distill_full, "layerwise_full": distill_layerwise_full}[recipe]
    data = random_tokens(16, seed=3, min_len=12, max_len=12)
    hist = fn(teacher, student, data, cfg, out / recipe, env=env, progress=False)
    if env.is_main:
        total = float(sum(p.double().sum() for p in student.parameters()))
        (out / f"{recipe}.json").write_text(json.dumps({"losses": [r["loss"] for r in hist], "params": total,
                                                        "world_size": env.world_size}))


if __name__ == "__main__":
    main()
