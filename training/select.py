"""Choose a bundle option on the DEV split: train one model per value, score each on dev, keep one.

Used for ``assess.indicators_in_prompt`` (issue 18: "choose the demo's default by the dev-split result,
accuracy and grounding"). Every variant shares the corpus, the features, the audio encoder, the
rationales and the pre-trained LM of the run (symlinked into ``<workdir>/select/<variant>/``) and
trains stage 1 + stage 2 in its own process (one torch thread each: the two variants of the demo run
side by side on a 2-core machine). Each variant's exported bundle is scored on the dev split with all
inputs; the test split is never read here.

Rule (:func:`choose`): a variant whose dev grounding reaches :data:`GROUNDING_TARGET` beats one that
does not; then the higher dev F1, then the lower dev MAE; a tie keeps the first value listed (the
paper's prompt, ``False``, comes first in the demo config).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from training.run_config import RunConfig

GROUNDING_TARGET = 0.95
SHARED = ("features", "audio_encoder", "lm", "rationales.jsonl")  # what the variants reuse


def variant_name(value: bool) -> str:
    return f"indicators_{'on' if value else 'off'}"


def variant_config(cfg: RunConfig, value: bool, corpus_root: Path) -> RunConfig:
    """``cfg`` with ``assess.indicators_in_prompt = value``, in its own workdir that links the shared
    parts of ``cfg.work`` and reads the corpus at ``corpus_root`` (no export path: the variant's bundle
    stays in its workdir)."""
    work = cfg.work / "select" / variant_name(value)
    work.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        link, target = work / name, (cfg.work / name).resolve()
        if target.exists() and not link.exists():
            os.symlink(target, link, target_is_directory=target.is_dir())
    model = {**cfg.model, "assess": {**cfg.model.get("assess", {}), "indicators_in_prompt": value}}
    return dataclasses.replace(
        cfg,
        workdir=str(work),
        corpus=dataclasses.replace(cfg.corpus, path=str(corpus_root.resolve())),
        model=model,
        export=dataclasses.replace(cfg.export, out=None),
        select=dataclasses.replace(cfg.select, indicators_in_prompt=()),
    )


def choose(variants: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The variant the module docstring's rule picks (first listed on a tie)."""

    def key(v: dict[str, Any]) -> tuple[bool, float, float]:
        dev = v["dev"]
        return (dev["grounding"] >= GROUNDING_TARGET, dev["f1"], -dev["mae"])

    best = variants[0]
    for v in variants[1:]:
        if key(v) > key(best):
            best = v
    return best


def run_variants(
    configs: Sequence[RunConfig],
    train: Callable[[RunConfig, bool], dict[str, Any]],
    workers: int,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """``train(config, progress)`` for every config, in order: the last ones in the caller, the others
    in ``workers - 1`` spawned worker processes (``train`` must be a module-level function)."""
    workers = min(max(1, workers), len(configs))
    side, mine = list(configs[: workers - 1]), list(configs[workers - 1 :])
    results: dict[int, dict[str, Any]] = {}
    if not side:
        return [train(c, progress) for c in mine]
    if progress:
        names = ", ".join(variant_name(c.model_config().assess.indicators_in_prompt) for c in side)
        print(f"select: training {names} in a worker process", file=sys.stderr)
    with ProcessPoolExecutor(len(side), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(train, c, False) for c in side]
        for i, c in enumerate(mine, start=len(side)):
            results[i] = train(c, progress)
        for i, fut in enumerate(futures):
            results[i] = fut.result()
    return [results[i] for i in range(len(configs))]


def selection_record(variants: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the reports record: every variant's dev figures, the rule and the choice (``chosen``: the
    variant itself, with its bundle path and training summary)."""
    chosen = choose(variants)
    return {
        "option": "assess.indicators_in_prompt",
        "split": "dev",
        "rule": "dev grounding ≥ 0.95 first, then higher dev F1, then lower dev MAE; a tie keeps the first",
        "variants": [{k: v for k, v in var.items() if k != "summary"} for var in variants],
        "chosen": chosen,
        "chosen_value": chosen["indicators_in_prompt"],
    }


def installed_bundle(chosen: dict[str, Any], out: Path) -> Path:
    """Copy the chosen variant's bundle to ``out`` (the run's export path), replacing what is there."""
    import shutil

    src = Path(chosen["bundle"])
    if out.resolve() == src.resolve():
        return out
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    return out
