"""Choose bundle options on the DEV split: train one model per value, score each on dev, keep one.

Used for ``assess.indicators_in_prompt`` (issue 18: "choose the demo's default by the dev-split result,
accuracy and grounding"). Every variant shares the corpus, the features, the audio encoder, the
rationales and the pre-trained LM of the run (symlinked into ``<workdir>/select/<variant>/``) and
trains stage 1 + stage 2 in its own process (one torch thread each: the two variants of the demo run
side by side on a 2-core machine). Each variant's exported bundle is scored on the dev split with all
inputs; the test split is never read here.

Decode-time options (:data:`DECODE_OPTIONS`, ``assess.grounded_decoding``) need no retraining: each
trained variant exports one bundle per combination of their values (set in the bundle's config) and
scores each on dev, so the rule below compares every (trained value × decode values) combination.

Rule (:func:`choose`): a variant whose dev grounding reaches :data:`GROUNDING_TARGET` beats one that
does not; then the higher dev F1, then the lower dev MAE; a tie keeps the first value listed (the
paper's prompt, ``False``, comes first in the demo config; the decode values vary fastest, so the
first combination is the paper's prompt with the first decode values).
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from training.run_config import RunConfig, SelectConfig

GROUNDING_TARGET = 0.95
SHARED = ("features", "audio_encoder", "lm", "rationales.jsonl")  # what the variants reuse
DECODE_OPTIONS = ("grounded_decoding",)  # assess options read only at decode time: chosen without retraining


def variant_name(value: bool) -> str:
    return f"indicators_{'on' if value else 'off'}"


def selected_decode(select: SelectConfig) -> dict[str, tuple[bool, ...]]:
    """The decode-time options the run chooses, with their values in config order."""
    return {k: tuple(getattr(select, k)) for k in DECODE_OPTIONS if getattr(select, k)}


def decode_combinations(cfg: RunConfig) -> list[dict[str, Any]]:
    """Every combination of the selected decode-time values, first values first (``[{}]``: none)."""
    options = selected_decode(cfg.select)
    return [dict(zip(options, combo, strict=True)) for combo in itertools.product(*options.values())]


def decode_name(combo: dict[str, Any]) -> str:
    """e.g. ``grounded_on`` (a bundle directory name inside the variant's workdir)."""
    return "-".join(f"{k.removesuffix('_decoding')}_{'on' if v else 'off'}" for k, v in combo.items())


def combination_name(entry: dict[str, Any], select: SelectConfig) -> str:
    """e.g. ``indicators_off, grounded_decoding on``."""
    decode = [f"{k} {'on' if entry[k] else 'off'}" for k in selected_decode(select)]
    return ", ".join([variant_name(entry["indicators_in_prompt"]), *decode])


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
        select=dataclasses.replace(cfg.select, indicators_in_prompt=()),  # keeps the decode values
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
    train: Callable[[RunConfig, bool], list[dict[str, Any]]],
    workers: int,
    progress: bool = True,
) -> list[list[dict[str, Any]]]:
    """``train(config, progress)`` for every config, in order: the last ones in the caller, the others
    in ``workers - 1`` spawned worker processes (``train`` must be a module-level function)."""
    workers = min(max(1, workers), len(configs))
    side, mine = list(configs[: workers - 1]), list(configs[workers - 1 :])
    results: dict[int, list[dict[str, Any]]] = {}
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


def selection_record(variants: Sequence[dict[str, Any]], select: SelectConfig) -> dict[str, Any]:
    """What the reports record: every combination's dev figures, the rule and the choice (``chosen``:
    the combination itself, with its bundle path and training summary). ``options``: the bundle options
    chosen (``assess.`` keys), ``chosen_values`` theirs, ``chosen_value`` that of indicators_in_prompt."""
    chosen = choose(variants)
    keys = ["indicators_in_prompt", *selected_decode(select)]
    return {
        "option": ", ".join(f"assess.{k}" for k in keys),
        "options": keys,
        "split": "dev",
        "rule": "dev grounding ≥ 0.95 first, then higher dev F1, then lower dev MAE; a tie keeps the first",
        "variants": [{k: v for k, v in var.items() if k != "summary"} for var in variants],
        "chosen": chosen,
        "chosen_value": chosen["indicators_in_prompt"],
        "chosen_values": {k: chosen[k] for k in keys},
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
