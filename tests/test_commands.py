"""Every command the README and docs/ print runs as written, on the Snakemake installed here.

The commands are read from the fenced code blocks of README.md and docs/*.md (a line that
starts with ``snakemake``, ``python -m`` or ``pip install``; a trailing backslash continues
it). Then:

* ``snakemake ...`` is dry-run (``-n`` added) in a copy of the workflow, so a change of
  Snakemake's command line (a target after ``--config`` read as a config entry, say) fails
  here; ``--report`` commands build their report for real, into a temporary file;
* ``python -m nemon.results ...`` runs as written (it reads the committed tables);
* other ``python -m`` commands (the benchmarks, which take minutes) parse their arguments:
  ``--help`` is appended, so an unknown option or a bad value before it is an error;
* ``pip install`` names only extras that pyproject.toml defines.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib

import pytest
from conftest import REPO, copy_workflow, snakemake

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
STARTS = ("snakemake", "python -m", "pip install")


def commands() -> list[tuple[str, str]]:
    """``(file, command)`` for every command line in a fenced block of the docs."""
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S):
            lines = block.splitlines()
            i = 0
            while i < len(lines):
                line = lines[i].strip().removeprefix("$ ")
                while line.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line[:-1].rstrip() + " " + lines[i].strip()
                i += 1
                line = line.split("  #")[0].strip()  # a trailing comment
                if line.startswith(STARTS):
                    out.append((path.name, line))
    return out


COMMANDS = commands()


def test_the_docs_show_the_commands_a_reader_needs():
    assert any(c.startswith("snakemake") for _, c in COMMANDS)
    assert any(c.startswith("pip install") for _, c in COMMANDS)


def ids(cmds):
    return [f"{f}: {c[:70]}" for f, c in cmds]


SNAKEMAKE = [(f, c) for f, c in COMMANDS if c.startswith("snakemake")]
PYTHON = [(f, c) for f, c in COMMANDS if c.startswith("python -m")]
PIP = [(f, c) for f, c in COMMANDS if c.startswith("pip install")]


@pytest.mark.e2e
@pytest.mark.parametrize(("where", "command"), SNAKEMAKE, ids=ids(SNAKEMAKE))
def test_every_snakemake_command_runs_as_written(where, command, tmp_path):
    words = shlex.split(command)[1:]
    if "--report" in words:  # a report is built from the committed results, into tmp_path
        i = words.index("--report")
        words[i + 1] = str(tmp_path / "report.html")
        r = snakemake(*words, cwd=REPO, timeout=600)
        assert r.returncode == 0, f"{where}: {command}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        assert (tmp_path / "report.html").stat().st_size > 0
        return
    wf = copy_workflow(tmp_path / "wf")
    r = snakemake(*words, "-n", cwd=wf, timeout=300)
    assert r.returncode == 0, f"{where}: {command}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"


@pytest.mark.parametrize(("where", "command"), PYTHON, ids=ids(PYTHON))
def test_every_python_command_runs_or_parses_as_written(where, command):
    words = shlex.split(command)[1:]  # -m MODULE ARGS...
    literal = words[1] == "nemon.results"
    if not literal:
        words.append("--help")
    r = subprocess.run(
        [sys.executable, *words], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, f"{where}: {command}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"


@pytest.mark.parametrize(("where", "command"), PIP, ids=ids(PIP))
def test_every_pip_command_names_extras_that_exist(where, command):
    extras = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    for spec in re.findall(r"\.\[([a-z,-]+)\]", command):
        assert set(spec.split(",")) <= extras, f"{where}: {command}"
