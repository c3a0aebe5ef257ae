"""``mllmdr-train``: the training pipeline from the command line.

Subcommands (each takes ``--config NAME_OR_PATH`` and ``--set key.sub=value`` overrides)::

    synth        generate the synthetic corpus (DAIC-WOZ layout) into <workdir>/corpus
    features     extract per-session features through SessionState (resumable, parallel)
    stage1       train the LQ-formers with the LLM frozen (runs the demo LM pre-training first if enabled)
    stage2       LoRA + MAA with a·LM + (1−a)·MSE (runs stage 1 first when it is not finished)
    export       write the model bundle
    eval         evaluate the bundle on the held-out split: report.md/json + confusion.png
    cv           leave-one-subject-out cross-validation over train + dev (--folds K): <workdir>/cv/
    demo-bundle  the whole chain from scratch with training/configs/demo.yaml → bundles/demo/
    paper        the paper setup (paper.yaml) on a real dataset: --dataset KIND --data PATH --llm PATH_OR_ID

Every step resumes from the files it already wrote under the run's work directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from mllmdr_core.errors import MllmdrError
from training.run_config import RunConfig, load_run_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_BUNDLE_DIR = REPO_ROOT / "bundles" / "demo"
DEMO_REPORT_DIR = REPO_ROOT / "docs" / "demo-eval"


def _config(args: argparse.Namespace) -> RunConfig:
    overrides = list(args.set or [])
    if getattr(args, "workdir", None):
        overrides.append(f"workdir={args.workdir}")
    return load_run_config(args.config, overrides)


def _threads(cfg: RunConfig) -> None:
    import torch

    torch.set_num_threads(max(1, cfg.threads))


def cmd_synth(cfg: RunConfig, args: argparse.Namespace) -> dict[str, Any]:
    from training.pipeline import step_synth

    return {"corpus": str(step_synth(cfg, progress=not args.quiet))}


def cmd_features(cfg: RunConfig, args: argparse.Namespace) -> dict[str, Any]:
    from training.pipeline import load_corpus, step_features, step_synth

    if cfg.corpus.kind == "synth":
        step_synth(cfg, progress=not args.quiet)
    corpus = load_corpus(cfg)
    t0 = time.monotonic()
    timings = step_features(cfg, corpus, progress=not args.quiet)
    return {
        "sessions": len(corpus.jobs),
        "extracted": len(timings),
        "seconds": round(time.monotonic() - t0, 1),
    }


def cmd_train(cfg: RunConfig, args: argparse.Namespace, *, stage: int) -> dict[str, Any]:
    from training.pipeline import load_corpus, run_training

    corpus = load_corpus(cfg)
    _, summary = run_training(cfg, corpus, progress=not args.quiet, stop_after=f"stage{stage}")
    return summary


def cmd_export(cfg: RunConfig, args: argparse.Namespace) -> dict[str, Any]:
    from training.pipeline import export_bundle, load_corpus, run_training

    corpus = load_corpus(cfg)
    model, summary = run_training(cfg, corpus, progress=not args.quiet)
    return {"bundle": str(export_bundle(cfg, model, corpus, metrics={"training": summary}))}


def cmd_eval(cfg: RunConfig, args: argparse.Namespace) -> dict[str, Any]:
    from training.pipeline import evaluate_bundle, load_corpus

    corpus = load_corpus(cfg)
    cfg.eval.rescore_test = cfg.eval.rescore_test or bool(args.rescore_test)
    bundle = Path(args.bundle) if args.bundle else None
    out = Path(args.out) if args.out else cfg.work / "eval"
    report = evaluate_bundle(cfg, corpus, bundle, out, progress=not args.quiet)
    return {"report": str(out / "report.md"), "targets": report["targets"]}


def cmd_cv(cfg: RunConfig, args: argparse.Namespace) -> dict[str, Any]:
    from training.crossval import run_cv

    report = run_cv(cfg, folds=args.folds, progress=not args.quiet, reuse_lm=args.reuse_lm)
    m = report["metrics"]
    return {
        "report": str(cfg.work / "cv" / "report.md"),
        "folds": report["meta"]["k"],
        "subjects": report["meta"]["n_subjects"],
        **{k: m[k] for k in ("f1", "mae", "rmse", "ccc")},
        "intervals": {k: m["intervals"][k] for k in ("f1", "mae", "rmse", "ccc") if k in m["intervals"]},
        "seconds": report["meta"]["seconds"],
    }


def cmd_demo_bundle(cfg: RunConfig, args: argparse.Namespace) -> dict[str, Any]:
    """synth → features → LM → stage 1 → stage 2 → export → eval, then copy into the repo."""
    from training.pipeline import run_all
    from training.timing import StepTimer

    result = run_all(cfg, progress=not args.quiet, timer=StepTimer(from_process_start=True))
    if not args.no_install:
        dest = Path(args.bundle_dir) if args.bundle_dir else DEMO_BUNDLE_DIR
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(result["bundle"], dest)
        reports = Path(args.report_dir) if args.report_dir else DEMO_REPORT_DIR
        reports.mkdir(parents=True, exist_ok=True)
        for name in ("report.md", "report.json", "confusion.png"):
            shutil.copy2(cfg.work / "eval" / name, reports / name)
        shutil.copy2(cfg.work / "curves.png", reports / "curves.png")
        shutil.copy2(cfg.work / "timings.json", reports / "timings.json")
        result["installed"] = str(dest)
    return result


def cmd_paper(cfg: RunConfig, args: argparse.Namespace) -> dict[str, Any]:
    from training.pipeline import run_all
    from training.timing import StepTimer

    return run_all(cfg, progress=not args.quiet, timer=StepTimer(from_process_start=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mllmdr-train", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = {"demo-bundle": "demo", "paper": "paper"}
    for name in ("synth", "features", "stage1", "stage2", "export", "eval", "cv", "demo-bundle", "paper"):
        p = sub.add_parser(name)
        p.add_argument("--config", default=defaults.get(name, "demo"), help="config name or YAML path")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
        p.add_argument("--workdir", help="work directory (overrides the config)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "synth":
            p.add_argument("--n", type=int)
            p.add_argument("--seed", type=int)
            p.add_argument("--fps", type=float)
        if name == "eval":
            p.add_argument("--bundle", help="bundle directory (default: <workdir>/bundle)")
            p.add_argument("--out", help="report directory (default: <workdir>/eval)")
            p.add_argument(
                "--rescore-test",
                action="store_true",
                help="score a test split that was scored before (the report records it; figures are no "
                "longer held-out)",
            )
        if name == "cv":
            p.add_argument(
                "--folds", type=int, help="folds the subjects are dealt into (default: min(5, subjects); "
                "the number of subjects: leave-one-subject-out)"
            )
            p.add_argument(
                "--reuse-lm", action="store_true",
                help="every fold uses the run's demo LM (cheaper; it saw the held-out train labels)",
            )
        if name == "demo-bundle":
            p.add_argument("--no-install", action="store_true", help="do not copy into bundles/demo")
            p.add_argument("--bundle-dir", help="where to install the bundle (default bundles/demo)")
            p.add_argument("--report-dir", help="where to copy the eval report (default docs/demo-eval)")
        if name == "paper":
            p.add_argument("--dataset", choices=("daic-woz", "e-daic", "cmdc"), required=True)
            p.add_argument("--data", required=True, help="dataset root directory")
            p.add_argument(
                "--llm", help="LLM path or HF id (e.g. meta-llama/Meta-Llama-3-8B-Instruct; default: the "
                "config's, e.g. micro's demo LM trained from scratch)"
            )
            p.add_argument(
                "--strict", action="store_true", help="stop at a malformed session (default: skip it)"
            )
            p.add_argument("--hubert", help="HuBERT path or HF id (default: from the config)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    extra: list[str] = []
    if args.command == "synth":
        extra += [
            f"corpus.{k}={getattr(args, k)}" for k in ("n", "seed", "fps") if getattr(args, k) is not None
        ]
    if args.command == "paper":
        # dataset visual files map onto the "visual-v2" schema the live tracker makes too
        extra += [f"corpus.kind={args.dataset}", f"corpus.path={args.data}", "model.visual.spec=visual-v2"]
        extra += [f"model.llm.model={args.llm}"] if args.llm else []
        extra += ["corpus.strict=true"] if args.strict else []
        if args.hubert:
            extra.append(f"model.audio.model={args.hubert}")
    args.set = [*(args.set or []), *extra]
    try:
        cfg = _config(args)
        _threads(cfg)
        handlers = {
            "synth": cmd_synth,
            "features": cmd_features,
            "stage1": lambda c, a: cmd_train(c, a, stage=1),
            "stage2": lambda c, a: cmd_train(c, a, stage=2),
            "export": cmd_export,
            "eval": cmd_eval,
            "cv": cmd_cv,
            "demo-bundle": cmd_demo_bundle,
            "paper": cmd_paper,
        }
        result = handlers[args.command](cfg, args)
    except MllmdrError as exc:
        print(f"mllmdr-train: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
