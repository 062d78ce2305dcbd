"""Model surgery on the real all-MiniLM-L6-v2 and on a small random DistilBERT."""

import json

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, DistilBertConfig, DistilBertModel

from inhibitron.model.capture import capture_qkv, tokenize
from inhibitron.model.corpus import embedded_sentences
from inhibitron.model.surgery import (
    BertInhibitorSelfAttention,
    DistilBertInhibitorSelfAttention,
    ModelFolderError,
    iter_inhibitors,
    load_student,
    load_teacher,
    save_student,
    to_inhibitor,
)


@pytest.fixture(scope="module")
def minilm():
    return load_teacher()


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_minilm_surgery_adds_three_parameters_per_head_and_keeps_teacher(minilm):
    teacher, tok = minilm
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = to_inhibitor(teacher)
    cfg = teacher.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size) == (6, 12, 384)
    assert n_params(student) == n_params(teacher) + 3 * cfg.num_attention_heads * cfg.num_hidden_layers
    # Teacher untouched: same modules, same weights.
    assert not any(isinstance(m, BertInhibitorSelfAttention) for m in teacher.modules())
    after = teacher.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # Student: every self-attention swapped, Q/K/V copied, the rest identical.
    swapped = [m for m in student.modules() if isinstance(m, BertInhibitorSelfAttention)]
    assert len(swapped) == cfg.num_hidden_layers
    sstate = student.state_dict()
    for key, value in before.items():
        assert torch.equal(sstate[key], value), key
    assert [i for i, _ in iter_inhibitors(student)] == list(range(6))


def test_minilm_student_forward_on_padded_real_batch(minilm):
    teacher, tok = minilm
    student = to_inhibitor(teacher).eval()
    sentences = embedded_sentences(3, seed=4)
    ids, mask = tokenize(tok, sentences)
    assert (mask == 0).any(), "the batch should contain padding"
    with torch.no_grad():
        out = student(input_ids=ids, attention_mask=mask).last_hidden_state
        assert out.shape == (3, ids.shape[1], 384) and torch.isfinite(out).all()
        # Padding invariance through the whole model: each sentence alone gives the same valid rows.
        for b, sentence in enumerate(sentences):
            ids1, mask1 = tokenize(tok, [sentence])
            alone = student(input_ids=ids1, attention_mask=mask1).last_hidden_state[0]
            L = int(mask[b].sum())
            torch.testing.assert_close(out[b, :L], alone[:L], atol=2e-4, rtol=1e-4)


def test_capture_returns_every_layer(minilm):
    teacher, tok = minilm
    ids, mask = tokenize(tok, embedded_sentences(2, seed=1))
    rec = capture_qkv(teacher, ids, mask)
    assert len(rec) == 6
    for r in rec:
        assert r["q"].shape == r["k"].shape == r["v"].shape == (2, 12, ids.shape[1], 32)
        assert torch.equal(r["mask"], mask.bool())


def small_distilbert():
    cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                           max_position_embeddings=64)
    torch.manual_seed(0)
    return DistilBertModel(cfg).eval()


def test_distilbert_surgery():
    teacher = small_distilbert()
    student = to_inhibitor(teacher).eval()
    assert n_params(student) == n_params(teacher) + 3 * 4 * 2
    assert sum(isinstance(m, DistilBertInhibitorSelfAttention) for m in student.modules()) == 2
    ids = torch.randint(0, 100, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    with torch.no_grad():
        out = student(input_ids=ids, attention_mask=mask).last_hidden_state
        alone = student(input_ids=ids[1:, :4], attention_mask=mask[1:, :4]).last_hidden_state
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1, :4], alone[0], atol=1e-5, rtol=1e-5)
    for name, p in teacher.named_parameters():
        torch.testing.assert_close(student.get_parameter(name), p)


def test_thesis_variant_and_double_conversion():
    teacher = small_distilbert()
    student = to_inhibitor(teacher, variant="thesis")
    assert all(hasattr(m, "alpha") for _, m in iter_inhibitors(student))
    with pytest.raises(ValueError, match="already an inhibitor attention"):
        to_inhibitor(student)
    with pytest.raises(ValueError, match="variant must be one of"):
        to_inhibitor(teacher, variant="x")
    with pytest.raises(TypeError, match="convert the model with to_inhibitor"):
        list(iter_inhibitors(teacher))


def test_save_and_load_student_round_trip(tmp_path):
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(1)
    student = to_inhibitor(BertModel(cfg)).eval()
    with torch.no_grad():
        for _, inh in iter_inhibitors(student):
            inh.gamma.uniform_(0.5, 2.0)
    save_student(student, tmp_path / "s")
    assert not list((tmp_path / "s").glob("*.bin")), "students are saved as safetensors only"
    assert not (tmp_path / "s" / "tokenizer.json").exists()
    loaded = load_student(tmp_path / "s")
    ids = torch.randint(0, 100, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).last_hidden_state,
                                   student(input_ids=ids).last_hidden_state)


def test_save_student_with_tokenizer(minilm, tmp_path):
    teacher, tok = minilm
    save_student(to_inhibitor(teacher), tmp_path / "s", tokenizer=tok)
    tok2 = AutoTokenizer.from_pretrained(tmp_path / "s", local_files_only=True)
    text = "Inhibitor attention needs no multiplier."
    assert tok2(text)["input_ids"] == tok(text)["input_ids"]


def test_load_student_rejects_a_teacher_folder(tmp_path):
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32)
    BertModel(cfg).save_pretrained(tmp_path / "t")
    with pytest.raises(ModelFolderError, match="is not an inhibitor student"):
        load_student(tmp_path / "t")


def test_bad_model_folders(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_teacher(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFolderError, match="is not a folder"):
        load_teacher(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="has no config.json"):
        load_teacher(tmp_path / "empty")
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelFolderError, match="holds a 'gpt2' model; supported: bert, distilbert"):
        load_teacher(gpt)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (bert / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelFolderError, match="no model.safetensors"):
        load_teacher(bert)
    (bert / "config.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="is not valid JSON"):
        load_teacher(bert)
