"""Screenshots of the MLflow UI over a demo store, taken with headless Chromium.

Builds a small demo store (a sweep of a few tiny families, the law fitted on it and registered
as ``mlflow-energy``, a short predict-mode search) unless ``--store`` names an existing one (for
example the ``mlflow.db`` that ``mlflow run . --env-manager local`` wrote), starts
``mlflow server`` on a free loopback port, and writes PNGs of the runs table and its chart view,
a measurement run, the fit plot and the registered model into ``--out``. Each page is loaded in a
new headless Chromium with an empty profile, as a first-time user's browser opens it (nothing primed in
local storage: MLflow's Assistant panel opens on a local server, as it does for the user), at the
addresses mlflow-energy prints (``workflowType=machine_learning``: see ``mlflow_energy.tracking.ui``).

    apt-get install -y chromium
    python docs/screenshots.py --out docs/img
    python docs/screenshots.py --store mlflow.db --experiment mlflow-energy-demo --out docs/img

The functions here are also used by ``tests/test_ui.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow_energy.tracking.ui import WORKFLOW_ML, energy_chart_path, energy_view_path

REGISTERED_MODEL = "mlflow-energy"
DEMO_EXPERIMENT = "mlflow-energy-demo"
DEMO_FAMILIES = ("tiny-sd2", "tiny-sdxl", "tiny-pixart-sigma", "tiny-flux.1-schnell")
WINDOW = "1600,900"
TABLE_WINDOW = "1920,1000"  # the runs table: a common desktop screen, the view's columns up to the params


def chromium() -> str | None:
    """The Chromium executable, or ``None``."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(store: Path, *, log: Path | None = None) -> Iterator[str]:
    """``mlflow server`` over the SQLite file ``store`` on a free loopback port; yields its URL; stopped by PID."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    artifacts = store.parent / "mlartifacts"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store}",
           "--default-artifact-root", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    out = open(log or os.devnull, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=store.parent,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start (exit {proc.poll()}); see {log}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()


#: Chromium as a first-time user's browser: a new, empty profile (no local storage, no saved UI
#: state), nothing fetched but the page.
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _browser_args(budget_ms: int, window: str = WINDOW) -> list[str]:
    exe = chromium()
    if exe is None:
        raise RuntimeError("Chromium not found: apt-get install -y chromium")
    return [exe, *BROWSER_FLAGS, "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={window}",
            f"--virtual-time-budget={budget_ms}", "--run-all-compositor-stages-before-draw",
            f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]  # a new, empty profile per page


def dump_dom(url: str, *, budget_ms: int = 20000) -> str:
    """The page's DOM after its scripts ran for ``budget_ms`` of virtual time."""
    args = [*_browser_args(budget_ms), "--dump-dom", url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    return done.stdout


def evaluate(url: str, expression: str, *, window: str = WINDOW, wait_s: float = 120) -> Any:
    """Open ``url`` in a new headless Chromium and evaluate the JavaScript ``expression`` in the page
    (Chrome DevTools protocol) every half second until it returns something other than null; that value.

    What a user sees, measured in the rendered page: for example whether a header's text fits its column.
    """
    return asyncio.run(_evaluate(url, expression, window, wait_s))


async def _evaluate(url: str, expression: str, window: str, wait_s: float) -> Any:
    import aiohttp  # an MLflow dependency

    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    exe = chromium()
    if exe is None:
        raise RuntimeError("Chromium not found: apt-get install -y chromium")
    args = [exe, *BROWSER_FLAGS, "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={window}",
            "--remote-debugging-port=0", f"--user-data-dir={profile}", url]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + wait_s
    try:
        port_file = profile / "DevToolsActivePort"  # Chromium writes its debugging port here
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not start (exit {proc.poll()})")
            await asyncio.sleep(0.2)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                page = next(t for t in await resp.json() if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                for call in itertools.count(1):
                    params = {"expression": expression, "returnByValue": True}
                    await ws.send_json({"id": call, "method": "Runtime.evaluate", "params": params})
                    while (msg := await ws.receive_json()).get("id") != call:
                        pass
                    value = msg.get("result", {}).get("result", {}).get("value")
                    if value is not None:
                        return value
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{url}: the page did not get there in {wait_s:.0f} s")
                    await asyncio.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return None


def screenshot(url: str, path: Path, *, budget_ms: int = 20000, window: str = WINDOW) -> Path:
    """A PNG of ``url`` after ``budget_ms`` of virtual time."""
    args = [*_browser_args(budget_ms, window), f"--screenshot={path}", url]
    subprocess.run(args, capture_output=True, timeout=180, check=True)
    if not path.exists():
        raise RuntimeError(f"Chromium wrote no screenshot for {url}")
    from PIL import Image

    with Image.open(path) as img:  # a 256-colour palette: a third of the size, same look for UI pictures
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    return path


def build_demo_store(folder: Path, *, families: tuple[str, ...] = DEMO_FAMILIES, fit: bool = True) -> Path:
    """A small demo store in ``folder``: sweep, fit registered as ``mlflow-energy``, a short search."""
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    spec = folder / "demo.yaml"
    spec.write_text(
        "name: cpu-demo\nexperiment: " + DEMO_EXPERIMENT + "\ndevice: cpu\nweights: random\nrepeats: 1\nwarmup: 0\n"
        "grid:\n  model: [" + ", ".join(families) + "]\n  resolution: [32, 48]\n  steps: [2, 4]\n"
    )
    cli = [sys.executable, "-c", "from mlflow_energy.cli import main; main()"]
    subprocess.run([*cli, "sweep", str(spec), "--no-progress"], env=env, cwd=folder, check=True)
    if fit:
        subprocess.run([*cli, "fit", "--experiment", DEMO_EXPERIMENT, "--registered-model", REGISTERED_MODEL,
                        "--allow-mixed-sources", "--bootstrap", "20", "--max-folds", "5"],
                       env=env, cwd=folder, check=True)
        subprocess.run([*cli, "search", "--model-uri", f"models:/{REGISTERED_MODEL}@champion",
                        "--experiment", DEMO_EXPERIMENT, "--model", ",".join(families[:2]),
                        "--resolution", "32,48", "--steps", "2:4", "--precision", "fp32", "--trials", "8",
                        # a baseline the law has seen (its default, 64 px, is outside this demo's 32-48 px)
                        "--baseline", "height=32", "--baseline", "width=32"],
                       env=env, cwd=folder, check=True)
    return store


def _ids(store: Path, experiment: str) -> dict[str, str]:
    from mlflow import MlflowClient

    from mlflow_energy.tracking.ui import experiment_tags

    client = MlflowClient(f"sqlite:///{store}")
    exp = client.get_experiment_by_name(experiment)
    for key, value in experiment_tags().items():  # a store written by an older version
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    runs = client.search_runs([exp.experiment_id], max_results=500)
    ids = {"experiment": exp.experiment_id}
    for r in runs:
        kind = r.data.tags.get("mlflow_energy.kind")
        if kind and kind not in ids and r.info.status == "FINISHED":
            ids[kind] = r.info.run_id
    return ids


def take_all(store: Path, out: Path, *, experiment: str = DEMO_EXPERIMENT) -> list[Path]:
    """The screenshots of the docs, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    ids = _ids(store, experiment)
    exp = ids["experiment"]
    ml = f"?workflowType={WORKFLOW_ML}"
    pages = {"runs-table.png": energy_view_path(exp),  # the address `mlflow-energy sweep` prints
             "runs-chart.png": energy_chart_path(exp)}  # the same view as charts: a bar per config
    if "measurement" in ids:
        pages["measurement-run.png"] = f"/#/experiments/{exp}/runs/{ids['measurement']}{ml}"
    if "fit" in ids:
        pages["fit-plot.png"] = f"/#/experiments/{exp}/runs/{ids['fit']}/artifacts/plots/energy_vs_flops_total.png{ml}"
        pages["registered-model.png"] = f"/#/models/{REGISTERED_MODEL}{ml}"
    written = []
    with mlflow_server(store) as url:
        for name, page in pages.items():
            window = TABLE_WINDOW if name.startswith("runs-") else WINDOW
            written.append(screenshot(url + page, out / name, window=window))
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "img"), help="folder for the PNGs [docs/img]")
    ap.add_argument("--store", help="an existing SQLite store (mlflow.db); default: build a demo store")
    ap.add_argument("--experiment", default=DEMO_EXPERIMENT)
    args = ap.parse_args()
    store = Path(args.store).resolve() if args.store else build_demo_store(Path(tempfile.mkdtemp(prefix="demo-")))
    for path in take_all(store, Path(args.out), experiment=args.experiment):
        print(path, f"{path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
