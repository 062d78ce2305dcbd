"""Resumable checkpoints: an interrupted and resumed run is bit-identical; nothing is
overwritten; incompatible or damaged checkpoints are refused with the reason named."""

from __future__ import annotations

import json

import pytest
import torch

from inhibitron.model.distill_config import DistillConfig
from inhibitron.model.recipes import default_config, distill_full, distill_layerwise
from inhibitron.model.surgery import to_inhibitor
from inhibitron.model.train_checkpoint import CheckpointError, latest_checkpoint
from inhibitron.model.train_metrics import read_metrics

from tiny_models import FULL_BATCH, make_teacher, random_tokens

# ---------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [3, 4])  # mid-phase, and exactly at the layer boundary
def test_resume_is_bit_identical(stop, tmp_path):
    """Interrupted + resumed == uninterrupted, with dropout active (RNG state restored)."""
    kw = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
    cfg = default_config("layerwise", max_steps=4, batch_size=4, grad_accum=2, checkpoint_every=2,
                         student_dropout=True)
    data = random_tokens(24)
    teacher = make_teacher(**kw)

    ref_student = to_inhibitor(teacher)
    ref = distill_layerwise(teacher, ref_student, data, cfg, tmp_path / "ref", progress=False)

    student = to_inhibitor(teacher)
    part = distill_layerwise(teacher, student, data, cfg, tmp_path / "run", progress=False,
                             stop_after_steps=stop)
    assert len(part) == stop
    assert not (tmp_path / "run" / "student").exists()  # not finished: no final student
    fresh = to_inhibitor(teacher)  # a new process would rebuild the model from scratch
    done = distill_layerwise(teacher, fresh, data, cfg, tmp_path / "run", progress=False, resume=True)
    assert [r["loss"] for r in done] == [r["loss"] for r in ref]
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == list(range(1, 9))
    for k, v in ref_student.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k


def test_checkpoint_files_are_safetensors_and_json(tmp_path):
    teacher = make_teacher()
    cfg = default_config("full", max_steps=2, checkpoint_every=1, keep_checkpoints=1, **{
        k: v for k, v in FULL_BATCH.items() if k != "checkpoint_every"})
    distill_full(teacher, to_inhibitor(teacher), random_tokens(8), cfg, tmp_path / "r", progress=False)
    ckpts = sorted((tmp_path / "r" / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["step-0000002"]  # keep_checkpoints=1
    files = sorted(p.name for p in ckpts[0].iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "rng-rank0.safetensors", "trainer.json"]
    meta = json.loads((ckpts[0] / "trainer.json").read_text())
    assert meta["global_step"] == 2 and meta["recipe"] == "full"
    assert DistillConfig.from_dict(meta["config"]) == cfg


# ---------------------------------------------------------------------------
# Bad input: nothing overwritten, incompatible resumes refused
# ---------------------------------------------------------------------------


def _quick(tmp_path, name="r", **kw):
    teacher = make_teacher()
    cfg = default_config("full", max_steps=2, **{**FULL_BATCH, **kw})
    return teacher, cfg, tmp_path / name


def test_refuses_to_overwrite_a_run(tmp_path):
    teacher, cfg, out = _quick(tmp_path)
    distill_full(teacher, to_inhibitor(teacher), random_tokens(8), cfg, out, progress=False)
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match="already holds a run .* resume it \\(--resume\\)"):
        distill_full(teacher, to_inhibitor(teacher), random_tokens(8), cfg, out, progress=False)
    assert (out / "metrics.jsonl").read_text() == before


def test_resume_without_checkpoint(tmp_path):
    teacher, cfg, out = _quick(tmp_path)
    with pytest.raises(CheckpointError, match="nothing to resume: .* has no checkpoints/step-"):
        distill_full(teacher, to_inhibitor(teacher), random_tokens(8), cfg, out, resume=True)
    with pytest.raises(CheckpointError, match="checkpoint '.*nowhere' does not exist"):
        distill_full(teacher, to_inhibitor(teacher), random_tokens(8), cfg, out, resume=tmp_path / "nowhere")


def test_resume_with_other_config_or_recipe_or_model(tmp_path):
    teacher, cfg, out = _quick(tmp_path)
    distill_full(teacher, to_inhibitor(teacher), random_tokens(8), cfg, out, progress=False,
                 stop_after_steps=1)
    other = default_config("full", max_steps=2, **{**FULL_BATCH, "lr": 1e-3})
    with pytest.raises(CheckpointError, match=r"configuration differs \(lr: checkpoint 0.0003 vs now 0.001\)"):
        distill_full(teacher, to_inhibitor(teacher), random_tokens(8), other, out, resume=True)
    lw = default_config("layerwise", max_steps=2, **FULL_BATCH)
    with pytest.raises(CheckpointError, match="written by recipe 'full', this run is 'layerwise'"):
        distill_layerwise(teacher, to_inhibitor(teacher), random_tokens(8), lw, out, resume=True)
    wide = make_teacher(intermediate_size=48)
    with pytest.raises(CheckpointError, match="student architecture differs .*intermediate.dense"):
        distill_full(wide, to_inhibitor(wide), random_tokens(8), cfg, out, resume=True)
    # The run folder is untouched by the refusals.
    assert len(read_metrics(out / "metrics.jsonl")) == 1


def test_damaged_checkpoint(tmp_path):
    teacher, cfg, out = _quick(tmp_path)
    distill_full(teacher, to_inhibitor(teacher), random_tokens(8), cfg, out, progress=False,
                 stop_after_steps=1)
    ckpt = latest_checkpoint(out)
    (ckpt / "trainer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="trainer.json is damaged"):
        distill_full(teacher, to_inhibitor(teacher), random_tokens(8), cfg, out, resume=True)
    (ckpt / "trainer.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match="not an Inhibitron distillation checkpoint"):
        distill_full(teacher, to_inhibitor(teacher), random_tokens(8), cfg, out, resume=ckpt)


@pytest.mark.parametrize("stop", [4, 5])  # at the start of the full phase, and inside it
def test_resume_of_layerwise_full_is_bit_identical(stop, tmp_path):
    """The full phase has its own step count and lr; resuming across it reproduces the run."""
    from inhibitron.model.recipes import distill_layerwise_full

    cfg = default_config("layerwise_full", max_steps=2, full_max_steps=3, full_epochs=10.0, batch_size=4,
                         grad_accum=1, checkpoint_every=1, fit_scalars=True)
    data = random_tokens(12)
    teacher = make_teacher()
    ref_student = to_inhibitor(teacher)
    ref = distill_layerwise_full(teacher, ref_student, data, cfg, tmp_path / "ref", progress=False)
    assert [r["phase"] for r in ref] == ["layer 0"] * 2 + ["layer 1"] * 2 + ["full"] * 3
    student = to_inhibitor(teacher)
    distill_layerwise_full(teacher, student, data, cfg, tmp_path / "run", progress=False, stop_after_steps=stop)
    fresh = to_inhibitor(teacher)
    done = distill_layerwise_full(teacher, fresh, data, cfg, tmp_path / "run", progress=False, resume=True)
    assert [r["loss"] for r in done] == [r["loss"] for r in ref]
    for k, v in ref_student.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k
