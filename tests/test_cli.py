"""The ``inhibitron`` command line: help, version, the demo and its errors."""

import json
import subprocess
from pathlib import Path
import sys

import pytest

from inhibitron import __version__
from inhibitron.cli import main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "inhibitron", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_help_lists_subcommands():
    r = run_cli("--help")
    assert r.returncode == 0
    assert "demo" in r.stdout


def test_help_does_not_import_torch():
    code = "import sys; from inhibitron.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_demo_quick_runs_end_to_end_on_real_minilm(tmp_path):
    """The main job in reduced sizes: distil, quantize, export, generate, cosimulate, report, synthesize."""
    out = tmp_path / "demo"
    r = run_cli("demo", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layers"] == 6 and summary["heads"] == 12
    assert summary["student_parameters"] - summary["teacher_parameters"] == 3 * 72
    fid = summary["fidelity"]
    # Even two steps per layer must clearly raise the teacher-vs-student similarity.
    assert fid["after distill"]["cosine_mean"] > fid["before distill"]["cosine_mean"] + 0.3
    assert abs(fid["int8 attention"]["cosine_mean"] - fid["after distill"]["cosine_mean"]) < 0.05
    assert summary["cosim"]["bit_exact"] and summary["cosim"]["mismatches"] == 0
    assert summary["cosim"]["elements_compared"] == 2 * 12 * 32 * 32
    assert summary["synthesis"]["dsp"] == 0 and summary["synthesis"]["lut4"] > 0
    for key in ("student", "checkpoint", "verilog", "cosim", "report", "summary"):
        assert Path(summary["artefacts"][key]).exists(), key
    assert (out / "checkpoint" / "manifest.json").is_file()
    assert "bit-exact" in r.stdout


def test_demo_refuses_a_foreign_output_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    r = run_cli("demo", "--quick", "--out", str(tmp_path))
    assert r.returncode == 1
    assert "is not empty and does not hold an earlier demo" in r.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_demo_with_missing_teacher_gives_clear_error(tmp_path):
    r = run_cli("demo", "--quick", "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode == 1
    assert "does not exist" in r.stderr
    assert "Traceback" not in r.stderr
