"""Lag p95/p50 vs N with the model in the loop: the model worker process against the server's threads.

Run: ``.venv/bin/python bench/plot_model_loop.py`` after ``bench/live_sessions.py --model-in-loop`` has
written ``live_sessions_model.json`` (``assess_worker=process``, the default) and, with
``--server-env assess_worker=thread --name live_sessions_model_thread``, the "before" file. Writes
``bench/results/live_sessions_model_lag.png`` (linked from docs/benchmarks.md).
"""

from __future__ import annotations

import json
from typing import Any

from common import RESULTS
from live_sessions import plot

FILES = {"live_sessions_model": "worker process", "live_sessions_model_thread": "server threads"}


def main() -> None:
    results: dict[str, list[dict[str, Any]]] = {}
    period = None
    for name, where in FILES.items():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        period = doc["model_in_loop"]["checkpoint_period_s"]
        for kind, rows in doc["rows"].items():
            results[f"{kind}, model in {where}"] = rows
    png = RESULTS / "live_sessions_model_lag.png"
    plot(results, png, f"checkpoint every {period:g} s + finals")
    print("wrote", png)


if __name__ == "__main__":
    main()
