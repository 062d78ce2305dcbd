"""Bad input to every subcommand: exit code 1 (2 for argument errors), one line naming the
problem (file, option, tensor, parameter), no traceback, nothing left behind (issue 13).

Most cases fail before any heavy work, so they run in-process through
:func:`inhibitron.cli.main`; a few go through a subprocess to prove that no
traceback reaches the user.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inhibitron.cli import main

OK_CONFIG = {"rows": 2, "cols": 2, "seq_len": 4, "head_dim": 4, "qk_bits": 4, "v_bits": 4, "out_bits": 4}


def cli(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``inhibitron *argv`` run in-process."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str, command: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith(f"inhibitron {command}: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def listing(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture
def ok_config(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(OK_CONFIG))
    return path


@pytest.fixture
def afile(tmp_path):
    path = tmp_path / "afile"
    path.write_text("user data")
    return path


# ---------------------------------------------------------------------------
# 2. Output paths checked before any work; config JSON of the wrong types
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("argv, option", [
    (["export", "--out", "{afile}/sub", "--no-onnx"], "--out"),
    (["generate", "--config", "{cfg}", "--out", "{afile}/sub"], "--out"),
    (["generate", "--config", "{cfg}", "--out", "{afile}"], "--out"),
    (["sim", "--config", "{cfg}", "--build-dir", "{afile}"], "--build-dir"),
    (["synth", "--config", "{cfg}", "--no-pnr", "--out", "{afile}"], "--out"),
    (["report", "--checkpoint", "{tmp}/nockpt", "--out", "{afile}/r"], "--out"),
    (["distill", "--out", "{afile}"], "--out"),
    (["distill", "--out", "{afile}/run"], "--out"),
    (["demo", "--quick", "--out", "{afile}/demo"], "--out"),
])
def test_output_path_under_a_file_is_refused_before_any_work(capsys, tmp_path, afile, ok_config, argv, option):
    argv = [a.format(afile=afile, cfg=ok_config, tmp=tmp_path) for a in argv]
    before = listing(tmp_path)
    rc, _, err = cli(capsys, *argv)
    assert rc == 1
    line = one_line_error(err, argv[0])
    assert option in line and "afile" in line and "is a file, not a folder" in line
    assert listing(tmp_path) == before
    assert afile.read_text() == "user data"


def test_output_in_a_place_that_cannot_be_written(capsys, ok_config):
    # /sys refuses new folders even to root (EPERM), like a read-only file system.
    rc, _, err = cli(capsys, "generate", "--config", str(ok_config), "--out", "/sys/inhibitron_out")
    assert rc == 1
    assert "--out '/sys/inhibitron_out': cannot write in '/sys'" in one_line_error(err, "generate")


def test_read_only_file_system_is_named(capsys, tmp_path, monkeypatch):
    import tempfile

    def erofs(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkdtemp", erofs)
    rc, _, err = cli(capsys, "export", "--out", str(tmp_path / "ck"))
    assert rc == 1
    assert "cannot write in" in err and "Read-only file system" in one_line_error(err, "export")
    assert not (tmp_path / "ck").exists()


def test_export_out_under_a_file_without_traceback(tmp_path, afile):
    """End to end in a subprocess: no traceback reaches the user, nothing is calibrated."""
    r = subprocess.run([sys.executable, "-m", "inhibitron", "export", "--out", str(afile / "sub")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "is a file, not a folder" in r.stderr and "calibration" not in r.stdout


@pytest.mark.parametrize("command", ["generate", "sim", "synth"])
@pytest.mark.parametrize("text, message", [
    ('{"rows": "2"}', "rows must be an integer, not '2'"),
    ('{"rows": 2.0}', "rows must be an integer, not 2.0"),
    ('{"rows": true}', "rows must be an integer, not True"),
    ("[2, 2]", "list"),
])
def test_config_of_the_wrong_type_is_a_named_error(capsys, tmp_path, command, text, message):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(text)
    extra = {"generate": ["--out", str(tmp_path / "rtl")], "sim": ["--build-dir", str(tmp_path / "b")],
             "synth": ["--no-pnr", "--out", str(tmp_path / "s")]}[command]
    rc, _, err = cli(capsys, command, "--config", str(cfg), *extra)
    assert rc == 1
    line = one_line_error(err, command)
    assert "cfg.json" in line and message in line
    assert listing(tmp_path) == {"cfg.json"}


# ---------------------------------------------------------------------------
# 4. sim checks its numbers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("option, value, message", [
    ("--idle", "2", "expected a probability in [0, 1), got 2"),
    ("--idle", "-0.5", "expected a probability in [0, 1), got -0.5"),
    ("--stall", "1", "expected a probability in [0, 1), got 1"),
    ("--stall", "nan", "expected a probability in [0, 1), got nan"),
    ("--heads", "-3", "expected a non-negative integer, got -3"),
    ("--rows", "0", "expected a positive integer, got 0"),
])
def test_sim_rejects_bad_numbers_at_parse_time(capsys, ok_config, option, value, message):
    rc, _, err = cli(capsys, "sim", "--config", str(ok_config), option, value)
    assert rc == 2
    assert f"argument {option}: {message}" in err


def _fake_cosim(results):
    def cosimulate(cfg, heads, build_dir, *, simulator, runs):
        return [dict(r) for r in results]

    return cosimulate


PASS = {"heads": 3, "elements_compared": 48, "mismatches": 0, "passed": True, "stalled": None,
        "cycles_per_head": [], "first_mismatches": [], "tlast_errors": []}


@pytest.mark.parametrize("second, verdict, message", [
    ({**PASS, "elements_compared": 16, "passed": False, "timed_out": True,
      "stalled": "stalled: no beat moved for 900 cycles (bound 900), waiting on m_axis_h"},
     "STALLED", "stalled: backpressure run: stalled: no beat moved for 900 cycles"),
    ({**PASS, "elements_compared": 0}, "NOTHING COMPARED",
     "nothing compared: backpressure run compared 0 elements"),
    ({**PASS, "mismatches": 3, "passed": False}, "MISMATCH", "mismatch: backpressure run: 3 of 48"),
    ({"passed": False, "error": "testbench wrote no result (see x/sim.log)"}, "ERROR",
     "error: backpressure run: testbench wrote no result"),
])
def test_sim_names_a_stalled_or_empty_run(capsys, tmp_path, ok_config, monkeypatch, second, verdict, message):
    import inhibitron.sim.runner as runner

    monkeypatch.setattr(runner, "cosimulate", _fake_cosim([PASS, second]))
    rc, out, _ = cli(capsys, "sim", "--config", str(ok_config), "--build-dir", str(tmp_path / "b"),
                     "--no-every-length", "--heads", "1")
    assert rc == 1
    assert out.strip().splitlines()[-1] == verdict
    assert message in out
    assert "bit-exact" not in out


def test_sim_passes_only_with_elements_compared(capsys, tmp_path, ok_config, monkeypatch):
    import inhibitron.sim.runner as runner

    monkeypatch.setattr(runner, "cosimulate", _fake_cosim([PASS, PASS]))
    rc, out, _ = cli(capsys, "sim", "--config", str(ok_config), "--build-dir", str(tmp_path / "b"))
    assert rc == 0 and out.strip().splitlines()[-1] == "bit-exact"


# ---------------------------------------------------------------------------
# 6. Smaller ones
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["generate", "sim"])
def test_config_with_checkpoint_options_is_refused(capsys, tmp_path, ok_config, command):
    rc, _, err = cli(capsys, command, "--config", str(ok_config), "--rows", "4")
    assert rc == 1
    assert "--rows only apply with --checkpoint; with --config set rows in" in one_line_error(err, command)


@pytest.mark.parametrize("command", ["generate", "sim", "synth"])
def test_config_folder_is_not_called_missing(capsys, tmp_path, command):
    rc, _, err = cli(capsys, command, "--config", str(tmp_path))
    assert rc == 1
    line = one_line_error(err, command)
    assert "is a folder" in line and "does not exist" not in line


def test_export_max_length_needs_room_for_a_token(capsys, tmp_path):
    rc, _, err = cli(capsys, "export", "--out", str(tmp_path / "ck"), "--max-length", "2")
    assert rc == 2
    assert "max-length must be at least 3 ([CLS], one token, [SEP]), got 2" in err
    assert not (tmp_path / "ck").exists()


# ---------------------------------------------------------------------------
# 5. Commands that overwrite what they should not
# ---------------------------------------------------------------------------


def test_export_force_refuses_a_folder_it_did_not_write(capsys, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    rc, _, err = cli(capsys, "export", "--out", str(mine), "--force")
    assert rc == 1
    assert "is not a checkpoint written by inhibitron export" in one_line_error(err, "export")
    assert (mine / "thesis.tex").read_text() == "keep me"
    # A manifest.json that is not ours is no licence either.
    (mine / "manifest.json").write_text('{"producer": {"name": "someone else"}}')
    rc, _, err = cli(capsys, "export", "--out", str(mine), "--force")
    assert rc == 1 and (mine / "thesis.tex").is_file()


# ---------------------------------------------------------------------------
# 7. Help a new user meets
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["export", "generate", "sim", "synth", "report"])
def test_help_has_examples(capsys, command):
    rc, out, _ = cli(capsys, command, "--help")
    assert rc == 0
    assert "examples:" in out and f"inhibitron {command} --" in out


def test_sim_help_describes_every_option(capsys):
    _, out, _ = cli(capsys, "sim", "--help")
    for option in ("--rows R", "--cols C", "--simulator", "--seed SEED", "--build-dir DIR"):
        text = out.split(option, 1)[1].split("\n  --", 1)[0]
        assert len(text.split()) > 3, f"{option} has no description"
    flat = " ".join(out.split())
    assert "default build/cosim" in flat and "default 0" in flat


def test_export_help_says_what_it_calibrates_on(capsys):
    _, out, _ = cli(capsys, "export", "--help")
    flat = " ".join(out.split())
    assert "pydoc_data.topics" in flat and "--corpus" in flat and "--no-progress" in flat


# ---------------------------------------------------------------------------
# 1. report: atomic, the student validated before any work; 3. edited manifests
# ---------------------------------------------------------------------------


def _student(vocab_size=30522):
    import torch
    from transformers import BertConfig, BertModel

    from inhibitron.model.surgery import iter_inhibitors, to_inhibitor

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    s = to_inhibitor(BertModel(cfg).eval())
    with torch.no_grad():
        for _, m in iter_inhibitors(s):
            m.gamma.uniform_(0.25, 0.35)
            m.delta.uniform_(-0.3, 0.0)
    return s


def _save(student, folder: Path) -> Path:
    import shutil

    from inhibitron.model.surgery import default_teacher_path, save_student

    save_student(student, folder)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (default_teacher_path() / name).is_file():
            shutil.copy(default_teacher_path() / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(root, student folder, checkpoint folder, report folder)``: a tiny student, its checkpoint, a report."""
    pytest.importorskip("torch")
    from inhibitron.model.capture import tokenize
    from inhibitron.model.corpus import embedded_sentences
    from inhibitron.model.surgery import load_student
    from inhibitron.quant.export import export_student
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("tiny")
    folder = _save(_student(), root / "student")
    student = load_student(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    ids, am = tokenize(tok, embedded_sentences(3, seed=0), max_length=16)
    ckpt, _ = export_student(student, root / "ckpt", input_ids=ids, attention_mask=am, seq_len=16,
                             onnx=False, memory_images=False)
    rep = root / "rep"
    rc = main(["report", "--checkpoint", str(ckpt), "--student", str(folder), "--out", str(rep),
               "--sentences", "2", "--sweep-bits", "8", "--no-progress"])
    assert rc == 0 and (rep / "report.md").is_file()
    return root, folder, ckpt, rep


def _report(tiny, out, *extra, student=None):
    root, folder, ckpt, _ = tiny
    return ["report", "--checkpoint", str(ckpt), "--student", str(student or folder), "--out", str(out),
            "--sentences", "2", "--sweep-bits", "8", "--no-progress", *extra]


def test_report_interrupted_leaves_nothing_behind(capsys, tmp_path, tiny, monkeypatch):
    import inhibitron.quant.report as rep

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rep, "plot_sweep", interrupt)  # after the histograms and ranges are drawn
    rc, _, err = cli(capsys, *_report(tiny, tmp_path / "r"))
    assert rc == 130 and "interrupted" in err
    assert listing(tmp_path) == set()


def test_report_failure_keeps_the_earlier_report(capsys, tmp_path, tiny, monkeypatch):
    import shutil

    import inhibitron.quant.report as rep

    earlier = tmp_path / "r"
    shutil.copytree(tiny[3], earlier)
    before = {p: (earlier / p).read_bytes() for p in listing(earlier)}

    def fail(*a, **k):
        raise rep.ReportError("injected failure")

    monkeypatch.setattr(rep, "plot_sweep", fail)
    rc, _, err = cli(capsys, *_report(tiny, earlier, "--force"))
    assert rc == 1 and "injected failure" in one_line_error(err, "report")
    assert {p: (earlier / p).read_bytes() for p in listing(earlier)} == before
    assert listing(tmp_path) == {"r"} | {f"r/{p}" for p in before}


@pytest.mark.parametrize("what", ["nan", "gamma", "eta"])
def test_report_validates_the_student_before_any_work(capsys, tmp_path, tiny, what):
    import torch

    s = _student()
    with torch.no_grad():
        if what == "nan":
            s.encoder.layer[0].attention.self.key.weight[3, 4] = float("nan")
        else:
            getattr(s.encoder.layer[0].attention.self.inhibitor, what)[1] = -0.3 if what == "gamma" else 0.0
    bad = _save(s, tmp_path / "bad")
    rc, _, err = cli(capsys, *_report(tiny, tmp_path / "r", student=bad))
    assert rc == 1
    line = one_line_error(err, "report")
    expected = {"nan": "parameter encoder.layer.0.attention.self.key.weight contains NaN or Inf (first at index (3, 4))",
                "gamma": "layer 0 head 1: gamma = -0.3 (parameter encoder.layer.0.attention.self.inhibitor.gamma[1])",
                "eta": "layer 0 head 1: eta = 0 (parameter encoder.layer.0.attention.self.inhibitor.eta[1])"}[what]
    assert expected in line
    assert not (tmp_path / "r").exists()


def test_report_force_refuses_a_foreign_folder(capsys, tmp_path, tiny):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    rc, _, err = cli(capsys, *_report(tiny, mine, "--force"))
    assert rc == 1 and "does not hold an earlier report" in one_line_error(err, "report")
    assert (mine / "notes.txt").read_text() == "keep me"


def test_report_text_that_is_not_utf8_names_the_file(capsys, tmp_path, tiny):
    text = tmp_path / "latin1.txt"
    text.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    rc, _, err = cli(capsys, *_report(tiny, tmp_path / "r", "--text", str(text)))
    assert rc == 1
    line = one_line_error(err, "report")
    assert "latin1.txt" in line and "is not UTF-8 text" in line
    assert not (tmp_path / "r").exists()


def test_report_bits_is_a_deprecated_alias_of_sweep_bits(capsys, tmp_path, tiny):
    rc, _, err = cli(capsys, "report", "--checkpoint", str(tiny[2]), "--out", str(tmp_path / "r"),
                     "--bits", "x")
    assert rc == 1
    assert "--bits is deprecated here" in err and "--sweep-bits must be comma-separated integers" in err
    _, out, _ = cli(capsys, "report", "--help")
    assert "--sweep-bits" in out and "--bits " not in out


def _claim_formats(ckpt: Path, dest: Path, **formats) -> Path:
    import shutil

    from inhibitron.quant.checkpoint import _content_hash, canonical_json

    shutil.copytree(ckpt, dest)
    m = json.loads((dest / "manifest.json").read_text())
    for layer in m["layers"]:
        layer["attention"]["formats"].update(formats)
    m["manifest_sha256"] = _content_hash(m)
    (dest / "manifest.json").write_text(canonical_json(m))
    return dest


def test_manifest_edited_to_claim_other_formats_is_refused(capsys, tmp_path, tiny):
    edited = _claim_formats(tiny[2], tmp_path / "edited", v_bits=4, out_bits=4)
    rc, _, err = cli(capsys, "generate", "--checkpoint", str(edited), "--layer", "0", "--out", str(tmp_path / "rtl"))
    assert rc == 1
    line = one_line_error(err, "generate")
    assert "layer 0: the stored widths disagree with those derived from its formats" in line
    assert "v_bits=4" in line and "acc_bits" in line
    assert not (tmp_path / "rtl").exists()
    rc, _, err = cli(capsys, *_report(tiny, tmp_path / "r"), "--checkpoint", str(edited))
    assert rc == 1 and "the stored widths disagree" in one_line_error(err, "report")
    assert not (tmp_path / "r").exists()


def test_manifest_head_integers_outside_the_claimed_formats(tmp_path, tiny):
    from inhibitron.quant.checkpoint import CheckpointError, load_checkpoint
    from inhibitron.quant.formats import AttentionFormats

    ck = load_checkpoint(tiny[2])
    lq = ck.layers[0].attention
    widths = {k: int(v) for k, v in vars(lq.widths(16)).items()}
    # The widths edited too, consistently: the theta/r ranges of 2-bit formats still refuse it.
    narrow = AttentionFormats(2, 2, 2)
    edited = _claim_formats(tiny[2], tmp_path / "e2", qk_bits=2, v_bits=2, out_bits=2)
    m = json.loads((edited / "manifest.json").read_text())
    m["layers"][0]["widths"] = {k: int(v) for k, v in vars(narrow.widths(
        head_dim=lq.head_dim, seq_len=16, v_shift=int(lq.v_shift.max()), z_shift=int(lq.z_shift.max()),
        out_shift=int(lq.out_shift.max()))).items()}
    from inhibitron.quant.checkpoint import _content_hash, canonical_json

    m["manifest_sha256"] = _content_hash(m)
    (edited / "manifest.json").write_text(canonical_json(m))
    with pytest.raises(CheckpointError, match=r"layer 0.*(theta=-?\d+ is outside the threshold range|"
                                              r"out_shift r=\d+ is outside \[0, \d+\])"):
        load_checkpoint(edited)
    assert widths  # the original loads (above) with its own widths


def test_no_progress_silences_transformers_loading_bar(tmp_path, afile):
    code = ("from inhibitron.cli import main; import transformers.utils.logging as l; "
            f"main(['export', '--no-progress', '--out', {str(afile / 'x')!r}]); "
            "print('bars', l.is_progress_bar_enabled())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "bars False" in r.stdout, r.stderr


# ---------------------------------------------------------------------------
# 5. bench writes nothing unless a benchmark ran
# ---------------------------------------------------------------------------


def test_bench_unknown_name_is_an_error_and_writes_nothing(capsys, tmp_path):
    out = tmp_path / "perf.md"
    rc, _, err = cli(capsys, "bench", "--only", "not_a_bench", "--out", str(out))
    assert rc == 1
    line = one_line_error(err, "bench")
    assert "unknown benchmark(s) ['not_a_bench']" in line and "bench_golden" in line
    assert not out.exists()


def test_bench_writes_nothing_when_every_benchmark_is_skipped(capsys, tmp_path, monkeypatch):
    import inhibitron.bench as bench

    monkeypatch.setattr(bench, "BENCHMARKS", (("inhibitron.no_such_module", "bench_x", "nothing"),))
    out = tmp_path / "perf.md"
    out.write_text("the earlier report")
    rc, _, err = cli(capsys, "bench", "--only", "bench_x", "--out", str(out))
    assert rc == 1
    assert "no benchmark ran (bench_x: not available" in one_line_error(err, "bench")
    assert out.read_text() == "the earlier report"
    assert listing(tmp_path) == {"perf.md"}


def test_bench_out_that_is_a_folder(capsys, tmp_path):
    rc, _, err = cli(capsys, "bench", "--only", "bench_golden", "--out", str(tmp_path))
    assert rc == 1 and "is a folder, not a file" in one_line_error(err, "bench")


# ---------------------------------------------------------------------------
# 6. The float reference and export agree on what they assume
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gamma, eta, message", [
    ([0.3, -0.1], [1.0, 1.0], r"layer 0 head 1: gamma = -0.1; quantization needs gamma > 0"),
    ([0.3, 0.0], [1.0, 1.0], r"layer 0 head 1: gamma = 0.0; quantization needs gamma > 0"),
    ([0.3, 0.3], [0.0, 1.0], r"layer 0 head 0: eta = 0 makes the head's output identically 0"),
])
def test_reference_checks_gamma_and_eta_as_export_does(gamma, eta, message):
    import numpy as np

    from inhibitron.model.reference import check_quantizable, inhibitor_attention
    from inhibitron.quant.calibrate import fold_layer

    q = np.random.default_rng(0).normal(size=(2, 4, 8))
    inhibitor_attention(q, q, q, np.array(gamma), np.array(eta), 0.0)  # the mathematics: accepted
    with pytest.raises(ValueError, match=message):
        check_quantizable(gamma, eta, name="layer 0")
    amax = np.ones(2)
    with pytest.raises(ValueError, match=message):  # export's check, same words
        fold_layer(np.array(gamma), np.array(eta), np.zeros(2), amax, amax, amax, amax, head_dim=8, seq_len=4,
                   name="layer 0")
    check_quantizable([0.3, 0.3], [1.0, -2.0])  # a negative eta is fine: it folds into a negative scale


# ---------------------------------------------------------------------------
# 7. A quiet install: every folder shipped with the packages is declared
# ---------------------------------------------------------------------------


def test_every_package_folder_is_declared_in_pyproject():
    """setuptools warns ("Package 'inhibitron.sim.data' is absent from the `packages` configuration")
    for every importable folder under a mapped package that is not listed; list them all."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    root = Path(__file__).resolve().parents[1]
    conf = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(conf["packages"])
    missing = []
    for package, folder in conf["package-dir"].items():
        for sub in (root / folder).rglob("*"):
            if not sub.is_dir() or "__pycache__" in sub.parts or sub.name.startswith("."):
                continue
            if not any(p.is_file() for p in sub.iterdir()):
                continue
            name = package + "." + ".".join(sub.relative_to(root / folder).parts)
            if name not in declared and not name.startswith("inhibitron.commands"):
                missing.append(name)
    assert not missing, f"folders not declared as packages in pyproject.toml: {missing}"
    for package, patterns in conf["package-data"].items():
        assert package in declared, package
        folder = root / conf["package-dir"].get(package, "") if package in conf["package-dir"] else \
            root / conf["package-dir"][package.rsplit(".", 1)[0]] / package.rsplit(".", 1)[1]
        assert all(list(folder.glob(p)) for p in patterns), (package, patterns)


def test_compare_out_that_is_a_folder_is_refused_before_synthesis(capsys, tmp_path):
    rc, _, err = cli(capsys, "compare", "--sizes", "2", "--dims", "32", "--out", str(tmp_path),
                     "--build", str(tmp_path / "b"))
    assert rc == 1 and "--out" in one_line_error(err, "compare") and "is a folder, not a file" in err
    assert listing(tmp_path) == set()


def test_errors_page_is_linked_and_lists_the_exit_codes():
    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "errors.md").read_text()
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 130 |", "| 143 |"):
        assert code in text
    assert "docs/errors.md" in (root / "README.md").read_text()
    assert "errors.md" in (root / "docs" / "architecture.md").read_text().split("## Errors", 1)[1]


def test_distill_max_steps_is_called_a_cap(capsys):
    _, out, _ = cli(capsys, "distill", "--help")
    flat = " ".join(out.split())
    assert "--max-steps MAX_STEPS a cap on the optimizer steps per phase" in flat


def test_compare_rows_that_are_not_rows_are_refused(capsys, tmp_path):
    cases = {"missing.json": None, "bad.json": "{not json", "empty.json": "[]",
             "short.json": '[{"kind": "inhibitor", "size": 2}]'}
    expected = {"missing.json": "cannot read rows", "bad.json": "is not JSON",
                "empty.json": "holds no rows", "short.json": "row 0 lacks d, n, bits"}
    for name, text in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        rc, _, err = cli(capsys, "compare", "--rows", str(path), "--out", str(tmp_path / "r" / "e.md"))
        line = one_line_error(err, "compare")
        assert rc == 1 and "--rows" in line and name in line and expected[name] in line, line
    assert not (tmp_path / "r").exists()
