"""Every ``mlflow-energy`` (and ``mlflow``) command and flag that README.md and docs/ show in a shell block exists.

The click command trees (ours, and MLflow's own ``mlflow.cli.cli``) are the reference: a renamed or removed flag fails here with the file,
the line and the flag. Placeholders are fine (``--model FAMILY``, ``[--no-plots]``): only the
flag names are checked.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)\s*\n(.*?)^```", re.S | re.M)
SEPARATORS = re.compile(r"\s(?:&&|\|\||\||;)\s")


def shell_commands(text: str) -> list[tuple[int, str]]:
    """``(line, command)`` of every command in the shell blocks of a Markdown text."""
    found = []
    for block in SHELL_BLOCK.finditer(text):
        first_line = text[: block.start(1)].count("\n") + 1
        joined, start = "", None
        for offset, line in enumerate(block.group(1).splitlines()):
            start = first_line + offset if start is None else start
            line = line.removeprefix("$ ")
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            joined += line
            for part in SEPARATORS.split(joined):
                found.append((start, part.strip()))
            joined, start = "", None
    return found


def check_command(command: str) -> list[str]:
    """Problems with one ``mlflow-energy ...`` or ``mlflow ...`` command line: unknown subcommand or flags."""
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError:
        tokens = command.split()
    tokens = [t.strip("[]") for t in tokens]
    if not tokens or tokens[0] not in ("mlflow-energy", "mlflow"):
        return []
    if tokens[0] == "mlflow":
        from mlflow.cli import cli as main
    else:
        from mlflow_energy.cli import main
    group: click.Command = main
    words = tokens[1:]
    while isinstance(group, click.Group) and words and not words[0].startswith("-"):
        ctx = click.Context(group)
        sub = group.get_command(ctx, words[0])  # MLflow registers some commands lazily
        if sub is None:
            return [f"unknown command {words[0]!r} (known: {', '.join(group.list_commands(ctx))})"]
        group, words = sub, words[1:]
    known = {"--help", "-h"}
    for param in group.params:
        known.update(getattr(param, "opts", []))
        known.update(getattr(param, "secondary_opts", []))
    flags = [w.split("=", 1)[0] for w in words if w.startswith("-") and not re.fullmatch(r"-\d[\d.e+-]*", w)]
    return [f"unknown flag {f} for '{group.name}'" for f in flags if f.split("|")[0] not in known]


def _cases() -> list[tuple[str, int, str]]:
    cases = []
    for path in DOCS:
        for line, command in shell_commands(path.read_text(encoding="utf-8")):
            if command.startswith(("mlflow-energy ", "mlflow ")):
                cases.append((str(path.relative_to(ROOT)), line, command))
    return cases


def test_docs_show_mlflow_energy_commands() -> None:
    files = {f for f, _, _ in _cases()}
    assert "README.md" in files
    assert len(_cases()) >= 10, "the docs should show the mlflow-energy commands in shell blocks"


@pytest.mark.parametrize(("path", "line", "command"), _cases(), ids=lambda v: str(v)[:60])
def test_documented_flags_exist(path: str, line: int, command: str) -> None:
    problems = check_command(command)
    assert not problems, f"{path}:{line}: {command}\n  " + "\n  ".join(problems)


def test_the_checker_catches_a_wrong_flag_and_command() -> None:
    assert check_command("mlflow-energy measure --model tiny-sd2 --steps 2") == []
    assert check_command("mlflow-energy measure --model tiny-sd2 --stepz 2") == ["unknown flag --stepz for 'measure'"]
    assert "unknown command" in check_command("mlflow-energy mesure --model x")[0]
    assert check_command("mlflow models serve -m models:/m@champion -p 5001 --workers 1") == []
    assert check_command("mlflow ui --prot 5000") == ["unknown flag --prot for 'server'"]  # ui is server's alias
    text = "```bash\nmlflow-energy fit --experiment a \\\n    --bogus 1 && echo done\n```\n"
    ((line, command), _) = shell_commands(text)
    assert line == 2 and check_command(command) == ["unknown flag --bogus for 'fit'"]


def test_docs_index_is_the_readme() -> None:
    """docs/index.md is README.md with its links made relative to docs/ (regenerate with the sed below)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    expected = readme.replace("](docs/", "](").replace(", `ARCHITECTURE.md` |", " |")
    assert (ROOT / "docs" / "index.md").read_text(encoding="utf-8") == expected, (
        "regenerate: sed -e 's#](docs/#](#g' -e 's#, `ARCHITECTURE.md` |# |#' README.md > docs/index.md"
    )
