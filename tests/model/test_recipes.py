"""Each recipe trains and lowers its loss; layer-wise trains only what it should; resume is bit-identical."""

from __future__ import annotations

import json

import pytest
import torch

from inhibitron.model.classifier import classifier_student
from inhibitron.model.losses import layer_trainable_names
from inhibitron.model.recipes import (
    default_config,
    distill_full,
    distill_layerwise,
    distill_task,
    finetune,
    finetune_qat,
)
from inhibitron.model.schedule import lr_factor
from inhibitron.model.surgery import attention_modules, to_inhibitor
from inhibitron.model.train_metrics import read_metrics

from tiny_models import FULL_BATCH, assert_eta_is_least_squares, make_classifier, make_teacher, random_tokens


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_layerwise_lowers_each_layer_loss(kind, tmp_path):
    teacher = make_teacher(kind)
    student = to_inhibitor(teacher)
    cfg = default_config("layerwise", max_steps=6, lr=3e-3, **FULL_BATCH)
    hist = distill_layerwise(teacher, student, random_tokens(8), cfg, tmp_path / "run", progress=False)
    assert [r["phase"] for r in hist] == ["layer 0"] * 6 + ["layer 1"] * 6
    for layer in (0, 1):
        losses = [r["loss"] for r in hist if r["layer"] == layer]
        assert losses[-1] < 0.9 * losses[0], losses
    out = tmp_path / "run"
    for name in ("run.json", "metrics.jsonl", "losses.png", "phases.jsonl", "student/model.safetensors"):
        assert (out / name).is_file(), name
    assert len(read_metrics(out / "metrics.jsonl")) == 12


def test_layerwise_fit_eta_is_least_squares(tmp_path):
    """After the eta fit, scaling any head's eta up or down raises the context MSE."""
    teacher = make_teacher()
    student = to_inhibitor(teacher)
    cfg = default_config("layerwise", max_steps=1, lr=1e-12, layers=(0,), fit_scalars=False, **FULL_BATCH)
    hist = distill_layerwise(teacher, student, random_tokens(8), cfg, tmp_path / "r", progress=False)
    info = [json.loads(x) for x in (tmp_path / "r" / "phases.jsonl").read_text().splitlines()]
    assert info[0]["phase"] == "layer 0" and info[0]["eta_before"] == [1.0] * 4
    assert all(abs(e) < 0.5 for e in info[0]["eta_after"])  # summing over keys: eta << 1
    assert_eta_is_least_squares(teacher, student, hist[0]["loss"], random_tokens(8))


def test_layerwise_trains_only_current_layer_qkv_and_inhibitor(tmp_path):
    teacher = make_teacher()
    student = to_inhibitor(teacher)
    before = _snapshot(student)
    cfg = default_config("layerwise", max_steps=3, lr=1e-2, layers=(1,), **FULL_BATCH)
    distill_layerwise(teacher, student, random_tokens(8), cfg, tmp_path / "r", progress=False)
    after = _snapshot(student)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    expected = set(layer_trainable_names(student, 1))
    assert expected == {
        f"encoder.layer.1.attention.self.{m}.{p}" for m in ("query", "key", "value") for p in ("weight", "bias")
    } | {f"encoder.layer.1.attention.self.inhibitor.{p}" for p in ("gamma", "eta", "delta")}
    assert changed == expected
    # The teacher never changes.
    assert all(not p.requires_grad for p in teacher.parameters())


def test_layerwise_distilbert_excludes_out_lin(tmp_path):
    student = to_inhibitor(make_teacher("distilbert"))
    names = layer_trainable_names(student, 0)
    assert any(".q_lin." in n for n in names) and not any("out_lin" in n for n in names)
    with pytest.raises(ValueError, match="layer 5 does not exist: the model has 2 layers"):
        layer_trainable_names(student, 5)


def test_layer_frozen_after_its_phase(tmp_path):
    """Layer 0 ends its phase with the same weights whether or not layer 1 trains afterwards."""
    teacher = make_teacher()
    data = random_tokens(8)
    s1, s2 = to_inhibitor(teacher), to_inhibitor(teacher)
    distill_layerwise(teacher, s1, data, default_config("layerwise", max_steps=3, layers=(0,), **FULL_BATCH),
                      tmp_path / "a", progress=False)
    distill_layerwise(teacher, s2, data, default_config("layerwise", max_steps=3, **FULL_BATCH),
                      tmp_path / "b", progress=False)
    for n in layer_trainable_names(s1, 0):
        assert torch.equal(s1.state_dict()[n], s2.state_dict()[n]), n


def test_layerwise_teacher_input_mode(tmp_path):
    teacher = make_teacher()
    student = to_inhibitor(teacher)
    cfg = default_config("layerwise", max_steps=4, lr=3e-3, layer_input="teacher", **FULL_BATCH)
    hist = distill_layerwise(teacher, student, random_tokens(8), cfg, tmp_path / "r", progress=False)
    l1 = [r["loss"] for r in hist if r["layer"] == 1]
    assert l1[-1] < l1[0]


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_full_lowers_loss(kind, tmp_path):
    teacher = make_teacher(kind)
    student = to_inhibitor(teacher)
    cfg = default_config("full", max_steps=8, lr=3e-3, **FULL_BATCH)
    hist = distill_full(teacher, student, random_tokens(8), cfg, tmp_path / "r", progress=False)
    assert hist[-1]["loss"] < 0.7 * hist[0]["loss"]
    assert set(hist[0]) >= {"loss", "hidden_mse", "lr", "epoch", "step", "grad_norm"}


def test_task_kd_lowers_loss(tmp_path):
    teacher = make_classifier("bert", num_labels=3, seed=1)
    student = classifier_student(make_teacher("bert"), num_labels=3)
    cfg = default_config("task", max_steps=8, lr=3e-3, **FULL_BATCH)
    assert (cfg.temperature, cfg.alpha_kd, cfg.alpha_hidden) == (4.0, 0.5, 0.5)
    hist = distill_task(teacher, student, random_tokens(8, labels=3), cfg, tmp_path / "r", progress=False)
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]
    assert hist[-1]["kd"] < hist[0]["kd"] and {"kd", "hidden_mse"} <= set(hist[0])


def test_task_kd_label_mismatch(tmp_path):
    teacher = make_classifier("bert", num_labels=3)
    student = classifier_student(make_teacher("bert"), num_labels=2)
    with pytest.raises(ValueError, match="teacher has 3 labels, student 2"):
        distill_task(teacher, student, random_tokens(8, labels=2), default_config("task"), tmp_path / "r")


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_finetune_lowers_loss(kind, tmp_path):
    student = classifier_student(make_teacher(kind), num_labels=2)
    cfg = default_config("finetune", max_steps=8, lr=3e-3, **FULL_BATCH)
    hist = finetune(student, random_tokens(8, labels=2), cfg, tmp_path / "r", progress=False)
    assert hist[-1]["ce"] < 0.7 * hist[0]["ce"]


def test_finetune_needs_labels(tmp_path):
    student = classifier_student(make_teacher(), num_labels=2)
    with pytest.raises(ValueError, match="fine-tuning needs labelled data"):
        finetune(student, random_tokens(8), default_config("finetune"), tmp_path / "r")


def test_qat_lowers_loss(tmp_path):
    qat = pytest.importorskip("inhibitron.quant.qat")
    from inhibitron.model.capture import capture_qkv
    from inhibitron.quant.calibrate import fold_layer, observe_layer

    teacher = make_teacher()
    student = to_inhibitor(teacher)
    data = random_tokens(8)
    batch = data.collate(list(range(8)))
    layers = capture_qkv(student, batch["input_ids"], batch["attention_mask"])
    lqs = []
    for i, (layer, (_, inhib)) in enumerate(zip(layers, [(None, m.inhibitor) for _, _, m in attention_modules(student)])):
        q_obs, k_obs, v_obs = observe_layer(layer, name=f"layer {i}")
        lqs.append(fold_layer(inhib.gamma.detach().numpy(), inhib.eta.detach().numpy(),
                              inhib.delta.detach().numpy(), q_obs, k_obs, v_obs, seq_len=64,
                              min_levels=0, name=f"layer {i}"))

    def fake_quant(model):
        return qat.to_qat(model, lqs, inplace=True)

    cfg = default_config("qat", max_steps=6, lr=3e-3, **FULL_BATCH)
    hist = finetune_qat(student, data, cfg, tmp_path / "r", fake_quant=fake_quant, teacher=teacher,
                        progress=False)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert (tmp_path / "r" / "student" / "model.safetensors").is_file()


def test_paper_defaults():
    lw, full, task, ft = (default_config(r) for r in ("layerwise", "full", "task", "finetune"))
    assert (lw.lr, lw.epochs, lw.batch_size, lw.grad_accum, lw.warmup_ratio, lw.schedule) == (
        5e-4, 2.0, 8, 4, 0.05, "cosine")
    assert (full.lr, full.epochs, full.grad_accum, full.schedule) == (3e-4, 3.0, 32, "cosine")
    assert (task.lr, task.epochs, task.temperature, task.alpha_kd, task.alpha_hidden, task.schedule) == (
        2e-5, 5.0, 4.0, 0.5, 0.5, "linear")
    assert (ft.lr, ft.epochs, ft.weight_decay, ft.schedule) == (2e-5, 4.0, 0.01, "cosine")
    assert lw.seed == 42
    # Ours, on by default where they won on the fixed evaluation set (docs/distillation.md).
    assert (lw.fit_scalars, lw.student_dropout, full.student_dropout) == (True, False, False)
    lwf = default_config("layerwise_full")
    assert (lwf.full_epochs, lwf.full_lr, lwf.fit_scalars, lwf.student_dropout, lwf.alpha_cos) == (
        12.0, 3e-4, True, False, 1.0)
    assert (lwf.max_steps, lwf.full_max_steps, lwf.batch_size, lwf.grad_accum, lwf.max_length, lwf.text_unit) == (
        10, 3000, 8, 1, 64, "sentence")
    assert lw.text_unit == full.text_unit == "window"  # the paper's recipes keep its windows
    assert full.alpha_cos == 0.0  # the paper's Exp. 1b loss; the term was measured in layerwise_full only
    assert ft.student_dropout and task.student_dropout  # no teacher in eval mode to match / not measured


def test_lr_schedule_and_batch_errors(tmp_path):
    assert lr_factor(0, 100, 0.05, "linear") == pytest.approx(1 / 6)  # no step at lr 0
    assert lr_factor(5, 100, 0.05, "linear") == 1.0
    assert lr_factor(100, 100, 0.05, "cosine") == 0.0
    teacher = make_teacher()
    with pytest.raises(ValueError, match="training data has 3 sequences, fewer than one batch"):
        distill_full(teacher, to_inhibitor(teacher), random_tokens(3), default_config("full"),
                             tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="config is for recipe 'full'; use default_config\\('layerwise'\\)"):
        distill_layerwise(teacher, to_inhibitor(teacher), random_tokens(8), default_config("full"),
                                  tmp_path / "r2")
    with pytest.raises(TypeError, match="no inhibitor attention"):
        distill_full(teacher, make_teacher(), random_tokens(8), default_config("full"), tmp_path / "r3")


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the recipe registry: registrations in a test do not leak."""
    from inhibitron.model import recipes

    monkeypatch.setattr(recipes, "REGISTRY", dict(recipes.REGISTRY))
    return recipes


def test_registry_lists_the_paper_recipes_in_order():
    from inhibitron.model import recipes

    assert recipes.recipe_names() == ("layerwise", "full", "layerwise_full", "task", "finetune", "qat")
    assert recipes.RECIPES == recipes.recipe_names()
    assert recipes.get_recipe("layerwise").function is distill_layerwise
    assert recipes.get_recipe("finetune").function is finetune
    assert recipes.PAPER_DEFAULTS["full"]["grad_accum"] == 32
    assert [recipes.get_recipe(n).data for n in recipes.recipe_names()] == [
        "text", "text", "text", "labelled", "labelled", "either"]
    with pytest.raises(ValueError, match=r"recipe must be one of \('layerwise', .*'qat'\), not 'bogus'"):
        recipes.get_recipe("bogus")


def test_a_registered_recipe_gets_a_default_config(registry):
    @registry.register("dummy", defaults={"epochs": 0.5, "lr": 1e-3}, source="Exp. X")
    def dummy(teacher, student, data, config, out_dir, **kw):
        return []

    assert registry.recipe_names()[-1] == "dummy"
    assert registry.get_recipe("dummy").function is dummy and registry.get_recipe("dummy").source == "Exp. X"
    cfg = default_config("dummy", max_steps=3)
    assert (cfg.recipe, cfg.epochs, cfg.lr, cfg.max_steps) == ("dummy", 0.5, 1e-3, 3)


def test_register_refuses_bad_recipes(registry):
    def fn(**kw):
        return []

    with pytest.raises(ValueError, match="recipe 'full' is already registered"):
        registry.register("full", defaults={})(fn)
    with pytest.raises(ValueError, match="data must be one of .*, not 'images'"):
        registry.register("x", defaults={}, data="images")(fn)
    with pytest.raises(ValueError, match=r"defaults of recipe 'x' name unknown DistillConfig fields \['learning_rate'\]"):
        registry.register("x", defaults={"learning_rate": 1.0})(fn)
    with pytest.raises(ValueError, match="recipe name must be an identifier, not 'two words'"):
        registry.register("two words", defaults={})(fn)
    assert "x" not in registry.recipe_names()


def test_registry_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, inhibitron.model.recipes as r; r.default_config('task'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_distill_module_re_exports_the_api():
    """``inhibitron.model.distill`` stays a one-import facade over the split modules."""
    from inhibitron.model import distill, recipes, train_checkpoint, training

    assert distill.distill_layerwise is recipes.distill_layerwise
    assert distill.CheckpointError is train_checkpoint.CheckpointError
    assert distill.train is training.train
    assert all(hasattr(distill, name) for name in distill.__all__)


@pytest.mark.parametrize("variant", ["valid", "thesis"])
def test_fit_scalars_picks_a_grid_point_no_worse_than_the_initial_one(variant, tmp_path):
    """The per-head grid of gamma/delta (with least-squares eta) starts each layer at a lower
    context error than the initial gamma = 1, delta = -0.5 with its least-squares eta."""
    from inhibitron.model.losses import DELTA_GRID, GAMMA_GRID

    teacher = make_teacher()
    student = to_inhibitor(teacher, variant=variant)
    cfg = default_config("layerwise", max_steps=1, lr=1e-12, fit_scalars=True, fit_eta=False, **FULL_BATCH)
    distill_layerwise(teacher, student, random_tokens(8), cfg, tmp_path / "r", progress=False)
    info = [json.loads(x) for x in (tmp_path / "r" / "phases.jsonl").read_text().splitlines()]
    assert [i["phase"] for i in info] == ["layer 0", "layer 1"]
    for layer, rec in enumerate(info):
        assert all(g in GAMMA_GRID for g in rec["gamma"]) and all(d in DELTA_GRID for d in rec["delta"])
        assert all(a <= b + 1e-12 for a, b in zip(rec["rel_error"], rec["rel_error_at_init"]))
        inhib = attention_modules(student)[layer][2].inhibitor
        assert inhib.gamma.tolist() == pytest.approx(rec["gamma"])
        assert inhib.effective_delta().tolist() == pytest.approx(rec["delta"])
        if variant == "thesis":
            assert all(d <= 0 for d in rec["delta"])


def test_layerwise_full_runs_the_layers_then_a_full_phase(tmp_path):
    from inhibitron.model.recipes import distill_layerwise_full

    teacher = make_teacher()
    student = to_inhibitor(teacher)
    cfg = default_config("layerwise_full", max_steps=3, full_max_steps=4, full_epochs=100.0, lr=3e-3, full_lr=1e-3,
                         **FULL_BATCH)
    hist = distill_layerwise_full(teacher, student, random_tokens(8), cfg, tmp_path / "run", progress=False)
    assert [r["phase"] for r in hist] == ["layer 0"] * 3 + ["layer 1"] * 3 + ["full"] * 4
    assert [r["lr"] for r in hist] == [3e-3] * 6 + [1e-3] * 4
    full = [r["loss"] for r in hist if r["phase"] == "full"]
    assert full[-1] < full[0]
    assert (tmp_path / "run" / "student" / "model.safetensors").is_file()
