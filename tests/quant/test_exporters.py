"""The exporter registry: built-in formats, registration, the writer contract, the CLI flags."""

from __future__ import annotations

import argparse
import json
import os

import pytest

pytest.importorskip("torch")

from inhibitron.commands import export as export_cmd  # noqa: E402
from inhibitron.quant import exporters as X  # noqa: E402
from inhibitron.quant.checkpoint import CheckpointError, load_checkpoint, write_checkpoint  # noqa: E402
from inhibitron.quant.export import export_student  # noqa: E402


@pytest.fixture()
def registry(monkeypatch):
    """The registry, restored after the test (tests register throw-away formats)."""
    monkeypatch.setattr(X, "_REGISTRY", dict(X._REGISTRY))
    return X


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from export_fixtures import SEQ, inputs, tiny_student

    ids, am = inputs()
    path, _ = export_student(tiny_student(), tmp_path_factory.mktemp("x") / "ck", input_ids=ids, attention_mask=am,
                             seq_len=SEQ, onnx=False, memory_images=False)
    return load_checkpoint(path)


def test_builtin_formats_in_writing_order():
    table = [(e.name, e.default, e.needs_model, e.required) for e in X.exporters()]
    assert table == [("checkpoint", True, False, True), ("onnx", True, True, False),
                     ("memimages", True, False, False), ("qonnx", False, False, False)]
    assert X.default_formats() == ("onnx", "memimages")
    assert [e.name for e in X.resolve_formats(["memimages", "onnx"])] == ["checkpoint", "onnx", "memimages"]
    assert [e.name for e in X.resolve_formats([])] == ["checkpoint"]
    with pytest.raises(ValueError, match=r"unknown export format 'tflite'; known: checkpoint, onnx, memimages, qonnx"):
        X.resolve_formats(["tflite"])


@pytest.mark.parametrize("name, match", [
    ("Onnx", "must match"), ("2x", "must match"), ("", "must match"), (None, "must match"),
    ("onnx", "already registered"),
])
def test_register_refuses_bad_or_taken_names(registry, name, match):
    with pytest.raises(ValueError, match=match):
        registry.register(name, help="x")


def test_a_registered_format_is_written_listed_hashed_and_noted(registry, ckpt, tmp_path):
    @registry.register("shapes", help="a text file of tensor shapes", default=False)
    def _shapes(job):
        (job.out_dir / "shapes").mkdir()
        text = "".join(f"{layer.index} {layer.projections['q'].weight.shape}\n" for layer in job.checkpoint.layers)
        (job.out_dir / "shapes" / "q.txt").write_text(text)
        return X.ExportResult(files=("shapes/q.txt",), manifest={"shapes": {"layers": len(job.checkpoint.layers)}},
                              notes=("shapes: q only",))

    assert "shapes" not in X.default_formats()
    path, notes = write_checkpoint(tmp_path / "c", ckpt, export_formats=["shapes"], return_notes=True)
    assert notes == ["shapes: q only"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["shapes"] == {"layers": 2} and manifest["memory_images"] == []
    assert {f["path"] for f in manifest["files"]} == {"layer_00.safetensors", "layer_01.safetensors", "shapes/q.txt"}
    back = load_checkpoint(path)  # verifies every hash
    assert back.calibration["notes"] == [*ckpt.calibration["notes"], "shapes: q only"]
    assert (path / "shapes" / "q.txt").read_text() == "0 (32, 32)\n1 (32, 32)\n"


def _bad(kind):
    def write(job):
        (job.out_dir / "a.txt").write_text("a")
        if kind == "unlisted":
            (job.out_dir / "b.txt").write_text("b")
            return X.ExportResult(files=("a.txt",))
        if kind == "missing":
            return X.ExportResult(files=("a.txt", "nowhere.txt"))
        if kind == "outside":
            return X.ExportResult(files=("../a.txt",))
        if kind == "section":
            return X.ExportResult(files=("a.txt",), manifest={"files": []})
        if kind == "twice":
            return X.ExportResult(files=("a.txt", "a.txt"))
        return {"files": ["a.txt"]}
    return write


@pytest.mark.parametrize("kind, exc, match", [
    ("unlisted", CheckpointError, r"exporter 'bad' wrote files it did not list: \['b.txt'\]"),
    ("missing", CheckpointError, r"exporter 'bad' listed 'nowhere.txt' but did not write it"),
    ("outside", CheckpointError, r"exporter 'bad': file path '../a.txt' must be relative"),
    ("section", CheckpointError, r"exporter 'bad': manifest section 'files' is taken"),
    ("twice", CheckpointError, r"exporter 'bad': file 'a.txt' was already written"),
    ("dict", TypeError, r"exporter 'bad' returned dict, not an ExportResult"),
])
def test_writer_contract_violations_leave_nothing(registry, ckpt, tmp_path, kind, exc, match):
    registry.register("bad", help="broken", default=False)(_bad(kind))
    before = set(os.listdir(tmp_path))
    with pytest.raises(exc, match=match):
        write_checkpoint(tmp_path / "new" / "c", ckpt, export_formats=["bad"])
    assert set(os.listdir(tmp_path)) == before


def test_a_format_that_needs_the_model_is_refused_without_it(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match=r"the 'onnx' format needs the float student \(model=...\)"):
        write_checkpoint(tmp_path / "c", ckpt, export_formats=["onnx"])
    assert not (tmp_path / "c").exists()


def parse(argv):
    parser = argparse.ArgumentParser(prog="inhibitron")
    export_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["export", "--out", "x", *argv])


def test_cli_flags_come_from_the_registry(registry):
    assert export_cmd._export_formats(parse([])) == ("onnx", "memimages")
    assert export_cmd._export_formats(parse(["--no-onnx"])) == ("memimages",)
    assert export_cmd._export_formats(parse(["--no-onnx", "--no-memimages"])) == ()
    registry.register("q-onnx", help="QONNX graphs", default=False)(_bad("dict"))
    assert export_cmd._export_formats(parse([])) == ("onnx", "memimages")
    assert export_cmd._export_formats(parse(["--q-onnx", "--no-memimages"])) == ("onnx", "q-onnx")


def test_doctests():
    import doctest

    result = doctest.testmod(X)
    assert result.failed == 0 and result.attempted >= 1
