"""Quantized checkpoint: export -> load round trip, reproducible bytes, the integer model, bad input."""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

import inhibitron.quant.memimage as memimage_mod
from inhibitron.cli import UserError
from inhibitron.commands import export as export_cmd
from inhibitron.model.surgery import iter_inhibitors, to_inhibitor
from inhibitron.quant.calibrate import FormatTooNarrowError
from inhibitron.quant.calibrate_model import calibrate_student
from inhibitron.quant.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    canonical_json,
    load_checkpoint,
    write_checkpoint,
)
from inhibitron.quant.export import export_student
from inhibitron.quant.projection import build_checkpoint
from inhibitron.quant.formats import AttentionFormats
from inhibitron.quant.qat import to_qat

SEQ = 16


def tiny_student(kind="bert", seed=0):
    torch.manual_seed(seed)
    if kind == "bert":
        cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)
        base = BertModel(cfg)
    else:
        cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                               max_position_embeddings=64)
        base = DistilBertModel(cfg)
    student = to_inhibitor(base.eval())
    with torch.no_grad():  # a "distilled" student: milder inhibition than the initial values
        for _, m in iter_inhibitors(student):
            m.gamma.uniform_(0.25, 0.35)
            m.delta.uniform_(-0.3, 0.0)
    return student


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (4, 12), generator=g)
    am = torch.ones(4, 12, dtype=torch.long)
    am[1, 8:] = 0
    am[2, 3:] = 0
    return ids, am


@pytest.fixture(scope="module")
def student():
    return tiny_student()


@pytest.fixture(scope="module")
def exported(student, tmp_path_factory):
    ids, am = inputs()
    out = tmp_path_factory.mktemp("ckpt") / "model_q8"
    path, cal = export_student(student, out, input_ids=ids, attention_mask=am, seq_len=SEQ)
    return path, cal


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_nothing_left(parent: Path, before: set):
    assert set(os.listdir(parent)) == before, f"left behind: {set(os.listdir(parent)) - before}"


# ---------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------


def test_round_trip_is_bit_identical(student, exported):
    path, cal = exported
    ids, am = inputs()
    ck = load_checkpoint(path)
    assert ck.manifest["format_version"] == FORMAT_VERSION
    built = build_checkpoint(student, cal["layer_quants"], cal["input_scales"], cal["context_scales"], seq_len=SEQ)
    assert len(ck.layers) == len(built.layers) == 2
    for a, b in zip(ck.layers, built.layers):
        assert a.attention == b.attention  # every LayerQuant field of every head
        assert a.attention.to_dict() == b.attention.to_dict()
        assert a.seq_len == b.seq_len
        ta, tb = a.tensors(), b.tensors()
        assert ta.keys() == tb.keys()
        for name in ta:
            assert ta[name].dtype == tb[name].dtype and np.array_equal(ta[name], tb[name]), name
        for p in "qkvo":
            la, lb = a.projections[p], b.projections[p]
            assert la.weight_scale.tobytes() == lb.weight_scale.tobytes()
            assert la.input_scale == lb.input_scale and la.weight_bits == lb.weight_bits
    # The tensors on disk are exactly those.
    for layer in ck.layers:
        on_disk = load_file(str(path / f"layer_{layer.index:02d}.safetensors"))
        assert on_disk.keys() == layer.tensors().keys()
        assert on_disk["q.weight"].dtype == np.int8 and on_disk["q.bias"].dtype == np.int32
        assert on_disk["attention.theta"].dtype == np.int32
    # The integer model gives the same bits from the loaded and the in-memory checkpoint.
    hidden = np.random.default_rng(0).normal(size=(4, 12, 32))
    mask = am.bool().numpy()
    for a, b in zip(ck.layers, built.layers):
        assert a.attention_block(hidden, mask).tobytes() == b.attention_block(hidden, mask).tobytes()
    assert ck.calibration["sqnr_db"] == [round(x, 4) for x in cal["sqnr_db"]]
    assert ck.model["num_layers"] == 2 and ck.model["head_dim"] == 8 and ck.model["model_type"] == "bert"


def test_manifest_lists_and_hashes_every_file(exported):
    path, _ = exported
    manifest = json.loads((path / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    on_disk = set(files_of(path)) - {"manifest.json"}
    assert listed == on_disk
    assert {"layer_00.safetensors", "onnx/layer_00_float.onnx", "onnx/layer_01_qdq.onnx",
            "mem/layer_01/q_weight.hex", "mem/layer_00/attention_theta.hex"} <= listed
    layer = manifest["layers"][0]
    assert set(layer["projections"]) == {"q", "k", "v", "o"}
    assert len(layer["projections"]["q"]["weight_scale"]) == 32
    assert [h["theta"] for h in layer["attention"]["heads"]] == load_file(
        str(path / "layer_00.safetensors"))["attention.theta"].tolist()
    assert (path / "manifest.json").read_text() == canonical_json(manifest)


def test_same_inputs_same_bytes(student, exported, tmp_path):
    path, cal = exported
    ids, am = inputs()
    again, _ = export_student(student, tmp_path / "again", input_ids=ids, attention_mask=am, seq_len=SEQ)
    assert files_of(again) == files_of(path)


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


def test_formats_too_narrow_say_which_and_suggest_a_width(student, tmp_path):
    ids, am = inputs()
    before = set(os.listdir(tmp_path))
    with pytest.raises(FormatTooNarrowError, match=r"layer 0 head \d: Q/K spans only .* of qk_bits=2 .*use qk_bits=\d"):
        export_student(student, tmp_path / "out", input_ids=ids, attention_mask=am, seq_len=SEQ,
                       formats=AttentionFormats(2, 2, 2))
    assert_nothing_left(tmp_path, before)


def test_existing_out_dir_is_refused_without_force(student, exported, tmp_path):
    path, cal = exported
    ids, am = inputs()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(CheckpointError, match=r"output directory .*out' already exists; pass --force"):
        export_student(student, out, input_ids=ids, attention_mask=am, seq_len=SEQ)
    ck = load_checkpoint(path)
    with pytest.raises(CheckpointError, match="already exists; pass --force"):
        write_checkpoint(out, ck)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # A file is never replaced, even with force.
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CheckpointError, match="exists and is not a directory"):
        write_checkpoint(tmp_path / "afile", ck, force=True)
    # With force the directory is replaced as a whole.
    write_checkpoint(out, ck, force=True, memory_images=False)
    assert not (out / "keep.txt").exists()
    assert load_checkpoint(out).layer_quants == ck.layer_quants
    assert sorted(os.listdir(tmp_path)) == ["afile", "out"]


@pytest.mark.parametrize("force", [False, True])
def test_crash_mid_export_leaves_nothing(exported, tmp_path, monkeypatch, force):
    path, _ = exported
    ck = load_checkpoint(path)
    out = tmp_path / "out" if force else tmp_path / "new" / "parents" / "out"  # parents created, then removed
    if force:  # an existing checkpoint must survive a failed replacement untouched
        write_checkpoint(out, ck, memory_images=False)
        old = files_of(out)
    before = set(os.listdir(tmp_path))
    calls = []
    real = memimage_mod.write_memimage

    def boom(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("injected crash while writing memory images")
        return real(*args, **kwargs)

    monkeypatch.setattr(memimage_mod, "write_memimage", boom)
    with pytest.raises(RuntimeError, match="injected crash"):
        write_checkpoint(out, ck, force=force)
    assert len(calls) == 5
    assert_nothing_left(tmp_path, before)
    if force:
        assert files_of(out) == old
    else:
        assert not out.exists()


def corrupt(path: Path, offset: int = -10):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def copy_ckpt(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("victim", ["layer_01.safetensors", "mem/layer_00/q_bias.hex", "onnx/layer_00_qdq.onnx"])
def test_tampered_file_hash_mismatch_names_the_file(exported, tmp_path, victim):
    path = copy_ckpt(exported[0], tmp_path / "c")
    corrupt(path / victim)
    with pytest.raises(CheckpointError, match=rf"checkpoint file '{victim}': SHA-256 mismatch"):
        load_checkpoint(path)


def test_missing_file_is_named(exported, tmp_path):
    path = copy_ckpt(exported[0], tmp_path / "c")
    (path / "layer_00.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint file 'layer_00.safetensors' listed in the manifest is missing"):
        load_checkpoint(path)


def edit_manifest(path: Path, fn, *, rehash: bool):
    from inhibitron.quant.checkpoint import _content_hash

    mpath = path / "manifest.json"
    m = json.loads(mpath.read_text())
    fn(m)
    if rehash:
        m["manifest_sha256"] = _content_hash(m)
    mpath.write_text(canonical_json(m))


def test_tampered_manifest_is_detected(exported, tmp_path):
    path = copy_ckpt(exported[0], tmp_path / "c")

    def raise_theta(m):
        m["layers"][0]["attention"]["heads"][1]["theta"] += 1

    edit_manifest(path, raise_theta, rehash=False)
    with pytest.raises(CheckpointError, match=r"manifest.json: content hash mismatch"):
        load_checkpoint(path)
    # Even with a recomputed hash, the hashed tensors contradict the edited manifest.
    edit_manifest(path, lambda m: None, rehash=True)
    with pytest.raises(CheckpointError, match=r"tensor 'attention.theta' in 'layer_00.safetensors' disagrees"):
        load_checkpoint(path)


def test_unknown_manifest_version(exported, tmp_path):
    path = copy_ckpt(exported[0], tmp_path / "c")
    edit_manifest(path, lambda m: m.update(format_version=99), rehash=True)
    with pytest.raises(CheckpointError, match=r"unknown format_version 99; this inhibitron reads format_version 1"):
        load_checkpoint(path)


def test_corrupted_manifest_and_scales(exported, tmp_path):
    path = copy_ckpt(exported[0], tmp_path / "c")

    def bad_scale(m):
        m["layers"][1]["projections"]["k"]["weight_scale"][7] = -1.0

    edit_manifest(path, bad_scale, rehash=True)
    with pytest.raises(CheckpointError, match=r"projection k .*layer 1 k weight_scale has the invalid scale -1.0 at index \(7,\)"):
        load_checkpoint(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


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
