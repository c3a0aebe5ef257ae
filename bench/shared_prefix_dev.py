"""Dev-split accuracy of shared-prefix prompts vs the paper's layout (issue 20, item 3).

Trains two variants that differ only in ``assess.shared_prefix_prompts`` — side by side in two
1-thread processes, with the procedure ``training/select.py`` uses for the demo's option choice
(stage 1 + stage 2, export, dev split with all inputs) — on the features, audio encoder, pre-trained LM
and rationales of a finished run, and prints one JSON object with both variants' dev figures. The test
split is never read. ``indicators_in_prompt`` is fixed to the run config's value.

    .venv/bin/python bench/shared_prefix_dev.py --run /path/to/demo-run --corpus /path/to/corpus

``--run`` is a ``mllmdr-train demo-bundle`` workdir (it holds ``features/``, ``audio_encoder/``,
``lm/``, ``rationales.jsonl``); the variants train in ``<out>/paper_layout`` and
``<out>/shared_prefix`` (default ``<run>/shared_prefix_dev``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.pipeline import train_and_score_dev  # noqa: E402
from training.run_config import RunConfig, load_run_config  # noqa: E402
from training.select import SHARED, run_variants  # noqa: E402


def variant(cfg: RunConfig, run: Path, out: Path, corpus: Path, shared: bool) -> RunConfig:
    """``cfg`` with the prompt layout ``shared``, training in its own dir that links ``run``'s parts."""
    work = out / ("shared_prefix" if shared else "paper_layout")
    work.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        if not (work / name).exists() and (run / name).exists():
            os.symlink((run / name).resolve(), work / name)
    assess = {**cfg.model.get("assess", {}), "shared_prefix_prompts": shared}
    return dataclasses.replace(
        cfg,
        workdir=str(work),
        corpus=dataclasses.replace(cfg.corpus, path=str(corpus.resolve())),
        model={**cfg.model, "assess": assess},
        export=dataclasses.replace(cfg.export, out=None),
        select=dataclasses.replace(cfg.select, indicators_in_prompt=(), grounded_decoding=()),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a finished demo-bundle workdir")
    parser.add_argument("--corpus", required=True, help="the run's corpus directory")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--out", help="where the variants train (default <run>/shared_prefix_dev)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    run = Path(args.run)
    out = Path(args.out) if args.out else run / "shared_prefix_dev"
    cfg = load_run_config(args.config, [f"workdir={out}"])
    configs = [variant(cfg, run, out, Path(args.corpus), shared) for shared in (False, True)]
    t0, load = time.time(), os.getloadavg()
    results = run_variants(configs, train_and_score_dev, args.workers, progress=False)
    rows: list[dict[str, Any]] = []
    for shared, res in zip((False, True), results, strict=True):
        rows.append({"shared_prefix_prompts": shared, "dev": res[0]["dev"]})  # the config's decoding
    print(json.dumps({
        "config": args.config,
        "split": "dev",
        "variants": rows,
        "mae_change": rows[1]["dev"]["mae"] - rows[0]["dev"]["mae"],
        "f1_change": rows[1]["dev"]["f1"] - rows[0]["dev"]["f1"],
        "wall_s": round(time.time() - t0, 1),
        "load_start": [round(x, 2) for x in load],
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
