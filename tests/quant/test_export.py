"""export_student and ``inhibitron export``: reproducible bytes, students of every kind, bad input."""

import argparse
import os

import pytest
import torch
from export_fixtures import SEQ, assert_nothing_left, files_of, inputs, tiny_student
from transformers import BertConfig, BertModel

from inhibitron.cli import UserError
from inhibitron.commands import export as export_cmd
from inhibitron.model.surgery import iter_inhibitors, to_inhibitor
from inhibitron.quant.calibrate import FormatTooNarrowError
from inhibitron.quant.calibrate_model import calibrate_student
from inhibitron.quant.checkpoint import load_checkpoint
from inhibitron.quant.export import export_student
from inhibitron.quant.formats import AttentionFormats
from inhibitron.quant.qat import to_qat


def test_same_inputs_same_bytes(student, exported, tmp_path):
    path, cal = exported
    ids, am = inputs()
    again, _ = export_student(student, tmp_path / "again", input_ids=ids, attention_mask=am, seq_len=SEQ)
    assert files_of(again) == files_of(path)


def test_distilbert_student_exports_and_loads(tmp_path):
    s = tiny_student("distilbert")
    ids, am = inputs()
    path, _ = export_student(s, tmp_path / "d", input_ids=ids, attention_mask=am, seq_len=SEQ, onnx=False,
                             memory_images=False, shared_shifts="ab")
    ck = load_checkpoint(path)
    assert ck.model["model_type"] == "distilbert"
    assert ck.layers[1].projections["o"].weight.shape == (32, 32)
    assert not (path / "mem").exists() and not (path / "onnx").exists()


def test_qat_student_exports_its_own_records(student, tmp_path):
    ids, am = inputs()
    cal = calibrate_student(student, ids, am, seq_len=SEQ)
    qat_model = to_qat(student, cal["layer_quants"])
    path, qcal = export_student(qat_model, tmp_path / "qat", input_ids=ids, attention_mask=am, seq_len=SEQ,
                                onnx=False, memory_images=False)
    assert qcal["layer_quants"] == cal["layer_quants"]
    assert load_checkpoint(path).layer_quants == cal["layer_quants"]
    # The float H of a QAT layer is the golden output rounded to float32: > 100 dB.
    assert all(x is None or x > 100 for x in load_checkpoint(path).calibration["sqnr_db"])


# ---------------------------------------------------------------------------
# Bad input: each names the problem and leaves nothing behind
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_weight_names_the_tensor(tmp_path, value):
    s = tiny_student()
    with torch.no_grad():
        s.encoder.layer[1].attention.self.key.weight[3, 4] = value
    ids, am = inputs()
    before = set(os.listdir(tmp_path))
    with pytest.raises(ValueError, match=r"parameter encoder\.layer\.1\.attention\.self\.key\.weight contains "
                                         r"NaN or Inf \(first at index \(3, 4\)\)"):
        export_student(s, tmp_path / "out", input_ids=ids, attention_mask=am, seq_len=SEQ)
    assert_nothing_left(tmp_path, before)


def test_formats_too_narrow_say_which_and_suggest_a_width(student, tmp_path):
    ids, am = inputs()
    before = set(os.listdir(tmp_path))
    with pytest.raises(FormatTooNarrowError, match=r"layer 0 head \d: Q/K spans only .* of qk_bits=2 .*use qk_bits=\d"):
        export_student(student, tmp_path / "out", input_ids=ids, attention_mask=am, seq_len=SEQ,
                       formats=AttentionFormats(2, 2, 2))
    assert_nothing_left(tmp_path, before)


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def parse(argv):
    parser = argparse.ArgumentParser(prog="inhibitron")
    export_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["export", *argv])


def test_cli_refuses_existing_dir_and_bad_bits(tmp_path, capsys):
    (tmp_path / "exists").mkdir()
    with pytest.raises(UserError, match=r"already exists; pass --force to replace it"):
        export_cmd.run(parse(["--out", str(tmp_path / "exists")]))
    with pytest.raises(SystemExit):
        parse(["--out", "x", "--bits", "40"])
    assert "bits must be in 2..16, got 40" in capsys.readouterr().err


def test_cli_formats_too_narrow_on_real_minilm_leaves_nothing(tmp_path):
    before = set(os.listdir(tmp_path))
    with pytest.raises(UserError, match=r"of qk_bits=2 .* use qk_bits=\d+.*\(pass --bits or --shifts\)"):
        export_cmd.run(parse(["--out", str(tmp_path / "q2"), "--bits", "2", "--calib-sentences", "2",
                              "--max-length", "24", "--no-onnx"]))
    assert_nothing_left(tmp_path, before)


def test_cli_exports_the_real_minilm(tmp_path, capsys):
    out = tmp_path / "minilm_q8"
    rc = export_cmd.run(parse(["--out", str(out), "--calib-sentences", "3", "--max-length", "32"]))
    assert rc == 0
    text = capsys.readouterr().out
    assert "SQNR" in text and f"wrote {out}" in text
    ck = load_checkpoint(out)
    assert len(ck.layers) == 6 and ck.model["num_heads"] == 12 and ck.model["head_dim"] == 32
    assert ck.layers[0].projections["q"].weight.shape == (384, 384)
    assert ck.calibration["sequences"] == 3 and all(s > 10 for s in ck.calibration["sqnr_db"])
    assert (out / "onnx" / "layer_05_qdq.onnx").is_file() and (out / "mem" / "layer_05" / "o_weight.hex").is_file()


def test_cli_exports_a_saved_student_without_tokenizer_files(tmp_path, capsys):
    from inhibitron.model.surgery import save_student

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    s = to_inhibitor(BertModel(cfg).eval())
    with torch.no_grad():
        for _, m in iter_inhibitors(s):
            m.gamma.uniform_(0.25, 0.35)
            m.delta.uniform_(-0.3, 0.0)
    save_student(s, tmp_path / "student")  # config.json + model.safetensors only
    rc = export_cmd.run(parse(["--model", str(tmp_path / "student"), "--out", str(tmp_path / "q"), "--shifts",
                               "head", "--calib-sentences", "2", "--max-length", "24", "--no-memimages"]))
    assert rc == 0
    assert "has no tokenizer; using the embedded all-MiniLM-L6-v2 tokenizer" in capsys.readouterr().out
    ck = load_checkpoint(tmp_path / "q")
    assert len(ck.layers) == 1 and ck.calibration["shared_shifts"] is False
    with pytest.raises(UserError, match="--tokenizer .* has no tokenizer files"):
        export_cmd.run(parse(["--model", str(tmp_path / "student"), "--tokenizer", str(tmp_path / "student"),
                              "--out", str(tmp_path / "q2")]))
