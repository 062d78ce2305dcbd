"""The integer model of a checkpoint: it tracks the float block; quantize_linear names bad tensors."""

import numpy as np
import pytest
import torch
from export_fixtures import inputs

from inhibitron.quant.checkpoint import CheckpointError, load_checkpoint


def test_integer_model_tracks_the_float_attention_block(student, exported):
    path, _ = exported
    ck = load_checkpoint(path)
    ids, am = inputs()
    hidden_in = {}
    layer0 = student.encoder.layer[0].attention

    def grab(_m, args, kwargs):
        hidden_in["x"] = args[0] if args else kwargs["hidden_states"]

    handle = layer0.self.register_forward_pre_hook(grab, with_kwargs=True)
    dense_out = {}
    handle2 = layer0.output.dense.register_forward_hook(lambda m, i, o: dense_out.setdefault("y", o))
    with torch.no_grad():
        student(input_ids=ids, attention_mask=am)
    handle.remove()
    handle2.remove()
    mask = am.bool().numpy()
    got = ck.layers[0].attention_block(hidden_in["x"].numpy(), mask)
    ref = dense_out["y"].double().numpy()
    err = (got - ref)[mask]
    assert 10 * np.log10(np.sum(ref[mask] ** 2) / np.sum(err**2)) > 20.0  # dB, 8-bit everything


def test_nan_bias_names_the_tensor_in_build(student):
    from inhibitron.quant.projection import quantize_linear

    lin = torch.nn.Linear(4, 3)
    with torch.no_grad():
        lin.bias[1] = float("nan")
    with pytest.raises(CheckpointError, match=r"layer 5 v\.bias contains NaN or Inf \(first at index \(1,\)\)"):
        quantize_linear(lin, name="layer 5 v", input_scale=0.1)
    with torch.no_grad():
        lin.weight[2, 0] = float("inf")
    with pytest.raises(ValueError, match=r"layer 5 v\.weight contains NaN or Inf \(first at index \(2, 0\)\)"):
        quantize_linear(lin, name="layer 5 v", input_scale=0.1)
