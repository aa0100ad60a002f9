"""The predictor examples of README.md, docs/law.md and docs/serving.md run verbatim, from Python and over REST,
against a model fitted on the packaged ML.ENERGY data and registered as ``mlenergy-energy`` (the
``registry`` fixture of ``conftest.py``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from services import free_port, model_serve_argv, serving  # noqa: E402

requests = pytest.importorskip("requests")
pytestmark = pytest.mark.slow


def python_examples() -> list[tuple[str, str]]:
    """Every ```python block that loads the registered ML.ENERGY model, with its file name."""
    out = []
    for name in ("README.md", "docs/law.md", "docs/serving.md"):
        text = (ROOT / name).read_text()
        for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
            if 'load_model("models:/mlenergy-energy@champion")' in block:
                out.append((name, block))
    return out


def rest_payloads() -> list[dict]:
    """The JSON bodies of the curl examples of README.md and docs/serving.md."""
    text = (ROOT / "README.md").read_text() + (ROOT / "docs" / "serving.md").read_text()
    return [json.loads(body) for body in re.findall(r"/invocations .*?-d '(.*?)'", text, flags=re.S)]


def test_the_examples_exist():
    assert len(python_examples()) >= 2 and len(rest_payloads()) >= 1


@pytest.mark.parametrize("index", range(2))  # docs/law.md and docs/serving.md
def test_python_examples_run_verbatim(registry, index):
    uri, tmp = registry
    name, block = python_examples()[index]
    code = block + "\nprint(model.predict(pd.DataFrame([{'model': 'sdxl', 'height': 1024, 'width': 1024, 'steps': 30," \
                   " 'guidance_scale': 5, 'precision': 'fp16', 'batch_size': 1, 'hardware': 'H100'}]))" \
                   "[['energy_total_j', 'interval_level']].to_json(orient='records'))\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name}: {proc.stderr[-2000:]}"
    got = json.loads(proc.stdout.strip().splitlines()[-1])[0]
    assert got["energy_total_j"] > 0 and got["interval_level"] == "unseen_setup"  # no setup column: the default


def test_rest_examples_run_verbatim(registry):
    uri, tmp = registry
    port = free_port()
    with serving(model_serve_argv("models:/mlenergy-energy@champion", port), port=port, cwd=tmp,
                 env={**os.environ, "MLFLOW_TRACKING_URI": uri}) as base:
        for payload in rest_payloads():
            r = requests.post(f"{base}/invocations", json=payload, timeout=60)
            assert r.status_code == 200, r.text
            pred = r.json()["predictions"][0]
            assert pred["energy_total_j_low"] < pred["energy_total_j"] < pred["energy_total_j_high"]
            # the examples name a training source as their setup: the level of the family and GPU
            assert pred["interval_level"] == ("known" if payload["dataframe_records"][0].get("setup") else
                                              "unseen_setup")
