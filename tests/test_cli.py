"""The ``inhibitron`` command line: help, version, the demo and its errors."""

import json
import subprocess
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


def test_demo_quick_runs_on_real_minilm(tmp_path):
    r = run_cli("demo", "--quick", "--out", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    assert "BEFORE distillation" in r.stdout
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["layers"] == 6 and summary["heads"] == 12
    assert summary["student_parameters"] - summary["teacher_parameters"] == 3 * 72
    assert -1.0 <= summary["cosine_mean"] <= 1.0


def test_demo_with_missing_teacher_gives_clear_error(tmp_path):
    r = run_cli("demo", "--quick", "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode == 1
    assert "does not exist" in r.stderr
    assert "Traceback" not in r.stderr
