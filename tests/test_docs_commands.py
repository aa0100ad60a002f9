"""Every shell and Python block of README.md and docs/, in reading order, as a reader would run it.

Reading order: README.md, then the pages in ``mkdocs.yml``'s nav (``docs/index.md`` is the README
again, so it is left out). A block a reader cannot run on a CPU-only machine in a few minutes is
marked in the Markdown, on the line before it::

    <!-- docs-test: skip (needs a GPU) -->

and the run lists every skipped block with its reason. The environment is installed the README's
way before the run (``.ci/run`` does it), so a bash block's ``pip install ...`` (a line of its
own, or a first command joined by ``&&``) is left out and the rest of the block runs.

The fast tests here check the extraction and that every block naming a GPU or starting a server
is marked; ``test_blocks_run_in_reading_order`` runs the blocks, in one temporary folder with a
fresh SQLite store (``MLFLOW_TRACKING_URI``), bash blocks with ``bash -e``, Python blocks with this
interpreter. It runs the demo and fits the public data (about 10 minutes on 2 cores), so it runs
with the slow checks when ``MLFLOW_ENERGY_DOCS_RUN=1`` (``.ci/run`` sets it):
``MLFLOW_ENERGY_DOCS_RUN=1 python -m pytest tests/test_docs_commands.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(bash|sh|shell|python)\s*\n(.*?)^```", re.S | re.M)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
GPU = re.compile(r"--device cuda|CUDA_VISIBLE_DEVICES|nvidia-smi")
SERVER = re.compile(r"^\s*(mlflow ui|mlflow server|mlflow models serve|mlflow-energy serve|mkdocs serve)\b|&& mkdocs serve", re.M)


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text, and why it is skipped (``None``: run)."""

    path: str
    line: int
    lang: str
    code: str
    skip: str | None


def reading_order() -> list[Path]:
    """README.md, then the nav pages of mkdocs.yml in order (not docs/index.md: the README again)."""
    nav = re.findall(r":\s*([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    return [ROOT / "README.md", *(ROOT / "docs" / page for page in nav if page != "index.md")]


def blocks(text: str, path: str = "<text>") -> list[Block]:
    """The bash/sh/python blocks of a Markdown text, each with its skip reason from the line before it."""
    found = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = SKIP.search(before)
        lang = "python" if match.group(1) == "python" else "bash"
        line = text[: match.start()].count("\n") + 1
        found.append(Block(path, line, lang, match.group(2), marker.group("reason") if marker else None))
    return found


PIP = re.compile(r"^\s*pip install [^\n]*?(&&\s*|$)", re.M)


def without_installs(code: str) -> str:
    r"""A bash block without its ``pip install`` commands (the environment is installed already).

    Example:
        >>> without_installs("pip install -e . && mlflow run .\npip install x\necho ok\n")
        'mlflow run .\n\necho ok\n'
    """
    return PIP.sub("", code)


def all_blocks() -> list[Block]:
    return [b for p in reading_order() for b in blocks(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]


def test_reading_order_covers_the_docs() -> None:
    pages = {p.name for p in reading_order()}
    on_disk = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert on_disk <= pages, f"pages not in mkdocs.yml's nav: {sorted(on_disk - pages)}"
    assert len(all_blocks()) >= 20


def test_the_marker_is_read() -> None:
    text = "x\n<!-- docs-test: skip (needs a GPU) -->\n```bash\necho a\n```\n\n```python\nprint(1)\n```\n"
    first, second = blocks(text)
    assert (first.lang, first.skip, first.code) == ("bash", "needs a GPU", "echo a\n")
    assert (second.lang, second.skip) == ("python", None)


def test_installs_are_left_out_and_the_rest_runs() -> None:
    assert without_installs("pip install torch==2.13.0 -e . --extra-index-url https://x && mlflow run .\n") == \
        "mlflow run .\n"
    assert without_installs('pip install -e ".[docs]"\nmkdocs build --strict\n') == "\nmkdocs build --strict\n"
    assert without_installs("echo pip install x\n") == "echo pip install x\n"


def test_blocks_that_need_a_gpu_are_marked() -> None:
    unmarked = [f"{b.path}:{b.line}" for b in all_blocks() if GPU.search(b.code) and b.skip is None]
    assert not unmarked, "blocks naming a GPU without <!-- docs-test: skip (needs a GPU) -->: " + ", ".join(unmarked)


def test_blocks_that_start_a_server_are_marked() -> None:
    """A server runs until stopped: the reader opens it, the run of the blocks cannot wait for it."""
    unmarked = [f"{b.path}:{b.line}" for b in all_blocks() if SERVER.search(b.code) and b.skip is None]
    assert not unmarked, "blocks starting a server without <!-- docs-test: skip (starts a server) -->: " + ", ".join(
        unmarked)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MLFLOW_ENERGY_DOCS_RUN") != "1",
                    reason="runs the demo and every docs block (minutes): set MLFLOW_ENERGY_DOCS_RUN=1")
def test_blocks_run_in_reading_order(tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "PYTHONPATH": str(ROOT)}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    for name in ("projects", "MLproject", "conda.yaml", "benchmarks", "data"):  # what the blocks name by path
        if (ROOT / name).exists():
            os.symlink(ROOT / name, tmp_path / name)
    skipped, failed = [], []
    for b in all_blocks():
        if b.skip is not None:
            skipped.append(f"{b.path}:{b.line} ({b.skip})")
            continue
        argv = [sys.executable, "-c", b.code] if b.lang == "python" else ["bash", "-e", "-c", without_installs(b.code)]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            failed.append(f"{b.path}:{b.line}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    print("skipped:\n  " + "\n  ".join(skipped))
    assert not failed, "\n".join(failed)
