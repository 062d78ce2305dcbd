"""Labelled tasks (GLUE .tsv layouts, IMDb folders), token datasets, held-out split; bad files."""

from __future__ import annotations

import pytest
import torch

from inhibitron.model import data as D
from inhibitron.model.corpus import CorpusError


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


GLUE_FIXTURES = {
    "SST-2": ("sentence\tlabel\nit is a charming film .\t1\nthe plot is dull .\t0\n", "sst2", 2, ("it is a charming film .", None, 1)),
    "CoLA": ("gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\n", "cola", 2,
             ("Our friends won't buy this analysis.", None, 1)),
    "MRPC": ("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tHe said so .\tHe told us .\n", "mrpc", 2,
             ("He said so .", "He told us .", 1)),
    "QNLI": ("index\tquestion\tsentence\tlabel\n0\tWho won?\tThe team won.\tentailment\n", "qnli", 2,
             ("Who won?", "The team won.", 0)),
    "RTE": ("index\tsentence1\tsentence2\tlabel\n0\tA cat sat.\tAn animal sat.\tnot_entailment\n", "rte", 2,
            ("A cat sat.", "An animal sat.", 1)),
    "STS-B": ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
              "0\tmain\tx\t2012\t1\tnone\tnone\tA plane takes off.\tAn air plane is taking off.\t5.000\n",
              "stsb", 1, ("A plane takes off.", "An air plane is taking off.", 5.0)),
    "QQP": ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tHow?\tWhy?\t0\n", "qqp", 2,
            ("How?", "Why?", 0)),
    "MNLI": ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
             "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
             "0\t1\t2\tgov\tx\tx\tx\tx\tIt rains.\tIt is wet.\tentailment\tentailment\n", "mnli", 3,
             ("It rains.", "It is wet.", 1)),
}


@pytest.mark.parametrize("folder", sorted(GLUE_FIXTURES))
def test_glue_layouts(folder, tmp_path):
    text, task, num_labels, first = GLUE_FIXTURES[folder]
    path = _write(tmp_path / folder / "train.tsv", text)
    examples, n = D.load_labelled(path)  # task guessed from the folder name
    assert n == num_labels == D.GLUE_TASKS[task].num_labels
    assert (examples[0].text, examples[0].text_pair, examples[0].label) == first


def test_glue_errors_name_the_line(tmp_path):
    p = _write(tmp_path / "SST-2" / "dev.tsv", "sentence\tlabel\ngood .\t1\nbad .\tpositive\n")
    with pytest.raises(D.LabelledDataError, match=r"dev.tsv:3: label 'positive' in column 'label' is not 0/1"):
        D.load_labelled(p)
    p = _write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel\ngood .\t1\nno label here\n")
    with pytest.raises(D.LabelledDataError, match=r"train.tsv:3: 1 tab-separated columns, GLUE task sst2 needs at least 2"):
        D.load_labelled(p)
    p = _write(tmp_path / "x" / "train.tsv", "text\ttarget\nhi\t1\n")
    with pytest.raises(D.LabelledDataError, match=r"train.tsv:1: header has no column 'sentence' .* right --task"):
        D.load_labelled(p, "sst2")
    with pytest.raises(D.LabelledDataError, match=r"unknown GLUE task 'x' \(guessed from the folder name 'x'\)"):
        D.load_labelled(p)
    p = _write(tmp_path / "QNLI" / "dev.tsv", "index\tquestion\tsentence\tlabel\n0\tq?\ts.\tmaybe\n")
    with pytest.raises(D.LabelledDataError, match=r"dev.tsv:2: label 'maybe' .* entailment/not_entailment"):
        D.load_labelled(p)
    with pytest.raises(D.LabelledDataError, match="labelled data path '.*missing.tsv' does not exist"):
        D.load_labelled(tmp_path / "missing.tsv")
    p = _write(tmp_path / "data.csv", "a,b\n")
    with pytest.raises(D.LabelledDataError, match="expected a GLUE .tsv file or an IMDb folder"):
        D.load_labelled(p)
    p = _write(tmp_path / "SST-2" / "empty.tsv", "sentence\tlabel\n")
    with pytest.raises(D.LabelledDataError, match="empty.tsv: no examples"):
        D.load_labelled(p)


def test_imdb_folder(tmp_path):
    root = tmp_path / "aclImdb" / "train"
    _write(root / "pos" / "0_9.txt", "A wonderful film.<br /><br />Loved it.")
    _write(root / "pos" / "1_8.txt", "Great.")
    _write(root / "neg" / "2_1.txt", "Terrible.")
    examples, n = D.load_labelled(root)
    assert n == 2 and len(examples) == 3
    assert [e.label for e in examples] == [0, 1, 1]
    assert examples[1].text == "A wonderful film.  Loved it."


def test_imdb_errors(tmp_path):
    root = tmp_path / "imdb"
    _write(root / "pos" / "a.txt", "fine")
    with pytest.raises(D.LabelledDataError, match="has no neg/ sub-folder"):
        D.load_labelled(root)
    (root / "neg").mkdir()
    with pytest.raises(D.LabelledDataError, match="neg' contains no .txt reviews"):
        D.load_labelled(root)
    _write(root / "neg" / "b.txt", "   ")
    with pytest.raises(D.LabelledDataError, match="b.txt: empty review"):
        D.load_labelled(root)
    with pytest.raises(D.LabelledDataError, match="only IMDb .* folders are read, not 'sst2'"):
        D.load_labelled(root, "sst2")


def test_token_dataset_collate():
    ds = D.TokenDataset([[1, 5, 2], [1, 6, 7, 8, 2]], [[0, 0, 0], [0, 0, 1, 1, 1]], [1, 0], pad_id=0)
    b = ds.collate([1, 0])
    assert b["input_ids"].tolist() == [[1, 6, 7, 8, 2], [1, 5, 2, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert b["token_type_ids"][0].tolist() == [0, 0, 1, 1, 1]
    assert b["labels"].tolist() == [0, 1] and b["labels"].dtype == torch.long
    assert ds.lengths([0, 1]) == 8
    with pytest.raises(ValueError, match="cannot collate an empty batch"):
        ds.collate([])


def test_text_and_labelled_datasets_with_real_tokenizer():
    from inhibitron.model.surgery import load_teacher

    _, tok = load_teacher(tokenizer=True)
    paras = ["word " * 300, "A short paragraph of real English text with enough words."]
    ds = D.text_dataset(tok, paras, max_length=32)
    assert all(len(x) <= 32 and x[0] == tok.cls_token_id and x[-1] == tok.sep_token_id for x in ds.input_ids)
    assert len(ds) == 10 + 1  # 300 tokens in windows of 30, plus the short paragraph
    with pytest.raises(CorpusError, match="no window of at least 8 tokens"):
        D.text_dataset(tok, ["tiny"], max_length=32)
    two = ["The first sentence has exactly nine words in it. The second one is also long enough here."]
    first, second = (tok(t, add_special_tokens=False)["input_ids"] for t in
                     ("The first sentence has exactly nine words in it.", "The second one is also long enough here."))
    whole = [tok.cls_token_id, *tok(two[0], add_special_tokens=False)["input_ids"], tok.sep_token_id]
    assert D.text_dataset(tok, two, max_length=64).input_ids == [whole]
    by_sentence = [[tok.cls_token_id, *first, tok.sep_token_id], [tok.cls_token_id, *second, tok.sep_token_id]]
    assert D.text_dataset(tok, two, max_length=64, unit="sentence").input_ids == by_sentence
    assert D.text_dataset(tok, two, max_length=64, unit="both").input_ids == [whole, *by_sentence]
    with pytest.raises(ValueError, match="unit must be one of"):
        D.text_dataset(tok, two, unit="paragraph")
    lab = D.labelled_dataset(tok, [D.LabelledExample("a b", "c d", 1), D.LabelledExample("e", "f g h", 0)])
    assert lab.labels == [1, 0] and lab.token_type_ids is not None


def test_heldout_split_is_deterministic_and_disjoint():
    from inhibitron.model.corpus import embedded_paragraphs

    paras = embedded_paragraphs()
    train, held = D.split_heldout(paras, 0.1)
    assert 0.05 < len(held) / len(paras) < 0.15
    assert not set(train) & set(held)
    train2, held2 = D.split_heldout(list(reversed(paras)), 0.1)
    assert set(held2) == set(held)
    sents = D.heldout_sentences(20, seed=1)
    assert len(set(sents)) == 20
    assert all(any(s in p for p in held) for s in sents)


def test_epoch_permutation():
    a = D.epoch_permutation(10, seed=1, phase=0, epoch=0)
    assert sorted(a.tolist()) == list(range(10))
    assert torch.equal(a, D.epoch_permutation(10, seed=1, phase=0, epoch=0))
    assert not torch.equal(a, D.epoch_permutation(10, seed=1, phase=0, epoch=1))


def test_fixed_evaluation_set():
    from inhibitron.model.corpus import embedded_paragraphs
    from inhibitron.model.data import eval_sentences, split_heldout

    every = eval_sentences()
    assert len(every) == 181 and every == eval_sentences()
    held = " ".join(split_heldout(embedded_paragraphs())[1])
    assert all(s in held for s in every)
    some = eval_sentences(limit=20)
    assert len(some) == 20 and some == eval_sentences(limit=20) and set(some) <= set(every)
    assert [every.index(s) for s in some] == sorted(every.index(s) for s in some)  # corpus order
