"""The lemmata command: exit codes, messages, summary.json, report, resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "experiments"))
import toy_experiments  # noqa: F401  (registers toy-mean, toy-raises)

from lemmata.cli import main

BAD_COMMANDS = [
    (["run", "nope"], r"unknown experiment 'nope'; valid names: .*pgd-margin"),
    (["run", "toy-mean", "--scale", "huge"], r"Invalid value for '--scale'"),
    (["run", "toy-mean", "--jobs", "0"], r"Invalid value for '--jobs'"),
    (["run", "toy-mean", "--seeds", "0"], r"Invalid value for '--seeds'"),
    (["run", "toy-mean", "--backend", "slurm"], r"Invalid value for '--backend'"),
    (["run"], r"Missing argument 'NAME...'"),
    (["run", "toy-mean", "--set", "n"], r"--set must be KEY=VALUE; got 'n'"),
    (["run", "toy-mean", "--set", "zz=1"], r"unknown config key 'zz'"),
    (["run", "toy-mean", "toy-raises", "--set", "n=1"], r"--set applies to one"),
    (["frobnicate"], r"No such command 'frobnicate'"),
]


@pytest.mark.parametrize(("argv", "pattern"), BAD_COMMANDS)
def test_bad_input_is_one_line_and_exit_2(argv, pattern, capsys, tmp_path):
    code = main([*argv, "--out", str(tmp_path)] if argv[0] == "run" else argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lemmata: error: ")
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_run_passes_then_resumes(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["run", "toy-mean", "--jobs", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "3 passed, 0 failed" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == 3
    assert {r["verdict"] for r in summary} == {"pass"}
    assert {r["seed"] for r in summary} == {0, 1, 2}
    assert summary[0]["check"] == "absolute error"
    assert summary[0]["threshold"] == 0.5

    assert main(["run", "toy-mean", "--jobs", "1", "--out", str(out)]) == 0
    assert "stored: toy-mean" in capsys.readouterr().err


def test_failed_check_exits_1(tmp_path, capsys):
    argv = ["run", "toy-mean", "--seeds", "1", "--set", "tolerance=1e-12"]
    assert main([*argv, "--out", str(tmp_path)]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary[0]["verdict"] == "fail"


def test_raising_run_exits_1_and_is_summarised(tmp_path, capsys):
    assert main(["run", "toy-raises", "--out", str(tmp_path)]) == 1
    assert "RuntimeError: boom" in capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary[0]["verdict"] == "error"


def test_report_command(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "holds no stored runs" in capsys.readouterr().err
    main(["run", "toy-mean", "--seeds", "2", "--out", str(tmp_path)])
    assert main(["report", "--out", str(tmp_path)]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "toy-mean" in html and "PASS (2/2 seeds)" in html


def test_list_shows_every_experiment(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "pgd-margin" in out and "pgd-regression" in out


def _lemmata(*args, cwd):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lemmata", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_subprocess_smoke_run_of_a_real_experiment(tmp_path):
    # 300 steps are too few to converge: the checks fail, and the exit code says so.
    proc = _lemmata(
        "run",
        "pgd-regression",
        "--seeds",
        "1",
        "--set",
        "steps=300",
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {r["experiment"] for r in summary} == {"pgd-regression"}
    assert any(r["verdict"] == "fail" for r in summary)
    assert list((tmp_path / "pgd-regression").glob("*/interpolator_error.png"))


def test_subprocess_bad_name(tmp_path):
    proc = _lemmata("run", "nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lemmata: error: unknown experiment 'nope'; valid names: "
        + proc.stderr.split("valid names: ")[1].strip()
    ]
    assert "Traceback" not in proc.stderr
