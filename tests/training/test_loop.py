"""Stage training loop on a tiny real MLlmDR: trainable groups, loss falls, exact resume after a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from mllmdr_core.model.mllm import MLlmDR, MultimodalExample
from mllmdr_core.model.tokenizer import train_tokenizer
from mllmdr_core.testing import tiny_config
from training.loop import param_group, set_trainable
from training.run_config import StageConfig
from training.stage1 import train_stage1
from training.stage2 import alpha_schedule, train_stage2

AUDIO_DIM, VISUAL_DIM = 20, 12
TEXTS = [
    f"Item {k}: <AudioHere> <VideoHere> Evaluation Result: {k % 4}. Evaluation Reason: level {k % 4}."
    for k in range(8)
]


class ToyItems(torch.utils.data.Dataset[MultimodalExample]):
    """Score k is planted in the audio mean; the target text says the score."""

    def __init__(self, n: int, crash_at: int | None = None) -> None:
        rng = np.random.default_rng(0)
        self.items = []
        for i in range(n):
            score = i % 4
            audio = (rng.normal(size=(6, AUDIO_DIM)) + score).astype(np.float32)
            visual = rng.normal(size=(5, VISUAL_DIM)).astype(np.float32)
            self.items.append(
                MultimodalExample(
                    prompt="Rate the item. <AudioHere> <VideoHere>",
                    target=f"Evaluation Result: {score}. Evaluation Reason: level {score}.",
                    audio=audio,
                    visual=visual,
                    target_score=float(score),
                )
            )
        self.crash_at = crash_at
        self.calls = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> MultimodalExample:
        self.calls += 1
        if self.crash_at is not None and self.calls > self.crash_at:
            raise KeyboardInterrupt("simulated interruption")
        return self.items[idx]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(TEXTS * 3, vocab_size=300)


def make_model(tokenizer: PreTrainedTokenizerFast) -> MLlmDR:
    torch.manual_seed(0)
    return MLlmDR(tiny_config(), AUDIO_DIM, VISUAL_DIM, tokenizer)


def test_param_groups_and_trainable(tokenizer: PreTrainedTokenizerFast) -> None:
    model = make_model(tokenizer)
    assert param_group("audio_lqformer.proj.0.weight") == "projection"
    assert param_group("visual_lqformer.queries") == "lqformer"
    assert param_group("maa.mlp.0.weight") == "maa"
    chosen = set_trainable(model, ("llm", "maa"))
    assert chosen["llm"] and all("lora_" in n for n in chosen["llm"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(chosen["llm"]) | set(chosen["maa"])
    assert alpha_schedule(0, 8) == 0.0 and alpha_schedule(4, 8) == 0.5


def test_stage1_trains_only_lqformers_and_loss_falls(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    model = make_model(tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = StageConfig(epochs=6, batch_size=4, lr_lqformer=3e-3, lr_projection=3e-3, alpha=1.0)
    result = train_stage1(model, ToyItems(16), cfg, tmp_path / "s1", progress=False)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("audio_lqformer.", "visual_lqformer.")) for k in changed)
    assert result.last_loss < result.first_loss
    assert (tmp_path / "s1" / "curve.jsonl").read_text().count("\n") == result.steps == 24


def test_stage2_resume_after_interruption_is_exact(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    cfg = StageConfig(epochs=2, batch_size=4, lr_llm=1e-3, checkpoint_every=1)
    ref = make_model(tokenizer)
    train_stage2(ref, ToyItems(12), cfg, tmp_path / "ref", progress=False)

    model = make_model(tokenizer)
    with pytest.raises(KeyboardInterrupt):
        train_stage2(model, ToyItems(12, crash_at=17), cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "final.pt").exists()
    resumed = make_model(tokenizer)
    result = train_stage2(resumed, ToyItems(12), cfg, tmp_path / "run", progress=False)
    assert result.resumed and result.steps == 6
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=f"{name} differs after resume")
