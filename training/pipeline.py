"""The training pipeline, step by step, each step resumable from files under ``RunConfig.workdir``.

``synth`` → ``features`` → (demo: ``lm_pretrain``) → ``stage1`` → ``stage2`` → ``export`` → ``eval``.
Layout of the work directory::

    corpus/               synthetic corpus (DAIC-WOZ layout) when corpus.kind == "synth"
    audio_encoder/        the HuBERT used for every feature (saved once; exported into the bundle)
    features/<id>.npz     per-session features (training.features)
    lm/                   demo LM + tokenizer (training.lm_pretrain)
    stage1/ stage2/       curve.jsonl, checkpoint.pt, final.pt
    bundle/               the exported model bundle
    eval/                 report.md, report.json, confusion.png
    curves.png            loss curves of every stage
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from mllmdr_core.config import MllmdrConfig
from mllmdr_core.errors import ConfigError
from mllmdr_core.model.mllm import MLlmDR
from training.dataset import FeatureCache, ItemDataset, SessionLabels, build_examples
from training.features import MediaJob, extract_corpus, load_features
from training.ledger import LEDGER_FILE, TestLedger, split_fingerprint
from training.run_config import RunConfig
from training.timing import StepTime, StepTimer, timing_table
from training.trainlog import plot_curves, seed_everything


@dataclass
class Corpus:
    sessions: list[SessionLabels]
    jobs: list[MediaJob]
    dropped: list[dict[str, str]] = field(default_factory=list)  # {"session_id", "split", "reason"}

    def split(self, name: str) -> list[SessionLabels]:
        return [s for s in self.sessions if s.split == name]


def corpus_dir(cfg: RunConfig) -> Path:
    return Path(cfg.corpus.path) if cfg.corpus.path else cfg.work / "corpus"


def synth_config(cfg: RunConfig) -> Any:
    """The run's ``training.synth.SynthConfig``."""
    from training.synth import SynthConfig

    return SynthConfig(n=cfg.corpus.n, seed=cfg.corpus.seed, fps=cfg.corpus.fps, **cfg.corpus.synth)


def step_synth(cfg: RunConfig, progress: bool = True) -> Path:
    """Generate the sessions the synthetic corpus lacks (all on the first run; those of a new test round
    on a copy of an earlier corpus: ``training.synth.corpus``)."""
    from training.synth import generate_corpus

    out = corpus_dir(cfg)
    generate_corpus(synth_config(cfg), out, workers=cfg.corpus.workers, progress=progress)
    return out


def read_records(kind: str, root: Path, *, strict: bool = False) -> tuple[list[Any], list[dict[str, str]]]:
    """``SessionRecord``s of a dataset (the synthetic corpus is in DAIC-WOZ layout) and the sessions
    skipped as malformed, each ``{"session_id", "split", "reason"}`` (``strict``: raise instead)."""
    from training.data.cmdc import CmdcReader
    from training.data.daic import DaicWozReader
    from training.data.edaic import EDaicReader

    readers: dict[str, Any] = {
        "synth": DaicWozReader,
        "daic-woz": DaicWozReader,
        "e-daic": EDaicReader,
        "cmdc": CmdcReader,
    }
    if kind not in readers:
        raise ConfigError(f"corpus.kind must be one of {sorted(readers)}, got {kind!r}")
    reader = readers[kind](root)
    if hasattr(reader, "read_all"):
        records, skipped = reader.read_all(strict=strict)
        return list(records), list(skipped)
    return list(reader), []


def make_teacher(cfg: RunConfig) -> Any:
    from training.teacher import OpenAICompatibleTeacher, TemplateTeacher

    if cfg.corpus.teacher == "template":
        return TemplateTeacher()
    if cfg.corpus.teacher == "openai":
        if not (cfg.corpus.teacher_url and cfg.corpus.teacher_model):
            raise ConfigError("corpus.teacher 'openai' needs corpus.teacher_url and corpus.teacher_model")
        return OpenAICompatibleTeacher(cfg.corpus.teacher_url, cfg.corpus.teacher_model)
    raise ConfigError(f"corpus.teacher must be 'template' or 'openai', got {cfg.corpus.teacher!r}")


def load_rationales(cfg: RunConfig, records: Sequence[Any]) -> dict[tuple[str, str], str]:
    """Teacher rationales per (session, item), kept in ``<workdir>/rationales.jsonl``: written once per
    session (sessions added to the corpus later get theirs appended)."""
    from training.teacher import write_rationales

    path = cfg.work / "rationales.jsonl"
    text = path.read_text() if path.exists() else ""
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    done = {str(r["session_id"]) for r in rows}
    todo = [r for r in records if r.session_id not in done and r.labels.items]
    if todo or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jsonl.tmp")
        max_pairs = cfg.model_config().assess.max_qa_pairs_per_item
        write_rationales(todo, make_teacher(cfg), tmp, max_pairs=max_pairs)
        tmp.write_text(text + tmp.read_text())
        tmp.replace(path)
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(str(r["session_id"]), str(r["item_key"])): str(r["reason"]) for r in rows}


def session_labels(rec: Any, all_rationales: dict[tuple[str, str], str]) -> SessionLabels | None:
    """A record's labels: item training needs per-item PHQ-8 labels; a PHQ-8 total alone (DAIC-WOZ
    test) gives a total-only session, evaluated on binary and total metrics; ``None`` without either."""
    items = rec.labels.items
    if rec.labels.scale != "PHQ-8":
        return None
    if items is None:
        if rec.labels.total is None:
            return None
        return SessionLabels(
            session_id=rec.session_id, split=rec.split, transcript=tuple(rec.transcript), item_scores={},
            total_label=int(rec.labels.total),
        )
    meta = rec.meta or {}
    rationales = {
        k: all_rationales[(rec.session_id, k)] for k in items if (rec.session_id, k) in all_rationales
    }
    tags = set()
    if meta.get("mode") == "words_neutral":
        tags.add("masked")  # neutral words: only voice and face carry the signal
    elif meta.get("mode") == "media_neutral":
        tags.add("media_neutral")
    return SessionLabels(
        session_id=rec.session_id,
        split=rec.split,
        transcript=tuple(rec.transcript),
        item_scores=dict(items),
        rationales={k: str(v) for k, v in rationales.items()},
        tags=frozenset(str(t) for t in tags),
    )


def load_corpus(cfg: RunConfig) -> Corpus:
    """Session records of the configured dataset → labels + media jobs."""
    root = corpus_dir(cfg)
    feats = cfg.work / "features"
    sessions: list[SessionLabels] = []
    jobs: list[MediaJob] = []
    records, dropped = read_records(cfg.corpus.kind, root, strict=cfg.corpus.strict)
    records = sorted(records, key=lambda r: r.session_id)
    if cfg.corpus.limit is not None:
        records = records[: cfg.corpus.limit]  # the first N sessions by id (synth: generation order)
    if cfg.corpus.train_limit is not None:
        train_ids = {r.session_id for r in records if r.split == "train"}
        keep = set(sorted(train_ids)[: cfg.corpus.train_limit])
        records = [r for r in records if r.split != "train" or r.session_id in keep]
    rationales = load_rationales(cfg, records)
    for rec in records:
        labels = session_labels(rec, rationales)
        if labels is None:  # CMDC's PHQ-9, sessions without any PHQ-8 label
            why = "PHQ-9 labels" if rec.labels.scale != "PHQ-8" else "no PHQ-8 labels"
            dropped.append({"session_id": rec.session_id, "split": rec.split, "reason": why})
            continue
        if not labels.has_items:
            dropped.append({
                "session_id": rec.session_id, "split": rec.split,
                "reason": "no PHQ-8 item labels: not trained on; evaluated on total and binary only",
            })
        sessions.append(labels)
        jobs.append(MediaJob(rec.session_id, str(feats / f"{rec.session_id}.npz"), rec))
    for d in dropped:
        print(f"session {d['session_id']} ({d['split']}) dropped: {d['reason']}", file=sys.stderr)
    cfg.work.mkdir(parents=True, exist_ok=True)
    (cfg.work / "sessions_dropped.json").write_text(json.dumps(dropped, indent=2))
    if not sessions:
        raise ConfigError(f"no sessions with PHQ-8 item labels found under {root}")
    return Corpus(sessions, jobs, dropped)


def encoder_dir(cfg: RunConfig) -> Path:
    return cfg.work / "audio_encoder"


def step_features(
    cfg: RunConfig, corpus: Corpus, progress: bool = True, position: int | None = None
) -> dict[str, float]:
    """Save the audio encoder once, then extract features of every session (resumable)."""
    from mllmdr_core.features.encoder import build_hubert

    mcfg = cfg.model_config()
    enc = encoder_dir(cfg)
    if not (enc / "config.json").exists():
        build_hubert(mcfg.audio, seed=cfg.seed).save_pretrained(enc)
    order = {"test": 0, "dev": 1}  # held-out sessions first: evaluation needs all of them
    split_of = {s.session_id: s.split for s in corpus.sessions}
    jobs = sorted(corpus.jobs, key=lambda j: (order.get(split_of.get(j.session_id, ""), 2), j.session_id))
    jobs = jobs[: cfg.features.limit] if cfg.features.limit else jobs
    return extract_corpus(
        jobs, mcfg, encoder_dir=enc, workers=cfg.features.workers, progress=progress, position=position
    )


def lm_texts(
    cfg: MllmdrConfig,
    sessions: Sequence[SessionLabels],
    features_dir: Path,
    variants: Sequence[str] = ("all", "text", "av"),
) -> list[str]:
    """Pre-training text for the demo LM: every train item prompt followed by its target, in all three
    modality variants (so the LM sees the placeholders and prompts with and without text). Prompt and
    target are joined without a separator: the byte-level pre-tokenizer splits at the boundary anyway,
    so the ids equal those ``collate`` builds for training."""
    texts: list[str] = []
    for modality in variants:
        texts.extend(
            ex.prompt + ex.target for ex in build_examples(sessions, features_dir, cfg, modality=modality)
        )
    return texts


def build_backbone(
    cfg: RunConfig, corpus: Corpus, progress: bool = True
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel | None]:
    """Tokenizer and LLM: the demo LM trained here, or a pretrained model by path/HF id."""
    mcfg = cfg.model_config()
    if cfg.lm_pretrain.enabled:
        from training.lm_pretrain import pretrain_lm

        texts = lm_texts(mcfg, corpus.split("train"), cfg.work / "features", cfg.lm_pretrain.variants)
        llm, demo_tok = pretrain_lm(
            texts, mcfg.llm.llama, cfg.lm_pretrain, cfg.work / "lm", seed=cfg.seed, progress=progress
        )
        return demo_tok, llm
    if mcfg.llm.model is None:
        raise ConfigError("llm.model is None and lm_pretrain is disabled: nothing to train on")
    tok: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(mcfg.llm.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok, None  # MLlmDR loads the pretrained LLM from config.llm.model


def feature_dims(cfg: RunConfig, corpus: Corpus) -> tuple[int, int]:
    feats = load_features(Path(corpus.jobs[0].out_path))
    return int(feats.audio.shape[-1]), int(feats.visual.shape[-1])


def build_model(cfg: RunConfig, corpus: Corpus, progress: bool = True) -> MLlmDR:
    tok, llm = build_backbone(cfg, corpus, progress)
    mcfg = cfg.model_config()
    if cfg.lm_pretrain.enabled:
        mcfg.llm.llama = {**mcfg.llm.llama, "tie_word_embeddings": False}
    audio_dim, visual_dim = feature_dims(cfg, corpus)
    torch.manual_seed(cfg.seed)
    return MLlmDR(mcfg, audio_dim, visual_dim, tok, llm=llm)


def datasets(cfg: RunConfig, model: MLlmDR, corpus: Corpus) -> tuple[ItemDataset, ItemDataset | None]:
    feats = cfg.work / "features"
    cache = FeatureCache()
    train = ItemDataset(build_examples(corpus.split("train"), feats, model.config, cache=cache), cache)
    dev_sessions = corpus.split("dev")
    dev = None
    if dev_sessions:
        dev = ItemDataset(build_examples(dev_sessions, feats, model.config, cache=cache), cache)
    return train, dev


def run_training(
    cfg: RunConfig, corpus: Corpus, progress: bool = True, stop_after: str = "stage2"
) -> tuple[MLlmDR, dict[str, Any]]:
    """Backbone → stage 1 → stage 2; returns the trained model and a timing/loss summary."""
    from training.stage1 import train_stage1
    from training.stage2 import train_stage2

    seed_everything(cfg.seed)
    t0 = time.monotonic()
    model = build_model(cfg, corpus, progress)
    summary: dict[str, Any] = {"backbone_s": round(time.monotonic() - t0, 1)}
    train, dev = datasets(cfg, model, corpus)
    summary["train_examples"] = len(train)
    r1 = train_stage1(
        model, train, cfg.stage1, cfg.work / "stage1", seed=cfg.seed, progress=progress, dev=dev
    )
    summary["stage1"] = vars(r1)
    if stop_after != "stage1":
        r2 = train_stage2(
            model, train, cfg.stage2, cfg.work / "stage2", seed=cfg.seed, progress=progress, dev=dev
        )
        summary["stage2"] = vars(r2)
    model.eval()
    logs = [cfg.work / name / "curve.jsonl" for name in ("lm", "stage1", "stage2")]
    plot_curves([p for p in logs if p.exists()], cfg.work / "curves.png")
    (cfg.work / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return model, summary


def corpus_feature_spec(cfg: RunConfig, corpus: Corpus) -> Any:
    """The feature spec the model was trained on, from the train sessions' caches: for "visual-v2" the
    columns observed in them, and the sources their features were read from."""
    from mllmdr_core.features.spec import FeatureSpec
    from mllmdr_core.features.visual_schema import V2_NAMES, V2_SPEC, observed_columns

    feats = load_features(Path(corpus.jobs[0].out_path))
    train = {s.session_id for s in corpus.split("train")}
    used = [j for j in corpus.jobs if j.session_id in train] or corpus.jobs
    columns: set[str] = set()
    if feats.visual_spec == V2_SPEC:
        for job in used:
            columns.update(observed_columns(load_features(Path(job.out_path)).visual))
    return FeatureSpec(
        feats.audio_spec, int(feats.audio.shape[-1]), feats.visual_spec, int(feats.visual.shape[-1]),
        visual_columns=tuple(n for n in V2_NAMES if n in columns),
        sources=data_sources([j.record for j in used]),
    )


def data_sources(records: Sequence[Any]) -> tuple[str, ...]:
    """Where the features of ``records`` came from, e.g. "e-daic: OpenFace 2.x CSV" (sorted, unique)."""
    kinds = {
        "clnf": "CLNF pose/gaze/AUs",
        "openface": "OpenFace 2.x CSV",
        "openface-per-question": "OpenFace 2.x CSV",
    }
    out: set[str] = set()
    for rec in records:
        out.add(f"{rec.dataset}: transcript")
        if rec.audio:
            out.add(f"{rec.dataset}: audio")
        if rec.video_path is not None:
            out.add(f"{rec.dataset}: video (live face tracker)")
        elif rec.visual_format is not None:
            out.add(f"{rec.dataset}: {kinds[rec.visual_format]}")
    return tuple(sorted(out))


def training_provenance(corpus: Corpus) -> tuple[str, bool]:
    """(``training_data``, ``non_clinical``) from the train sessions actually used: "synthetic" (and
    ``non_clinical``) when every one is synthetic, else e.g. "E-DAIC train split (4 sessions)"."""
    train = {s.session_id for s in corpus.split("train")}
    records = [j.record for j in corpus.jobs if j.session_id in train]
    titles = {"daic-woz": "DAIC-WOZ", "e-daic": "E-DAIC", "cmdc": "CMDC", "synthetic": "synthetic"}
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec.dataset] = counts.get(rec.dataset, 0) + 1
    synthetic = bool(records) and set(counts) == {"synthetic"}
    if synthetic:
        return "synthetic", True
    text = ", ".join(f"{titles.get(d, d)} train split ({n} sessions)" for d, n in sorted(counts.items()))
    return text or "unknown", False


def export_bundle(
    cfg: RunConfig, model: MLlmDR, corpus: Corpus, metrics: dict[str, Any] | None = None
) -> Path:
    from transformers import HubertModel

    from mllmdr_core.bundle import read_manifest, save_bundle
    from training.model_card import write_model_card

    mcfg = model.config
    out = Path(cfg.export.out) if cfg.export.out else cfg.work / "bundle"
    encoder = HubertModel.from_pretrained(encoder_dir(cfg)) if mcfg.audio.model is None else None
    training_data, non_clinical = training_provenance(corpus)  # the data used, not the config's wish
    bundle = save_bundle(
        out,
        model=model,
        tokenizer=model.tokenizer,
        config=mcfg,
        audio_encoder=encoder,
        feature_spec=corpus_feature_spec(cfg, corpus),
        training_data=training_data,
        non_clinical=non_clinical,
        metrics=metrics,
        overwrite=True,
    )
    write_model_card(bundle, read_manifest(bundle), training_summary(cfg, corpus))  # eval adds its figures
    return bundle


def indicator_names(corpus: Corpus, cfg: RunConfig) -> list[str]:
    try:
        from mllmdr_core.features.indicators import INDICATOR_INFO

        return list(INDICATOR_INFO)
    except ImportError:
        feats = load_features(Path(corpus.jobs[0].out_path))
        return [k for k in feats.indicators if k not in ("t_s", "window_s")]


def assessor_check(bundle_dir: Path, sessions: Sequence[SessionLabels], features_dir: Path) -> dict[str, Any]:
    """Run the server's ``Assessor`` on a few sessions: it must load the bundle and give valid results."""
    import numpy as np

    from mllmdr_core.assess import Assessor
    from mllmdr_core.bundle import load_bundle
    from mllmdr_core.snapshot import SessionSnapshot

    assessor = Assessor(load_bundle(bundle_dir))
    totals = []
    for s in sessions:
        feats = load_features(features_dir / f"{s.session_id}.npz")
        snapshot = SessionSnapshot.of(
            audio=np.asarray(feats.audio),
            visual=np.asarray(feats.visual),
            transcript=s.transcript,
            indicators=feats.indicators,
            window=(0.0, max([feats.duration_s, *(ln.end_s for ln in s.transcript)])),
        )
        result = assessor.assess(snapshot, session_id=s.session_id, kind="final")
        totals.append(
            {
                "session_id": s.session_id,
                "true": s.total,
                "assessor_total": result.total,
                "labels": result.labels,
                "non_clinical": result.model.non_clinical,
            }
        )
    return {"sessions": totals}


def _eval_ablations(
    cfg: RunConfig,
    bundle_dir: Path,
    check_features: bool,
    sessions: Sequence[SessionLabels],
    ablations: Sequence[str],
    names: Sequence[str],
) -> dict[str, Any]:
    """Worker process: load the bundle and evaluate ``ablations`` (no progress bar)."""
    from mllmdr_core.assess import Assessor
    from mllmdr_core.bundle import load_bundle
    from training.eval import evaluate

    torch.set_num_threads(max(1, cfg.threads))
    loaded = load_bundle(bundle_dir, check_features=check_features)
    return evaluate(
        Assessor(loaded),
        sessions,
        cfg.work / "features",
        ablations=ablations,
        indicator_names=names,
        progress=False,
    )


@contextmanager
def _side_evaluation(
    cfg: RunConfig,
    bundle_dir: Path,
    check_features: bool,
    sessions: Sequence[SessionLabels],
    ablations: Sequence[str],
    names: Sequence[str],
    progress: bool,
) -> Iterator[Callable[[], dict[str, Any]]]:
    """Evaluate ``ablations`` in one worker process while the caller evaluates the others; yields a
    function that waits for the worker's results (nothing to do when ``ablations`` is empty)."""
    if not ablations:
        yield lambda: {"ablations": {}}
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        fut = pool.submit(_eval_ablations, cfg, bundle_dir, check_features, sessions, ablations, names)
        if progress:
            print(f"eval {', '.join(ablations)}: in a worker process", file=sys.stderr)
        yield fut.result
        fut.result()


def evaluate_bundle(
    cfg: RunConfig,
    corpus: Corpus,
    bundle_dir: Path | None,
    out_dir: Path,
    progress: bool = True,
    selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the exported bundle on ``cfg.eval.split`` and write the report (``selection``: the dev
    comparison that chose the bundle's options, recorded beside the scores)."""
    from mllmdr_core.assess import Assessor
    from mllmdr_core.bundle import load_bundle
    from training.eval import check_targets, evaluate, write_report

    bundle_dir = bundle_dir or (Path(cfg.export.out) if cfg.export.out else cfg.work / "bundle")
    live = corpus_feature_spec(cfg, corpus).visual_spec == cfg.model_config().visual.spec
    loaded = load_bundle(bundle_dir, check_features=live)
    sessions = corpus.split(cfg.eval.split)
    if cfg.eval.max_sessions:
        sessions = sessions[: cfg.eval.max_sessions]
    if not sessions:
        raise ConfigError(f"no sessions in split {cfg.eval.split!r}")
    ledger, fingerprint = TestLedger(corpus_dir(cfg) / LEDGER_FILE), split_fingerprint(sessions)
    if cfg.eval.split == "test":  # scored once, by the bundle that ships: refuse a second look
        ledger.check(fingerprint, split="test", allow_rescore=cfg.eval.rescore_test)
    t0 = time.monotonic()
    names = indicator_names(corpus, cfg)
    ablations = list(cfg.eval.ablations)
    side = ablations[1::2] if cfg.eval.workers > 1 and len(ablations) > 1 else []
    mine = [a for a in ablations if a not in side]
    with _side_evaluation(cfg, bundle_dir, live, sessions, side, names, progress) as side_result:
        results = evaluate(
            Assessor(loaded),
            sessions,
            cfg.work / "features",
            ablations=mine,
            indicator_names=names,
            progress=progress,
        )
    if side:
        merged = {**results["ablations"], **side_result()["ablations"]}
        results["ablations"] = {a: merged[a] for a in ablations}
        results["targets"] = check_targets(results)
    if live:  # the server's Assessor only runs bundles whose features it can produce
        results["assessor_check"] = assessor_check(bundle_dir, sessions[:2], cfg.work / "features")
    if cfg.eval.split == "test":
        forced = cfg.eval.rescore_test
        n = ledger.record(fingerprint, split="test", bundle_id=loaded.bundle_id, forced=forced)
        results["test_ledger"] = {"fingerprint": fingerprint, "evaluations": n, "forced": forced}
        results["test_round"] = test_split_round(cfg)
    results["content_held_out"] = eval_content_overlap(cfg, corpus, sessions)
    if selection is not None:
        results["selection"] = selection
    results["meta"] = {
        "bundle": str(bundle_dir),
        "bundle_id": loaded.bundle_id,
        "split": cfg.eval.split,
        "n_sessions": len(sessions),
        "masked_sessions": sum("masked" in s.tags for s in sessions),
        "indicators_in_prompt": loaded.config.assess.indicators_in_prompt,
        "grounded_decoding": loaded.config.assess.grounded_decoding,
        "eval_seconds": round(time.monotonic() - t0, 1),
        "config": cfg.name,
    }
    write_report(results, out_dir, header=f"# Evaluation: {cfg.name} ({cfg.eval.split} split)")
    write_bundle_docs(cfg, corpus, bundle_dir, loaded.manifest, results)
    return results


def _corpus_summary(cfg: RunConfig) -> dict[str, Any]:
    path = corpus_dir(cfg) / "corpus.json"
    return dict(json.loads(path.read_text())) if cfg.corpus.kind == "synth" and path.exists() else {}


def test_split_round(cfg: RunConfig) -> dict[str, Any]:
    """Which fresh test split this is (``training.synth.corpus`` test rounds) and the sessions earlier
    rounds scored, retired from every split (a dataset corpus: round 1, none retired)."""
    summary = _corpus_summary(cfg)
    retired = summary.get("retired") or {"n": 0, "reason": "", "sessions": []}
    return {
        "round": int(summary.get("test_round", 1)),
        "retired": {
            "n": int(retired["n"]),
            "reason": str(retired["reason"]),
            "session_ids": [str(r["session_id"]) for r in retired["sessions"]],
        },
    }


def eval_content_overlap(cfg: RunConfig, corpus: Corpus, sessions: Sequence[SessionLabels]) -> dict[str, Any]:
    """``content_held_out`` of the evaluated sessions: their patient answers against train/dev answers
    (``held_out``: the synthetic generator drew the test split from disjoint banks)."""
    from training.overlap import content_overlap

    def answers(group: Sequence[SessionLabels]) -> list[str]:
        return [ln.text for s in group for ln in s.transcript if ln.speaker != "clinician"]

    ids = {s.session_id for s in sessions}
    training = [s for s in corpus.sessions if s.split in ("train", "dev") and s.session_id not in ids]
    summary = _corpus_summary(cfg)
    held_out = bool(summary.get("config", {}).get("held_out_test", False)) and cfg.eval.split == "test"
    return content_overlap(answers(training), answers(sessions), held_out=held_out)


def write_bundle_docs(
    cfg: RunConfig, corpus: Corpus, bundle_dir: Path, manifest: dict[str, Any], results: dict[str, Any]
) -> dict[str, Path]:
    """``report.json`` (this evaluation, merged by split) and the model card ``README.md`` in the bundle
    (both outside the bundle's hash: ``mllmdr_core.bundle.DOC_FILES``)."""
    from training.model_card import write_bundle_report, write_model_card

    report = write_bundle_report(bundle_dir, str(manifest["bundle_id"]), results)
    return {"report": report, "card": write_model_card(bundle_dir, manifest, training_summary(cfg, corpus))}


def training_summary(cfg: RunConfig, corpus: Corpus) -> dict[str, Any]:
    """What the model card says about the data: corpus kind, dataset, sessions per split, synth summary."""
    synth = cfg.corpus.kind == "synth"
    return {
        "corpus_kind": cfg.corpus.kind,
        "dataset": "synthetic interviews (DAIC-WOZ layout)" if synth else cfg.corpus.kind,
        "sessions": {sp: sum(s.split == sp for s in corpus.sessions) for sp in ("train", "dev", "test")},
        "corpus": _corpus_summary(cfg),
    }


def step_lm(cfg: RunConfig, corpus: Corpus, progress: bool = True) -> None:
    """Demo LM pre-training alone (it reads transcripts and labels only, not the feature cache)."""
    if cfg.lm_pretrain.enabled:
        build_backbone(cfg, corpus, progress)


class _Background:
    """Runs a function in a thread; ``join()`` re-raises its exception in the caller."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.error: BaseException | None = None

        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # handed to the caller by join()
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def run_all(cfg: RunConfig, progress: bool = True, timer: StepTimer | None = None) -> dict[str, Any]:
    """synth (if synthetic) → features (beside the demo LM pre-training) → stage 1 → stage 2 → export →
    eval, timing every step; the timing table goes to ``timings.json``, the eval report and stderr."""
    timer = timer or StepTimer()
    with timer.step("synth") as rec:
        if cfg.corpus.kind == "synth":
            step_synth(cfg, progress)
            made, total = (_corpus_summary(cfg)[k] for k in ("generated", "sessions"))
            rec.note = f"{made} of {total} sessions generated (the others existed)" if made < total else ""
    with timer.step("corpus + rationales"):
        corpus = load_corpus(cfg)
    beside = cfg.features.beside_lm and cfg.lm_pretrain.enabled
    if beside:

        def features() -> None:
            with timer.step("features", f"{cfg.features.workers} workers, beside the LM", this_thread=True):
                step_features(cfg, corpus, progress, position=1)

        job = _Background(features)
        try:
            with timer.step("LM pre-training", "main process, beside features", this_thread=True):
                step_lm(cfg, corpus, progress)
        finally:
            job.join()
    else:
        with timer.step("features", f"{cfg.features.workers} workers"):
            step_features(cfg, corpus, progress)
        if cfg.lm_pretrain.enabled:
            with timer.step("LM pre-training"):
                step_lm(cfg, corpus, progress)
    selection: dict[str, Any] | None = None
    if cfg.select.indicators_in_prompt or cfg.select.grounded_decoding:
        bundle, selection = _train_with_selection(cfg, timer, progress)
    else:
        with timer.step("stage 1 + stage 2") as rec:
            model, summary = run_training(cfg, corpus, progress)
        _split_training(timer, rec, summary)
        with timer.step("export"):
            bundle = export_bundle(cfg, model, corpus, metrics={"training": summary})
    eval_note = f"{len(cfg.eval.ablations)} ablations, {min(cfg.eval.workers, 2)} processes"
    with timer.step("eval", eval_note):
        report = evaluate_bundle(cfg, corpus, bundle, cfg.work / "eval", progress, selection=selection)
    timing = timer.to_json()
    table = timing_table(timing)
    (cfg.work / "timings.json").write_text(json.dumps(timing, indent=2))
    add_timing_to_report(cfg.work / "eval", timing, table)
    print(f"\nmllmdr-train {cfg.name}: wall time per step\n{table}\n", file=sys.stderr)
    size = sum(p.stat().st_size for p in Path(bundle).rglob("*") if p.is_file())
    test_split = report.get("test_round")
    return {
        **({"test_round": test_split} if test_split else {}),
        "bundle": str(bundle),
        "bundle_bytes": size,
        "timings_s": {s["name"]: s["wall_s"] for s in timing["steps"]} | {"total": timing["total_s"]},
        "targets": report["targets"],
        "report": str(cfg.work / "eval" / "report.md"),
    }


def train_and_score_dev(cfg: RunConfig, progress: bool) -> list[dict[str, Any]]:
    """One trained variant: train, then per combination of the decode-time options
    (``training.select.decode_combinations``, none: one) export a bundle whose config carries it and
    score it on the dev split (all inputs); one entry per combination. Runs in a worker process or in
    the caller."""
    import dataclasses

    from training.select import decode_combinations, decode_name

    torch.set_num_threads(max(1, cfg.threads))
    t0 = time.monotonic()
    corpus = load_corpus(cfg)
    model, summary = run_training(cfg, corpus, progress)
    train_s = round(time.monotonic() - t0, 1)
    trained = model.config
    out: list[dict[str, Any]] = []
    for combo in decode_combinations(cfg):
        t1 = time.monotonic()
        model.config = dataclasses.replace(trained, assess=dataclasses.replace(trained.assess, **combo))
        where = cfg.work / (f"bundle-{decode_name(combo)}" if combo else "bundle")
        export_cfg = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, out=str(where)))
        bundle = export_bundle(export_cfg, model, corpus, metrics={"training": summary})
        out.append({
            "indicators_in_prompt": trained.assess.indicators_in_prompt, **combo, "bundle": str(bundle),
            "summary": summary, "dev": score_dev(cfg, corpus, bundle, progress),
            "train_s": train_s, "dev_s": round(time.monotonic() - t1, 1),
        })  # fmt: skip
    model.config = trained
    return out


def score_dev(cfg: RunConfig, corpus: Corpus, bundle: Path, progress: bool) -> dict[str, Any]:
    """The dev figures the selection rule reads: an exported bundle on the dev split, all inputs."""
    from mllmdr_core.assess import Assessor
    from mllmdr_core.bundle import load_bundle
    from training.eval import evaluate

    dev = corpus.split("dev")
    results = evaluate(
        Assessor(load_bundle(bundle)),
        dev,
        cfg.work / "features",
        ablations=["all"],
        indicator_names=indicator_names(corpus, cfg),
        progress=progress,
    )
    metrics = results["ablations"]["all"]["all"]
    masked = results["ablations"]["all"].get("masked")
    return {
        "n_sessions": len(dev),
        "f1": metrics["f1"],
        "mae": metrics["mae"],
        "rmse": metrics["rmse"],
        "ccc": metrics["ccc"],
        "grounding": metrics["grounded_share"],
        "fallback_share": metrics["fallback_share"],
        **({"masked_f1": masked["f1"]} if masked else {}),
    }


def _train_with_selection(cfg: RunConfig, timer: StepTimer, progress: bool) -> tuple[Path, dict[str, Any]]:
    """Stage 1 + stage 2 once per value of ``cfg.select.indicators_in_prompt`` (side by side; none
    listed: the model section's value), each trained variant's bundle scored on dev once per combination
    of the decode-time options (no retraining: ``training/select.py``); the chosen combination's bundle,
    curves and summary become the run's. The test split is not read."""
    import shutil

    from training.select import (
        combination_name,
        installed_bundle,
        run_variants,
        selection_record,
        variant_config,
        variant_name,
    )

    values = cfg.select.indicators_in_prompt or (cfg.model_config().assess.indicators_in_prompt,)
    if not load_corpus(cfg).split("dev"):
        raise ConfigError("select: the corpus has no dev split to choose on (the test split is never used)")
    note = f"{len(values)} variants ({', '.join(map(variant_name, values))}), scored on dev"
    if cfg.select.grounded_decoding:
        note += f" × grounded_decoding {list(cfg.select.grounded_decoding)}"
    with timer.step("stage 1 + stage 2 + dev selection", note):
        configs = [variant_config(cfg, v, corpus_dir(cfg)) for v in values]
        scored = run_variants(configs, train_and_score_dev, cfg.select.workers, progress)
        selection = selection_record([entry for variant in scored for entry in variant], cfg.select)
    chosen = selection.pop("chosen")
    with timer.step("export", f"chosen on dev: {combination_name(chosen, cfg.select)}"):
        bundle = installed_bundle(chosen, Path(cfg.export.out) if cfg.export.out else cfg.work / "bundle")
        src = Path(chosen["bundle"]).parent
        for name in ("curves.png", "train_summary.json"):
            if (src / name).exists():
                shutil.copy2(src / name, cfg.work / name)
    return bundle, selection


def _split_training(timer: StepTimer, rec: Any, summary: dict[str, Any]) -> None:
    """Replace the training step by its parts (model set-up incl. loading the LM, stage 1, stage 2),
    from the stages' own wall and CPU seconds."""
    parts = [(name, summary.get(key) or {}) for name, key in (("stage 1", "stage1"), ("stage 2", "stage2"))]
    wall = [0.0 if p.get("resumed") else float(p.get("seconds", 0.0)) for _, p in parts]
    cpu = [0.0 if p.get("resumed") else float(p.get("cpu_s", 0.0)) for _, p in parts]
    if timer.steps[-1] is not rec:
        return
    timer.steps.pop()
    t = rec.start_s
    rows: list[tuple[str, dict[str, Any], float, float]] = [
        ("model set-up", {}, max(0.0, rec.wall_s - sum(wall)), max(0.0, rec.cpu_main_s - sum(cpu)))
    ]
    rows += [(name, part, w, c) for (name, part), w, c in zip(parts, wall, cpu, strict=True)]
    for name, part, secs, cpu_s in rows:
        note = f"{part['steps']} steps, {part['epochs']} epochs" if part.get("steps") else ""
        if part.get("resumed"):
            note = "resumed: already finished"
        timer.steps.append(StepTime(name, t, t + secs, cpu_s, 0.0, rec.load_1m, note))
        t += secs


def add_timing_to_report(eval_dir: Path, timing: dict[str, Any], table: str) -> None:
    """Add the per-step timing to ``report.json`` (key ``timing``) and ``report.md`` (a section)."""
    rj = eval_dir / "report.json"
    if rj.exists():
        data = json.loads(rj.read_text())
        data["timing"] = timing
        rj.write_text(json.dumps(data, indent=2))
    md = eval_dir / "report.md"
    if md.exists():
        text = md.read_text().split("\n## Wall time per step")[0].rstrip("\n")
        md.write_text(f"{text}\n\n## Wall time per step (this run)\n\n{table}\n")


__all__ = [
    "Corpus",
    "export_bundle",
    "load_corpus",
    "run_training",
    "step_features",
    "step_synth",
]
