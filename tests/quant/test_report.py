"""The bit-accuracy report: every section and plot for a small checkpoint; bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from inhibitron.model.surgery import to_inhibitor

export = pytest.importorskip("inhibitron.quant.export")
checkpoint = pytest.importorskip("inhibitron.quant.checkpoint")
report = pytest.importorskip("inhibitron.quant.report")


def make_teacher(kind: str = "bert", seed: int = 0):
    """The tiny random BERT of tests/distill/conftest.py (same configuration and seed)."""
    from transformers import BertConfig, BertModel

    assert kind == "bert"
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, initializer_range=0.2, pad_token_id=0)
    return BertModel(cfg).eval()


def random_tokens(n: int, seed: int = 0, *, min_len: int = 5, max_len: int = 20):
    """A TokenDataset of ``n`` random sequences ([CLS]=1 ... [SEP]=2, ids 3..96), as tests/distill/conftest.py."""
    import random

    from inhibitron.model.data import TokenDataset

    rng = random.Random(seed)
    ids = []
    for _ in range(n):
        L = rng.randint(min_len, max_len)
        ids.append([1] + [rng.randint(3, 96) for _ in range(L - 2)] + [2])
    return TokenDataset(ids, None, None, 0)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A tiny student, its quantized checkpoint and report inputs."""
    root = tmp_path_factory.mktemp("report")
    student = to_inhibitor(make_teacher("bert")).eval()
    batch = random_tokens(6, seed=5).collate(list(range(6)))
    path, _ = export.export_student(student, root / "ckpt", input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"], seq_len=32, onnx=False,
                                    memory_images=False)
    ckpt = checkpoint.load_checkpoint(path)
    with torch.no_grad():
        inputs = report.capture_report_inputs(student, input_ids=batch["input_ids"],
                                              attention_mask=batch["attention_mask"])
    cosim = root / "sim.json"
    cosim.write_text(json.dumps([
        {"name": "full-rate", "elements_compared": 4096, "mismatches": 0, "passed": True, "simulator": "verilator"},
        {"name": "backpressure", "elements_compared": 4096, "mismatches": 0, "passed": True,
         "simulator": "verilator"},
    ]))
    return root, student, ckpt, inputs, cosim


def test_report_has_every_section_and_plot(small):
    root, _, ckpt, inputs, cosim = small
    path = report.build_report(ckpt, inputs, root / "out", cosim=cosim, sweep_bits=(4, 8, 12), progress=False,
                               input_description="6 random sequences")
    text = path.read_text()
    for title in report.SECTIONS:
        assert f"## {title}" in text, title
    for png in ("ranges.png", "sweep.png", "errors_layer_00.png", "errors_layer_01.png"):
        data = (root / "out" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"({png})" in text
    assert "**0 mismatches** in 8192" in text
    rec = json.loads((root / "out" / "report.json").read_text())
    assert len(rec["layers"]) == 2 and len(rec["layers"][0]["heads"]) == 4
    head = rec["layers"][0]["heads"][0]
    assert set(head) >= {"max_abs", "mean_abs", "max_abs_lsb", "sqnr_db"}
    # 8-bit on a well-calibrated layer: tens of dB, errors of about an LSB.
    assert 20 < head["sqnr_db"] < 80 and head["max_abs_lsb"] < 8
    assert rec["layers"][0]["block"]["sqnr_db"] > 15
    assert rec["layers"][0]["overflow"] == {"z": 0, "row_sum": 0, "acc": 0}
    assert set(rec["layers"][0]["saturation"]) == {"q", "k", "v", "h", "hidden (projection input)",
                                                   "context (O input)"}
    sweep = rec["sweep"]["sqnr_db"]["0"]
    assert sweep[0] < sweep[1] < sweep[2]  # more bits, less noise


def test_report_without_optional_inputs(small, tmp_path):
    _, _, ckpt, inputs, _ = small
    bare = [{k: d[k] for k in ("q", "k", "v", "mask")} for d in inputs]
    text = report.build_report(ckpt, bare, tmp_path / "r", sweep_bits=(), progress=False).read_text()
    assert "RTL vs golden: not measured" in text
    assert "Not measured: the inputs carry no hidden states" in text
    assert "No sweep requested." in text


def test_report_refuses_existing_folder(small, tmp_path):
    _, _, ckpt, inputs, _ = small
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(report.ReportError, match="exists and is not empty; pass --force"):
        report.build_report(ckpt, inputs, out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    # force replaces only an earlier report, never a folder of someone else's files
    with pytest.raises(report.ReportError, match="does not hold an earlier report"):
        report.build_report(ckpt, inputs, out, force=True, sweep_bits=(8,), progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    report.build_report(ckpt, inputs, out, sweep_bits=(), progress=False)  # an empty folder is fine
    report.build_report(ckpt, inputs, out, force=True, sweep_bits=(8,), progress=False)
    assert (out / "sweep.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temporary folder left


def test_report_bad_inputs(small, tmp_path):
    root, _, ckpt, inputs, _ = small
    with pytest.raises(report.ReportError, match="the checkpoint has 2 layers, the inputs 1"):
        report.build_report(ckpt, inputs[:1], tmp_path / "a", progress=False)
    bad = [dict(d) for d in inputs]
    del bad[1]["v"]
    with pytest.raises(report.ReportError, match="inputs of layer 1 lack 'v'"):
        report.build_report(ckpt, bad, tmp_path / "b", progress=False)
    with pytest.raises(report.ReportError, match="cosimulation summary '.*nope.json' does not exist"):
        report.build_report(ckpt, inputs, tmp_path / "c", cosim=tmp_path / "nope.json", progress=False)
    junk = tmp_path / "junk.json"
    junk.write_text(json.dumps({"hello": 1}))
    with pytest.raises(report.ReportError, match="run 0 has no 'mismatches'/'elements_compared'"):
        report.build_report(ckpt, inputs, tmp_path / "d", cosim=junk, progress=False)
    junk.write_text("not json")
    with pytest.raises(report.ReportError, match="is not JSON"):
        report.read_cosim_summary(junk)
    with pytest.raises(report.ReportError, match="sweep_bits must be widths in 2..32"):
        report.build_report(ckpt, inputs, tmp_path / "e", sweep_bits=(1, 8), progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "e").exists()


def test_report_refuses_a_different_student(small):
    from inhibitron.cli import UserError
    from inhibitron.commands.report import check_same_weights

    _, student, ckpt, _, _ = small
    check_same_weights(student, ckpt)  # its own checkpoint: fine
    other = to_inhibitor(make_teacher("bert", seed=9))
    with pytest.raises(UserError, match="layer 0: the checkpoint's q weight differs from the student's"):
        check_same_weights(other, ckpt)
