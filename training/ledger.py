"""The test-split ledger: how often a held-out split has been scored, so a test split is used once.

A split's fingerprint is the sha256 of its sessions (ids, item labels, transcripts' text), so the same
sessions give the same fingerprint whatever the run or workdir. The ledger is a JSON file beside the
corpus (``eval_ledger.json``), one list of evaluations per fingerprint: bundle id, split name, time, and
whether the evaluation was forced. ``check`` refuses a second evaluation of a scored split unless the
caller passes ``allow_rescore`` (``mllmdr-train eval --rescore-test``), and the report then says so:
a split scored twice has become a dev split, and its figures are no longer a held-out result.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mllmdr_core.errors import ConfigError
from mllmdr_core.phq8 import ITEM_KEYS
from training.dataset import SessionLabels

LEDGER_FILE = "eval_ledger.json"


def split_fingerprint(sessions: Sequence[SessionLabels]) -> str:
    """sha256 (16 hex) of the split's sessions: ids, item labels and transcript text, in id order."""
    digest = hashlib.sha256()
    for s in sorted(sessions, key=lambda s: s.session_id):
        labels = ",".join(str(s.item_scores.get(k, "")) for k in ITEM_KEYS)
        text = "\n".join(line.text for line in s.transcript)
        digest.update(f"{s.session_id}\t{labels}\t{text}\n".encode())
    return digest.hexdigest()[:16]


class TestLedger:
    """Evaluations per split fingerprint, kept in ``<corpus>/eval_ledger.json``."""

    __test__ = False  # not a pytest class

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, list[dict[str, Any]]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"test-split ledger {self.path} unreadable: {exc}") from exc
        return {str(k): list(v) for k, v in data.items()}

    def history(self, fingerprint: str) -> list[dict[str, Any]]:
        """Earlier evaluations of the split with this fingerprint (oldest first)."""
        return self._read().get(fingerprint, [])

    def check(self, fingerprint: str, *, split: str, allow_rescore: bool) -> int:
        """How many times the split was scored before; raises ``ConfigError`` when it was and
        ``allow_rescore`` is not set."""
        before = self.history(fingerprint)
        if before and not allow_rescore:
            bundles = ", ".join(str(e.get("bundle_id")) for e in before)
            raise ConfigError(
                f"the {split!r} split (fingerprint {fingerprint}) was already scored {len(before)} time(s) "
                f"(bundles {bundles}); scoring it again makes it a dev split. Choose models on the dev "
                "split; pass --rescore-test to score it anyway (the report then records it)"
            )
        return len(before)

    def record(self, fingerprint: str, *, split: str, bundle_id: str, forced: bool) -> int:
        """Add one evaluation; returns the split's evaluation count including this one."""
        data = self._read()
        entries = data.setdefault(fingerprint, [])
        entries.append({"bundle_id": bundle_id, "split": split, "at": time.time(), "forced": forced})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".part")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)
        return len(entries)
