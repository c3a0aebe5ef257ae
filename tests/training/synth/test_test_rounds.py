"""Test rounds of the synthetic corpus: round 2 tests fresh sessions and retires every session round 1
tested, the train/dev sessions stay byte-identical, and generation only renders what is missing."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from mllmdr_core.errors import ConfigError
from training.data import DaicWozReader
from training.data.daic import SPLIT_FILES
from training.synth.corpus import SynthConfig, generate_corpus, split_of

BASE = {"n": 6, "seed": 0, "video": False, "rapport_questions": 0, "test_words_neutral_share": 0.6}
ROUND1 = SynthConfig(**BASE, test_sessions=2)  # seed 0: session 1002 drawn as test, + 1006, 1007
ROUND2 = SynthConfig(**BASE, test_sessions=3, test_round=2, earlier_test_sessions=(2,))


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _split_ids(root: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {s: [] for s in SPLIT_FILES}
    for rec in DaicWozReader(root):
        out[rec.split].append(rec.session_id)
    return {s: sorted(ids) for s, ids in out.items()}


@pytest.fixture(scope="module")
def rounds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("rounds")
    first = root / "round1"
    generate_corpus(ROUND1, first, progress=False)
    second = root / "round2"
    shutil.copytree(first, second)
    summary = generate_corpus(ROUND2, second, progress=False)
    return first, second, summary


def test_round_two_retires_round_one_tests_and_keeps_train_dev(rounds: tuple[Path, Path, dict]) -> None:
    first, second, summary = rounds
    assert [split_of(ROUND2, i) for i in (2, 6, 7, 8)] == ["retired", "retired", "retired", "test"]
    splits = ["train", "train", "test", "train", "dev", "train", "test", "test"]
    assert [split_of(ROUND1, i) for i in range(8)] == splits
    ids1, ids2 = _split_ids(first), _split_ids(second)
    assert ids1["test"] == ["1002", "1006", "1007"]
    assert ids2["train"] == ids1["train"] == ["1000", "1001", "1003", "1005"] and ids2["dev"] == ["1004"]
    assert ids2["test"] == ["1008", "1009", "1010"]  # their own id range, after round 1's
    # train/dev sessions: same files, byte for byte (and the same split-file rows)
    old, new = _files(first), _files(second)
    for sid in ids1["train"] + ids1["dev"]:
        mine = {k: v for k, v in new.items() if k.startswith(f"{sid}_P/")}
        assert len(mine) == 3 and mine == {k: v for k, v in old.items() if k.startswith(f"{sid}_P/")}
    for split in ("train", "dev"):
        assert old[SPLIT_FILES[split]] == new[SPLIT_FILES[split]]
    # retired: every session round 1 tested, with the reason; in no split file
    retired = summary["retired"]
    assert isinstance(retired, dict) and retired["n"] == 3 and "already scored" in retired["reason"]
    assert [r["session_id"] for r in retired["sessions"]] == ["1002", "1006", "1007"]
    listed = "".join((second / name).read_text() for name in SPLIT_FILES.values())
    assert all(f"\n{sid}," not in listed for sid in ("1002", "1006", "1007"))
    assert summary["test_round"] == 2 and summary["splits"] == {"train": 4, "dev": 1, "test": 3}
    assert json.loads((second / "corpus.json").read_text())["retired"] == retired


def test_round_two_sessions_come_from_their_own_stream(rounds: tuple[Path, Path, dict]) -> None:
    first, second, _ = rounds
    meta = {p.parent.name: json.loads(p.read_text()) for p in second.glob("*_P/synth_meta.json")}
    new = [meta[f"{sid}_P"] for sid in ("1008", "1009", "1010")]
    assert all(m["test_round"] == 2 and m["held_out"] and m["split"] == "test" for m in new)
    # same index range would have given round 1's draws; the stream differs: other voices and answers
    again = SynthConfig(**BASE, test_sessions=5)  # round 1 with more test-only sessions: 1008 … 1010 too
    round1_plans = generate_corpus(again, first.parent / "round1_more", progress=False)
    assert round1_plans["generated"] == 6 + 5
    for sid in ("1008", "1009", "1010"):
        r1 = json.loads((first.parent / "round1_more" / f"{sid}_P" / "synth_meta.json").read_text())
        assert r1["voice"] != meta[f"{sid}_P"]["voice"] and r1["turns"] != meta[f"{sid}_P"]["turns"]
    assert "test_round" not in meta["1000_P"]  # train/dev metadata unchanged


def test_generation_is_incremental_and_equals_a_fresh_corpus(
    rounds: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    _, second, summary = rounds
    assert summary["generated"] == 3 and summary["sessions"] == 8  # only the three new test sessions
    mtimes = {p: p.stat().st_mtime_ns for p in second.rglob("*_P/*")}
    again = generate_corpus(ROUND2, second, progress=False)
    assert again["generated"] == 0 and {p: p.stat().st_mtime_ns for p in second.rglob("*_P/*")} == mtimes
    fresh = generate_corpus(ROUND2, tmp_path / "fresh", progress=False)
    assert fresh["generated"] == 8  # retired sessions are not rendered
    kept = {k: v for k, v in _files(second).items() if not k.startswith(("1002_P", "1006_P", "1007_P"))}
    kept.pop("corpus.json")
    made = _files(tmp_path / "fresh")
    made.pop("corpus.json")
    assert kept == made  # incremental = from scratch, byte for byte
    (second / "1009_P" / "1009_AUDIO.wav").unlink()  # an incomplete session is rendered again
    assert generate_corpus(ROUND2, second, progress=False)["generated"] == 1
    assert _files(second)["1009_P/1009_AUDIO.wav"] == made["1009_P/1009_AUDIO.wav"]


def test_a_corpus_of_other_settings_or_rounds_is_refused(rounds: tuple[Path, Path, dict]) -> None:
    first, _, _ = rounds
    with pytest.raises(ConfigError, match="holds another session"):
        generate_corpus(SynthConfig(**{**BASE, "seed": 1}, test_sessions=2), first, progress=False)
    with pytest.raises(ConfigError, match="earlier_test_sessions"):
        SynthConfig(**BASE, test_sessions=3, test_round=2).validate()
    with pytest.raises(ConfigError, match="test_sessions ≥ 1"):
        SynthConfig(**BASE, test_round=2, earlier_test_sessions=(2,)).validate()
