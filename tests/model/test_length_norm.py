"""Length normalisation of inhibitor attention: e(L) = round(log2 L), the 2**-e(L) factor per
sequence, the eta fit and the gamma/delta grid with the factor applied, and the refusals."""

from __future__ import annotations

import json
import math

import pytest
import torch

from inhibitron.model.attention import InhibitorAttention, length_exponent, length_exponents
from inhibitron.model.losses import DELTA_GRID, GAMMA_GRID
from inhibitron.model.recipes import default_config, distill_layerwise
from inhibitron.model.surgery import attention_modules, load_student, save_student, to_inhibitor

from tiny_models import FULL_BATCH, assert_eta_is_least_squares, make_teacher, random_tokens

H, D = 3, 4


# The thresholds isqrt(2**(2k+1)) + 1 = 2, 3, 6, 12, 23, 46, 91, 182 and the lengths on both sides.
@pytest.mark.parametrize("length, e", [
    (1, 0), (2, 1), (3, 2), (4, 2), (5, 2), (6, 3), (8, 3), (11, 3), (12, 4), (16, 4), (22, 4),
    (23, 5), (32, 5), (45, 5), (46, 6), (64, 6), (90, 6), (91, 7), (128, 7), (181, 7), (182, 8), (512, 9),
])
def test_length_exponent_table(length, e):
    assert length_exponent(length) == e
    assert length_exponents(torch.tensor([length])).tolist() == [e]


def test_length_exponent_is_round_log2_without_ties():
    """log2 L is never a half-integer (L**2 is never an odd power of two), so no tie rule is needed."""
    lengths = range(1, 1 << 14)
    assert all(length_exponent(n) == round(math.log2(n)) for n in lengths)
    assert all(abs(math.log2(n) - math.floor(math.log2(n)) - 0.5) > 1e-6 for n in lengths)
    assert length_exponents(torch.tensor(list(lengths))).tolist() == [length_exponent(n) for n in lengths]
    assert length_exponents(torch.tensor([[1, 6], [5, 12]])).tolist() == [[0, 3], [2, 4]]  # any shape


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "8"])
def test_length_exponent_refuses_a_bad_length(bad):
    with pytest.raises(ValueError, match=f"length must be an integer >= 1, not {bad!r}"):
        length_exponent(bad)


def test_length_exponents_refuses_zero():
    with pytest.raises(ValueError, match="lengths must be >= 1, got a minimum of 0"):
        length_exponents(torch.tensor([3, 0]))


@pytest.mark.parametrize("bad", ["log2", "exact", None, True])
def test_constructor_refuses_a_bad_length_norm(bad):
    with pytest.raises(ValueError, match=r"length_norm must be one of \('none', 'pow2'\), not " + repr(bad)):
        InhibitorAttention(H, D, length_norm=bad)
    with pytest.raises(ValueError, match="length_norm must be one of"):
        to_inhibitor(make_teacher(), length_norm=bad)


def _pair(seed=0):
    torch.manual_seed(seed)
    plain = InhibitorAttention(H, D).double()
    with torch.no_grad():
        plain.gamma.copy_(torch.rand(H) + 0.5)
        plain.eta.copy_(torch.randn(H))
        plain.delta.copy_(torch.randn(H) * 0.4)
    norm = InhibitorAttention(H, D, length_norm="pow2").double()
    norm.load_state_dict(plain.state_dict())
    return plain, norm


def test_pow2_scales_each_sequence_by_two_to_the_minus_e():
    plain, norm = _pair()
    g = torch.Generator().manual_seed(1)
    B, n = 4, 13
    q, k, v = (torch.randn(B, H, n, D, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    lens = [1, 3, 6, 13]  # e = 0, 2, 3, 4
    mask = torch.arange(n)[None, :] < torch.tensor(lens)[:, None]
    out, ref = norm(q, k, v, mask), plain(q, k, v, mask)
    for b, L in enumerate(lens):
        assert torch.equal(out[b], ref[b] * 2.0 ** -length_exponent(L))  # a power of two: exact
    assert norm.length_factor(mask, B, n).tolist() == [1.0, 0.25, 0.125, 0.0625]
    # Without a mask every key is valid: L = n.
    assert torch.equal(norm(q, k, v), plain(q, k, v) * 2.0 ** -length_exponent(n))
    assert plain.length_factor(mask, B, n).tolist() == [1.0] * B
    # The gradient carries the same factor.
    (gq,) = torch.autograd.grad(out[2].sum(), q)
    (rq,) = torch.autograd.grad(ref[2].sum(), q)
    assert torch.equal(gq, rq * 0.125)
    assert "length_norm='pow2'" in repr(norm) and "length_norm" not in repr(plain)


def test_student_records_and_reloads_length_norm(tmp_path):
    student = to_inhibitor(make_teacher(), length_norm="pow2")
    assert student.config.inhibitor == {"variant": "valid", "length_norm": "pow2"}
    assert all(m.inhibitor.length_norm == "pow2" for _, _, m in attention_modules(student))
    save_student(student, tmp_path / "s")
    assert json.loads((tmp_path / "s" / "config.json").read_text())["inhibitor"]["length_norm"] == "pow2"
    loaded = load_student(tmp_path / "s")
    assert all(m.inhibitor.length_norm == "pow2" for _, _, m in attention_modules(loaded))
    # The default records nothing new: students saved before the option load unchanged.
    assert to_inhibitor(make_teacher()).config.inhibitor == {"variant": "valid"}


def test_layerwise_fit_eta_is_least_squares_with_the_factor(tmp_path):
    """With length_norm="pow2" the eta fit is the least-squares optimum of the normalised context:
    scaling any head's eta up or down raises the context MSE (sequences of 5-20 tokens: e = 2..4)."""
    teacher = make_teacher()
    student = to_inhibitor(teacher, length_norm="pow2")
    plain = to_inhibitor(teacher)
    cfg = default_config("layerwise", max_steps=1, lr=1e-12, layers=(0,), fit_scalars=False, **FULL_BATCH)
    hist = distill_layerwise(teacher, student, random_tokens(8), cfg, tmp_path / "r", progress=False)
    distill_layerwise(teacher, plain, random_tokens(8), cfg, tmp_path / "p", progress=False)
    info = json.loads((tmp_path / "r" / "phases.jsonl").read_text().splitlines()[0])
    other = json.loads((tmp_path / "p" / "phases.jsonl").read_text().splitlines()[0])
    assert info["eta_after"] != pytest.approx(other["eta_after"], rel=1e-3)  # the factor was applied
    assert_eta_is_least_squares(teacher, student, hist[0]["loss"], random_tokens(8))


def test_fit_scalars_with_the_factor_is_no_worse_than_the_initial_point(tmp_path):
    teacher = make_teacher()
    student = to_inhibitor(teacher, length_norm="pow2")
    cfg = default_config("layerwise", max_steps=1, lr=1e-12, fit_scalars=True, fit_eta=False, **FULL_BATCH)
    distill_layerwise(teacher, student, random_tokens(8), cfg, tmp_path / "r", progress=False)
    info = [json.loads(x) for x in (tmp_path / "r" / "phases.jsonl").read_text().splitlines()]
    for layer, rec in enumerate(info):
        assert all(g in GAMMA_GRID for g in rec["gamma"]) and all(d in DELTA_GRID for d in rec["delta"])
        assert all(a <= b + 1e-12 for a, b in zip(rec["rel_error"], rec["rel_error_at_init"]))
        inhib = attention_modules(student)[layer][2].inhibitor
        assert inhib.eta.tolist() == pytest.approx(rec["eta"])
