"""The checkpoint format: write -> load round trip, manifest and hashes, atomic write, tampering."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from export_fixtures import SEQ, assert_nothing_left, files_of, inputs
from safetensors.numpy import load_file

import inhibitron.quant.memimage as memimage_mod
from inhibitron.quant import checkpoint
from inhibitron.quant.checkpoint_format import FORMAT_VERSION, canonical_json, content_hash
from inhibitron.quant.checkpoint_load import load_checkpoint
from inhibitron.quant.checkpoint_write import write_checkpoint
from inhibitron.quant.projection import CheckpointError
from inhibitron.quant.export import export_student
from inhibitron.quant.projection import build_checkpoint


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
    mpath = path / "manifest.json"
    m = json.loads(mpath.read_text())
    fn(m)
    if rehash:
        m["manifest_sha256"] = content_hash(m)
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


def test_checkpoint_reexports_its_parts():
    """quant.checkpoint keeps every name importable from one place (callers and the CLI)."""
    from inhibitron.quant import atomic_folder, checkpoint_format, checkpoint_load, checkpoint_write, projection

    homes = (atomic_folder, checkpoint_format, checkpoint_load, checkpoint_write, projection)
    for name in checkpoint.__all__:
        assert any(getattr(m, name, None) is getattr(checkpoint, name) for m in homes), name
    assert checkpoint._content_hash is content_hash
