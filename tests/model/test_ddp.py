"""Data parallel (torchrun, gloo on CPU, 2 processes) == one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(cmd, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_processes_match_one(tmp_path):
    recipes = "full,layerwise,layerwise_full"
    _run([sys.executable, str(WORKER), recipes, str(tmp_path / "one")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(WORKER), recipes, str(tmp_path / "two")], tmp_path)
    for recipe in recipes.split(","):
        _compare(recipe, tmp_path)


def _compare(recipe, tmp_path):
    one = json.loads((tmp_path / "one" / f"{recipe}.json").read_text())
    two = json.loads((tmp_path / "two" / f"{recipe}.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    n = {"full": 3, "layerwise": 6, "layerwise_full": 8}[recipe]
    assert len(one["losses"]) == len(two["losses"]) == n
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-9)
    # layerwise_full: its full phase trains every parameter after the layer phases, and a few whose
    # exact gradient is 0 get split-dependent float noise that AdamW turns into +-lr steps (see
    # docs/distillation.md, "Data parallel"): the parameter sums then agree to a few lr, not 1e-6.
    tol = {"rel": 1e-6} if recipe != "layerwise_full" else {"abs": 10 * 3e-4}
    assert two["params"] == pytest.approx(one["params"], **tol)
    # Training moved: the curves are not trivially constant.
    assert one["losses"][-1] != one["losses"][0]
