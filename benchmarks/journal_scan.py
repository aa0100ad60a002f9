"""A look for a journal's pending records: the whole journal read against only what follows its checkpoint.

Builds a journal of N logged measurements (made-up values, the real record format, each marked in
``<journal>.logged``) plus one pending record in a temporary directory, then times
``Journal.pending()`` (what each sweep runs at its start and end): the first look (no checkpoint: the
whole journal parsed), then later looks (from the checkpoint), median of 5 each, and their ratio.
No tracking store is touched.

    python benchmarks/journal_scan.py                 # 1,000, 3,000 and 10,000 records
    python benchmarks/journal_scan.py --records 20000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_overhead import _fake_below_the_sweep, _fake_measure  # noqa: E402


def _journal(directory: str, n: int):
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.tracking.journal import Journal

    meter = _fake_below_the_sweep()
    j = Journal(os.path.join(directory, "journal.jsonl"))
    records = []
    for i in range(n):
        m = _fake_measure(InferenceConfig(model="tiny-sd2", height=32, width=32, steps=i + 1), meter=meter)
        records.append(j.append(m, experiment="bench"))
    j.mark_logged(records)
    j.append(_fake_measure(InferenceConfig(model="tiny-sd2", height=32, width=32, steps=n + 1), meter=meter),
             experiment="bench")
    return j


def _look(j, fresh: bool) -> float:
    from mlflow_energy.tracking import checkpoint

    if fresh:
        checkpoint.drop(j.path)
    t = time.perf_counter()
    assert len(j.pending()) == 1
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, nargs="+", default=[1000, 3000, 10000])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/unused.db")  # only its digest is read
        for n in args.records:
            d = os.path.join(tmp, str(n))
            os.makedirs(d)
            j = _journal(d, n)
            size_mb = os.path.getsize(j.path) / 1e6
            whole = statistics.median(_look(j, fresh=True) for _ in range(5))
            _look(j, fresh=False)  # writes the checkpoint
            after = statistics.median(_look(j, fresh=False) for _ in range(5))
            print(f"{n:>6} logged records + 1 pending ({size_mb:.1f} MB): whole journal {whole * 1e3:.1f} ms, "
                  f"from the checkpoint {after * 1e3:.1f} ms ({after / whole:.3f}x)")


if __name__ == "__main__":
    main()
