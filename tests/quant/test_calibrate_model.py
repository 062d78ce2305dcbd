"""calibrate_student: one record and two activation scales per layer, the SQNR of quant.sqnr, bad input."""

import math

import numpy as np
import pytest
import torch
from export_fixtures import SEQ, inputs

from inhibitron.model.capture import capture_qkv
from inhibitron.quant.calibrate_model import calibrate_student
from inhibitron.quant.golden import golden_from_float, valid_len_from_mask
from inhibitron.quant.sqnr import sqnr_db


def test_one_record_per_layer_and_the_sqnr_of_quant_sqnr(student):
    ids, am = inputs()
    with torch.no_grad():
        cal = calibrate_student(student, ids, am, seq_len=SEQ, act_bits=8)
    assert set(cal) == {"layer_quants", "input_scales", "context_scales", "sqnr_db"}
    assert [len(v) for v in cal.values()] == [2, 2, 2, 2]
    assert all(s > 0 and math.isfinite(s) for s in cal["input_scales"] + cal["context_scales"])
    # The records run the golden model on the layer's real Q/K/V; 8 bits: tens of dB.
    with torch.no_grad():
        layer = capture_qkv(student, ids, am)[0]
    length = valid_len_from_mask(am.bool().numpy())[:, None]
    gold = golden_from_float(layer["q"], layer["k"], layer["v"], length, cal["layer_quants"][0])
    assert gold.shape == tuple(layer["q"].shape) and np.all(np.isfinite(gold))
    assert all(15 < s < 80 for s in cal["sqnr_db"])


def test_sqnr_db_is_the_one_of_quant_sqnr():
    ref = np.array([1.0, -2.0, 3.0])
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(ref, ref + [0.1, 0.0, -0.1]) == pytest.approx(10 * math.log10(14 / 0.02))


def test_inputs_longer_than_the_core_are_refused(student):
    ids, am = inputs()
    with pytest.raises(ValueError, match=r"calibration inputs have 12 tokens, more than seq_len=8"):
        calibrate_student(student, ids, am, seq_len=8)
