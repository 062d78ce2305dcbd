"""$readmemh memory images: exact text, round trip at every width, range errors, checkpoint images."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from inhibitron.quant.memimage import memimage_text, read_memimage, read_memimage_text, write_memimage


def test_exact_text():
    text = memimage_text(np.array([[-1, 5], [-128, 127]], dtype=np.int8), width=8, tensor="layer_00.safetensors:q.weight")
    assert text == (
        "// inhibitron memory image\n"
        "// tensor: layer_00.safetensors:q.weight\n"
        "// shape: 2 x 2 (row-major, last index fastest)\n"
        "// word: signed 8-bit two's complement, 2 hex digits\n"
        "// depth: 4 words\n"
        "ff\n05\n80\n7f\n"
    )
    assert memimage_text([3, 0, 5], width=3, tensor="u", signed=False).splitlines()[3:] == [
        "// word: unsigned 3-bit, 1 hex digits", "// depth: 3 words", "3", "0", "5"]
    # Odd widths: 14-bit theta registers use 4 digits, the top bits of the word only as needed.
    assert memimage_text([-8192, 8191, -1], width=14, tensor="t").splitlines()[-3:] == ["2000", "1fff", "3fff"]


@pytest.mark.parametrize("width", [1, 2, 3, 7, 8, 13, 16, 31, 32, 33, 63, 64])
@pytest.mark.parametrize("signed", [True, False])
def test_round_trip_every_width_including_extremes(width, signed, tmp_path):
    rng = np.random.default_rng(width)
    if signed:
        lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    else:
        lo, hi = 0, min((1 << width) - 1, np.iinfo(np.int64).max)
    values = np.concatenate([np.array([lo, hi, 0 if lo <= 0 else lo]),
                             rng.integers(lo, hi, size=50, endpoint=True)]).astype(np.int64).reshape(53, 1)
    entry = write_memimage(tmp_path / "sub" / "x.hex", values, width=width, tensor="x", signed=signed)
    assert entry == {"tensor": "x", "width": width, "signed": signed, "depth": 53, "shape": [53, 1]}
    back = read_memimage(tmp_path / "sub" / "x.hex", width=width, signed=signed)
    assert np.array_equal(back, values.reshape(-1))
    lines = (tmp_path / "sub" / "x.hex").read_text().splitlines()
    assert all(len(w) == (width + 3) // 4 for w in lines[5:])


def test_same_values_same_bytes(tmp_path):
    v = np.arange(-50, 50, dtype=np.int16).reshape(10, 10)
    write_memimage(tmp_path / "a.hex", v, width=9, tensor="t")
    write_memimage(tmp_path / "b.hex", v.copy(), width=9, tensor="t")
    assert (tmp_path / "a.hex").read_bytes() == (tmp_path / "b.hex").read_bytes()
    assert b"\r" not in (tmp_path / "a.hex").read_bytes()


def test_errors_name_the_tensor_and_index():
    with pytest.raises(ValueError, match=r"memory image of layer_01.safetensors:q.weight: value 128 at index "
                                         r"\(1, 0\) does not fit a signed 8-bit word \[-128, 127\]"):
        memimage_text(np.array([[1, 2], [128, 0]]), width=8, tensor="layer_01.safetensors:q.weight")
    with pytest.raises(ValueError, match=r"value -1 at index \(0,\) does not fit a unsigned 4-bit word"):
        memimage_text([-1], width=4, tensor="u", signed=False)
    with pytest.raises(ValueError, match="values must be integers, got dtype float64"):
        memimage_text([1.5], width=8, tensor="f")
    with pytest.raises(ValueError, match="width must be an integer in 1..64, not 0"):
        memimage_text([0], width=0, tensor="w")
    with pytest.raises(ValueError, match=r"img line 2: 'zz' is not a 8-bit hex word"):
        read_memimage_text("// c\nzz\n", width=8, name="img")
    with pytest.raises(ValueError, match=r"line 1: '1ff' is not a 8-bit hex word"):
        read_memimage_text("1ff\n", width=8)


def test_checkpoint_images_equal_its_tensors(tmp_path):
    from test_export import inputs, tiny_student

    from inhibitron.quant.export import export_student

    ids, am = inputs()
    path, _ = export_student(tiny_student(), tmp_path / "ck", input_ids=ids, attention_mask=am, seq_len=16,
                             onnx=False)
    manifest = json.loads((path / "manifest.json").read_text())
    images = manifest["memory_images"]
    assert len(images) == 2 * (4 * 2 + 1)  # per layer: 4 weights, 4 biases, theta
    for img in images:
        file, name = img["tensor"].split(":")
        tensor = load_file(str(path / file))[name]
        back = read_memimage(path / img["path"], width=img["width"], signed=img["signed"])
        assert np.array_equal(back, tensor.reshape(-1).astype(np.int64)), img["path"]
        assert img["shape"] == list(tensor.shape) and img["depth"] == tensor.size
    theta = next(i for i in images if i["path"] == "mem/layer_00/attention_theta.hex")
    assert theta["width"] == manifest["layers"][0]["widths"]["theta_bits"]
    weight = next(i for i in images if i["path"] == "mem/layer_00/q_weight.hex")
    assert weight["width"] == 8 and weight["shape"] == [32, 32]
