"""The training loop's options: per-phase steps and lr, the scalar learning rate, student mode, bf16."""

from __future__ import annotations

import pytest
import torch

from inhibitron.model.losses import LossTerm, full_loss
from inhibitron.model.recipes import default_config
from inhibitron.model.schedule import lr_factor
from inhibitron.model.surgery import to_inhibitor
from inhibitron.model.training import Phase, _optimizer, is_inhibitor_scalar, train

from tiny_models import FULL_BATCH, make_teacher, random_tokens


def test_warmup_has_no_step_at_learning_rate_zero():
    assert lr_factor(0, 10, 0.05, "cosine") == pytest.approx(0.5)  # warm-up of 1 step: half the peak
    assert lr_factor(0, 100, 0.05, "linear") == pytest.approx(1 / 6)
    assert lr_factor(4, 100, 0.05, "linear") == pytest.approx(5 / 6)
    assert lr_factor(5, 100, 0.05, "linear") == 1.0
    assert lr_factor(0, 10, 0.0, "constant") == 1.0


def test_inhibitor_scalars_get_their_own_learning_rate():
    student = to_inhibitor(make_teacher())
    names = [n for n, _ in student.named_parameters()]
    scalars = [n for n in names if is_inhibitor_scalar(n)]
    assert len(scalars) == 2 * 2 and all(n.rsplit(".", 1)[1] in ("gamma", "delta") for n in scalars)
    cfg = default_config("full", scalar_lr_mult=100.0, weight_decay=0.1)
    opt = _optimizer(student, names, cfg, 1e-3)
    by_id = {id(p): n for n, p in student.named_parameters()}
    groups = {tuple(sorted(by_id[id(p)] for p in g["params"])): (g["lr"], g["weight_decay"])
              for g in opt.param_groups}
    assert groups[tuple(sorted(scalars))] == (pytest.approx(0.1), 0.0)
    matrices = [n for n in names if not is_inhibitor_scalar(n) and dict(student.named_parameters())[n].dim() >= 2]
    assert groups[tuple(sorted(matrices))] == (1e-3, 0.1)


def _recording_phase(student, name, seen, **kw):
    names = [n for n, _ in student.named_parameters()]
    loss = full_loss(make_teacher(), student)

    def wrapped(batch):
        seen.append((name, student.training))
        return loss(batch)

    return Phase(name, None, names, wrapped, **kw)


@pytest.mark.parametrize("dropout", [False, True])
def test_student_mode_follows_config(dropout, tmp_path):
    student = to_inhibitor(make_teacher())
    seen: list = []
    cfg = default_config("full", max_steps=2, student_dropout=dropout, **FULL_BATCH)
    train(student, [_recording_phase(student, "full", seen)], random_tokens(8), cfg, tmp_path / "r", progress=False)
    assert seen == [("full", dropout)] * 2


def test_phases_with_their_own_steps_and_lr(tmp_path):
    student = to_inhibitor(make_teacher())
    seen: list = []
    cfg = default_config("full", max_steps=2, lr=1e-3, **FULL_BATCH)
    phases = [_recording_phase(student, "a", seen), _recording_phase(student, "b", seen, steps=3, lr=5e-3)]
    hist = train(student, phases, random_tokens(8), cfg, tmp_path / "r", progress=False)
    assert [r["phase"] for r in hist] == ["a", "a", "b", "b", "b"]
    assert [r["step"] for r in hist] == [1, 2, 3, 4, 5]
    assert [r["lr"] for r in hist] == [1e-3, 1e-3, 5e-3, 5e-3, 5e-3]  # constant schedule


def test_bf16_autocast_trains(tmp_path):
    teacher = make_teacher()
    student = to_inhibitor(teacher)
    cfg = default_config("full", max_steps=3, lr=3e-3, bf16=True, **FULL_BATCH)
    seen = []

    def loss(batch):
        seen.append(torch.is_autocast_enabled("cpu"))
        return {"x": LossTerm(full_loss(teacher, student)(batch)["hidden_mse"].value_sum, "tokens")}

    names = [n for n, _ in student.named_parameters()]
    hist = train(student, [Phase("full", None, names, loss)], random_tokens(8), cfg, tmp_path / "r",
                 progress=False)
    assert seen == [True] * 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in hist)
    assert all(p.dtype == torch.float32 for p in student.parameters())


def test_pooled_cosine_term_of_the_full_loss():
    teacher = make_teacher()
    batch = random_tokens(4).collate([0, 1, 2, 3])
    same = full_loss(teacher, teacher, alpha_cos=0.5)(batch)
    assert set(same) == {"hidden_mse", "pooled_cos"}
    assert same["pooled_cos"].kind == "sequences" and same["pooled_cos"].weight == 0.5
    assert float(same["pooled_cos"].value_sum.detach()) == pytest.approx(0.0, abs=1e-5)
    other = full_loss(teacher, to_inhibitor(teacher), alpha_cos=0.5)(batch)
    assert 0.0 < float(other["pooled_cos"].value_sum.detach()) <= 8.0  # 4 sequences, 1 - cos in [0, 2]
    assert set(full_loss(teacher, teacher)(batch)) == {"hidden_mse"}


def test_similarity_structure_term_hand_checked():
    from inhibitron.model.losses import _pooled_similarity_sum
    from inhibitron.model.pooling import mean_pool

    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    # mean-pooled embeddings: teacher e1, e2, e1 (cos 0, 1, 0); student e1, e2, e2 (cos 0, 0, 1)
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])

    def hidden(rows):
        return torch.stack([torch.stack([r, r, r * 7.0]) for r in rows])   # the masked token must not count

    t, s = mean_pool(hidden([e1, e2, e1]), mask), mean_pool(hidden([e1, e2, e2]), mask)
    # pairs (0,2): teacher 1, student 0; (1,2): teacher 0, student 1; (0,1): both 0
    # per sequence i: mean over j != i of the squared differences: 1/2, 1/2, 2/2 -> sum 2
    assert float(_pooled_similarity_sum(t, s)) == pytest.approx(2.0)
    assert float(_pooled_similarity_sum(t, t)) == pytest.approx(0.0, abs=1e-7)
    assert float(_pooled_similarity_sum(t[:1], s[:1])) == 0.0      # one sequence: no pairs


def test_similarity_structure_term_of_the_full_loss():
    teacher = make_teacher()
    batch = random_tokens(4).collate([0, 1, 2, 3])
    terms = full_loss(teacher, to_inhibitor(teacher), alpha_sim=2.0)(batch)
    assert set(terms) == {"hidden_mse", "pooled_sim"}
    assert terms["pooled_sim"].kind == "sequences" and terms["pooled_sim"].weight == 2.0
    assert 0.0 < float(terms["pooled_sim"].value_sum.detach()) <= 4 * 4.0
    with pytest.raises(ValueError, match="alpha_sim must be a number >= 0"):
        default_config("full", alpha_sim=-1.0)
