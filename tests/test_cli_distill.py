"""``inhibitron distill`` and ``inhibitron report`` end to end on a tiny model folder; bad inputs."""

from __future__ import annotations

import argparse
import json

import pytest

from inhibitron.cli import UserError
from inhibitron.commands import distill as distill_cmd
from inhibitron.commands import report as report_cmd
from inhibitron.model.corpus import CorpusError
from inhibitron.model.data import LabelledDataError
from inhibitron.model.surgery import ModelFolderError, load_teacher
from inhibitron.model.train_checkpoint import CheckpointError

from tiny_models import make_classifier, make_teacher

SHORT = ["--max-steps", "2", "--max-sequences", "8", "--batch-size", "4", "--grad-accum", "1",
         "--max-length", "32", "--no-progress"]


def cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="inhibitron")
    sub = parser.add_subparsers(dest="command")
    distill_cmd.register(sub)
    report_cmd.register(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny BERT teacher folder and a tiny fine-tuned classifier folder, with the MiniLM tokenizer."""
    root = tmp_path_factory.mktemp("models")
    _, tok = load_teacher(tokenizer=True)
    teacher = make_teacher(vocab_size=tok.vocab_size, max_position_embeddings=64)
    teacher.save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    clf = make_classifier(vocab_size=tok.vocab_size, num_labels=2)
    clf.save_pretrained(root / "clf")
    tok.save_pretrained(root / "clf")
    glue = root / "SST-2" / "train.tsv"
    glue.parent.mkdir()
    glue.write_text("sentence\tlabel\n" + "".join(
        f"{'a fine and charming film' if i % 2 else 'a dull and tedious plot'} number {i} .\t{i % 2}\n"
        for i in range(12)))
    return root


def _recipe_action():
    """The ``--recipe`` argument of a freshly built ``distill`` parser."""
    parser = argparse.ArgumentParser(prog="inhibitron")
    sub = parser.add_subparsers(dest="command")
    distill_cmd.register(sub)
    (action,) = [a for a in sub.choices["distill"]._actions if a.dest == "recipe"]
    return action


def test_recipe_choices_and_help_come_from_the_registry():
    from inhibitron.model.recipes import recipe_names

    action = _recipe_action()
    assert tuple(action.choices) == recipe_names()
    assert action.help == ("layerwise (Exp. 1a), full (Exp. 1b), layerwise_full (Exp. 1a then 1b), task (Exp. 2), "
                           "finetune (Table 6), qat (default layerwise_full: layer-wise, then a full phase)")
    assert action.default == "layerwise_full"


def test_default_pipeline_with_the_fixed_evaluation_set(folders, tmp_path, capsys):
    """No --recipe: layer-wise then full; --fidelity all measures every held-out sentence."""
    from inhibitron.model.data import eval_sentences

    out = tmp_path / "default"
    assert cli("distill", "--teacher", folders / "teacher", "--out", out, "--fidelity", "all",
               "--full-max-steps", "2", "--full-epochs", "10", "--no-fit-scalars", *SHORT) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"] == "layerwise_full" and run["phases"] == ["layer 0", "layer 1", "full"]
    assert run["config"]["fit_scalars"] is False
    fid = json.loads((out / "fidelity.json").read_text())
    assert fid["sentences"] == len(eval_sentences())
    assert {"spearman", "nn_top1", "context_rel_mse"} <= set(fid["after"])
    assert "Spearman" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli("distill", "--out", tmp_path / "x", "--fidelity", "some")


def test_a_registered_recipe_runs_from_the_cli(folders, tmp_path, monkeypatch):
    """Adding a recipe is one registration: the CLI offers it, builds its models and data, and calls it."""
    from inhibitron.model import recipes

    monkeypatch.setattr(recipes, "REGISTRY", dict(recipes.REGISTRY))
    seen = {}

    @recipes.register("dummy", defaults={"epochs": 1.0, "batch_size": 4}, source="test")
    def dummy(teacher, student, data, config, out_dir, **kw):
        seen.update(teacher=teacher, student=student, data=data, config=config, out_dir=out_dir, **kw)
        return []

    assert "dummy" in _recipe_action().choices
    assert "dummy (test)" in _recipe_action().help
    assert cli("distill", "--recipe", "dummy", "--teacher", folders / "teacher", "--out", tmp_path / "d", *SHORT) == 0
    assert seen["config"].recipe == "dummy" and seen["config"].max_steps == 2
    assert len(seen["data"]) == 8 and seen["out_dir"] == str(tmp_path / "d")
    assert hasattr(seen["teacher"], "encoder") and seen["tokenizer"] is not None
    assert "fake_quant" not in seen


def test_print_config(capsys):
    assert cli("distill", "--print-config", "task") == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["recipe"] == "task" and cfg["temperature"] == 4.0 and cfg["alpha_kd"] == 0.5


def test_layerwise_run_with_fidelity_and_resume(folders, tmp_path, capsys):
    out = tmp_path / "lw"
    assert cli("distill", "--recipe", "layerwise", "--teacher", folders / "teacher", "--out", out,
               "--fidelity", "4", *SHORT) == 0
    text = capsys.readouterr().out
    assert "| before |" in text and "| after |" in text
    fid = json.loads((out / "fidelity.json").read_text())
    assert set(fid) >= {"before", "after", "after, int8 attention", "sentences"}
    assert (out / "student" / "model.safetensors").is_file() and (out / "student" / "tokenizer.json").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"] == "layerwise" and run["phases"] == ["layer 0", "layer 1"]
    # Running again without --resume is refused; with --resume it has nothing left to do.
    with pytest.raises(CheckpointError, match="already holds a run"):
        cli("distill", "--recipe", "layerwise", "--teacher", folders / "teacher", "--out", out, *SHORT)
    assert cli("distill", "--recipe", "layerwise", "--teacher", folders / "teacher", "--out", out, "--resume",
               *SHORT) == 0
    with pytest.raises(CheckpointError, match=r"configuration differs \(max_steps: checkpoint 2 vs now 3\)"):
        cli("distill", "--recipe", "layerwise", "--teacher", folders / "teacher", "--out", out, "--resume",
            *SHORT, "--max-steps", "3")


def test_full_from_a_student_folder_then_report(folders, tmp_path):
    export = pytest.importorskip("inhibitron.quant.export")
    lw = tmp_path / "lw"
    cli("distill", "--recipe", "layerwise", "--teacher", folders / "teacher", "--out", lw, *SHORT)
    full = tmp_path / "full"
    assert cli("distill", "--recipe", "full", "--teacher", folders / "teacher", "--student", lw / "student",
               "--out", full, *SHORT) == 0
    from inhibitron.model.capture import tokenize
    from inhibitron.model.data import heldout_sentences
    from inhibitron.model.surgery import load_student

    student = load_student(full / "student")
    _, tok = load_teacher(folders / "teacher")
    ids, mask = tokenize(tok, heldout_sentences(4, seed=3), max_length=32)
    ckpt, _ = export.export_student(student, tmp_path / "ckpt", input_ids=ids, attention_mask=mask, seq_len=32,
                                    onnx=False, memory_images=False)
    assert cli("report", "--checkpoint", ckpt, "--student", full / "student", "--out", tmp_path / "rep",
               "--sentences", "3", "--bits", "6,8") == 0
    assert "## Bit-width sweep" in (tmp_path / "rep" / "report.md").read_text()
    other = tmp_path / "other"
    make_teacher(vocab_size=tok.vocab_size, max_position_embeddings=64, seed=7).save_pretrained(other)
    tok.save_pretrained(other)
    with pytest.raises(UserError, match="differs from the student's"):
        cli("report", "--checkpoint", ckpt, "--student", other, "--out", tmp_path / "rep2")


def test_task_and_finetune_runs(folders, tmp_path):
    data = folders / "SST-2" / "train.tsv"
    assert cli("distill", "--recipe", "task", "--teacher", folders / "clf", "--data", data,
               "--out", tmp_path / "task", *SHORT) == 0
    metrics = [json.loads(x) for x in (tmp_path / "task" / "metrics.jsonl").read_text().splitlines()]
    assert {"kd", "hidden_mse"} <= set(metrics[0])
    assert cli("distill", "--recipe", "finetune", "--teacher", folders / "teacher", "--data", data,
               "--out", tmp_path / "ft", *SHORT) == 0
    assert (tmp_path / "ft" / "student" / "config.json").is_file()


def test_qat_run_on_text(folders, tmp_path, capsys):
    pytest.importorskip("inhibitron.quant.qat")
    assert cli("distill", "--recipe", "qat", "--teacher", folders / "teacher", "--out", tmp_path / "qat",
               *SHORT) == 0
    assert "qat: calibrated on 8 sequences" in capsys.readouterr().out
    metrics = [json.loads(x) for x in (tmp_path / "qat" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and "hidden_mse" in metrics[0]


def test_bad_teacher_folders(folders, tmp_path):
    with pytest.raises(ModelFolderError, match="model folder '.*nowhere' does not exist"):
        cli("distill", "--teacher", tmp_path / "nowhere", "--out", tmp_path / "o", *SHORT)
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelFolderError, match="holds a 'gpt2' model; supported: bert, distilbert"):
        cli("distill", "--teacher", gpt, "--out", tmp_path / "o", *SHORT)
    with pytest.raises(ModelFolderError, match="is not a fine-tuned sequence classifier"):
        cli("distill", "--recipe", "task", "--teacher", folders / "teacher", "--data",
            folders / "SST-2" / "train.tsv", "--out", tmp_path / "o", *SHORT)
    with pytest.raises(UserError, match="--recipe task needs --teacher"):
        cli("distill", "--recipe", "task", "--data", folders / "SST-2" / "train.tsv", "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_bad_corpus_and_labelled_data(folders, tmp_path):
    with pytest.raises(CorpusError, match="corpus path '.*missing.txt' does not exist"):
        cli("distill", "--teacher", folders / "teacher", "--corpus", tmp_path / "missing.txt",
            "--out", tmp_path / "o", *SHORT)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(CorpusError, match="contains no .txt files"):
        cli("distill", "--teacher", folders / "teacher", "--corpus", empty_dir, "--out", tmp_path / "o", *SHORT)
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    with pytest.raises(CorpusError, match="is empty"):
        cli("distill", "--teacher", folders / "teacher", "--corpus", empty, "--out", tmp_path / "o", *SHORT)
    bad = tmp_path / "SST-2" / "dev.tsv"
    bad.parent.mkdir()
    bad.write_text("sentence\tlabel\nfine .\t1\nbroken line without a tab\n")
    with pytest.raises(LabelledDataError, match=r"dev.tsv:3: 1 tab-separated columns"):
        cli("distill", "--recipe", "finetune", "--teacher", folders / "teacher", "--data", bad,
            "--out", tmp_path / "o", *SHORT)
    with pytest.raises(UserError, match="--recipe finetune needs --data"):
        cli("distill", "--recipe", "finetune", "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_user_corpus_file(folders, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(
        f"Paragraph {i} is a piece of real English prose that is long enough to keep." for i in range(40)))
    assert cli("distill", "--teacher", folders / "teacher", "--corpus", corpus, "--out", tmp_path / "o",
               *SHORT) == 0
    assert json.loads((tmp_path / "o" / "run.json").read_text())["corpus"] == str(corpus)
