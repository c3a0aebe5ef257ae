"""The test-split ledger: a held-out split is scored once; a second look needs an explicit flag."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mllmdr_core.errors import ConfigError
from mllmdr_core.frames import TranscriptLine
from mllmdr_core.phq8 import ITEM_KEYS
from training.dataset import SessionLabels
from training.ledger import TestLedger, split_fingerprint


def _session(sid: str, score: int, text: str = "I sleep badly.") -> SessionLabels:
    line = TranscriptLine(0.0, 2.0, "patient", text)
    return SessionLabels(sid, "test", (line,), dict.fromkeys(ITEM_KEYS, score))


def test_fingerprint_depends_on_content_not_order() -> None:
    a, b = _session("1", 0), _session("2", 3)
    assert split_fingerprint([a, b]) == split_fingerprint([b, a])
    relabelled = replace(b, item_scores=dict.fromkeys(ITEM_KEYS, 2))
    assert split_fingerprint([a, b]) != split_fingerprint([a, relabelled])
    assert split_fingerprint([a, b]) != split_fingerprint([a, _session("2", 3, "I sleep well.")])


def test_second_evaluation_is_refused_unless_forced(tmp_path: Path) -> None:
    ledger = TestLedger(tmp_path / "corpus" / "eval_ledger.json")
    fp = split_fingerprint([_session("1", 1)])
    assert ledger.check(fp, split="test", allow_rescore=False) == 0
    assert ledger.record(fp, split="test", bundle_id="b1", forced=False) == 1
    with pytest.raises(ConfigError, match=r"already scored 1 time.*b1.*--rescore-test"):
        ledger.check(fp, split="test", allow_rescore=False)
    assert ledger.check(fp, split="test", allow_rescore=True) == 1
    assert ledger.record(fp, split="test", bundle_id="b2", forced=True) == 2
    assert [e["bundle_id"] for e in ledger.history(fp)] == ["b1", "b2"] and ledger.history(fp)[1]["forced"]
    other = split_fingerprint([_session("9", 0)])
    assert ledger.check(other, split="test", allow_rescore=False) == 0  # another split is untouched


def test_a_damaged_ledger_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "eval_ledger.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"ledger .* unreadable"):
        TestLedger(path).history("x")
