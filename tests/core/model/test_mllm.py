from __future__ import annotations

import re

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mllmdr_core.model.mllm import IGNORE_INDEX, MLlmDR, MultimodalExample, collate, score_token_position
from mllmdr_core.model.tokenizer import AUDIO_TOKEN, VIDEO_TOKEN

from .conftest import AUDIO_DIM, VISUAL_DIM

PROMPT = f"Rate sleep. Audio: {AUDIO_TOKEN} Video: {VIDEO_TOKEN} Answer:"
TARGET = "Evaluation Result: 2. Evaluation Reason: poor sleep."


def _examples(n: int = 2, seed: int = 0) -> list[MultimodalExample]:
    rng = np.random.default_rng(seed)
    return [
        MultimodalExample(
            prompt=PROMPT if i % 2 == 0 else "Short " + PROMPT,
            target=TARGET,
            audio=rng.standard_normal((10 + 3 * i, AUDIO_DIM)).astype(np.float32),
            visual=rng.standard_normal((6 + i, VISUAL_DIM)).astype(np.float32),
            target_score=float(i % 4),
        )
        for i in range(n)
    ]


def test_collate_shapes_and_labels(tokenizer: PreTrainedTokenizerFast) -> None:
    batch = collate(_examples(2), tokenizer)
    bsz, length = batch.input_ids.shape
    assert batch.attention_mask.shape == batch.labels.shape == (2, length)  # type: ignore[union-attr]
    assert batch.audio is not None and batch.audio.shape == (2, 13, AUDIO_DIM)
    assert batch.audio_mask is not None and batch.audio_mask.sum(1).tolist() == [10, 13]
    assert batch.visual is not None and batch.visual.shape == (2, 7, VISUAL_DIM)
    target_ids = tokenizer(TARGET, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert batch.labels is not None
    for b in range(bsz):
        lab = batch.labels[b][batch.labels[b] != IGNORE_INDEX].tolist()
        assert lab == target_ids
        assert batch.input_ids[b, -len(target_ids) :].tolist() == target_ids
    assert batch.attention_mask[0, 0] == 0  # left padding on the shorter prompt


def test_splice_places_32_tokens_per_modality(model: MLlmDR, tokenizer: PreTrainedTokenizerFast) -> None:
    batch = collate(_examples(2), tokenizer)
    at, vt = model.encode_modalities(batch.audio, batch.audio_mask, batch.visual, batch.visual_mask)
    assert at is not None and at.shape == (2, 32, model.d_llm)
    assert vt is not None and vt.shape == (2, 32, model.d_llm)
    embeds, mask, index = model.splice(batch.input_ids, batch.attention_mask, at, vt)
    n_tokens = batch.attention_mask.sum(1)
    assert embeds.shape == (2, int(n_tokens.max()) - 2 + 64, model.d_llm)
    assert mask.sum(1).tolist() == (n_tokens - 2 + 64).tolist()
    # row 0: the audio tokens stand exactly where <AudioHere> stood
    ids0 = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
    a_pos = ids0.index(model.audio_token_id)
    v_pos = ids0.index(model.video_token_id)
    start = embeds.shape[1] - int(mask[0].sum())
    assert torch.equal(embeds[0, start + a_pos : start + a_pos + 32], at[0])
    assert torch.equal(embeds[0, start + v_pos - 1 + 32 : start + v_pos - 1 + 64], vt[0])
    text_emb = model.llm.get_input_embeddings()(batch.input_ids)
    assert torch.equal(
        embeds[0, start + a_pos - 1], text_emb[0, batch.attention_mask.shape[1] - len(ids0) + a_pos - 1]
    )
    assert (index[0, start + a_pos : start + a_pos + 32] == -1).all()


def test_absent_modality_removes_its_slot(model: MLlmDR, tokenizer: PreTrainedTokenizerFast) -> None:
    batch = collate([MultimodalExample(prompt=PROMPT, target=TARGET)], tokenizer)
    assert batch.audio is None and batch.visual is None
    at, vt = model.encode_modalities(None, None, None, None)
    assert at is None and vt is None
    embeds, _mask, index = model.splice(batch.input_ids, batch.attention_mask, at, vt)
    assert embeds.shape[1] == batch.input_ids.shape[1] - 2
    kept = batch.input_ids[0, index[0]].tolist()
    assert model.audio_token_id not in kept and model.video_token_id not in kept
    out = model(batch)
    assert out.lm_loss is not None and torch.isfinite(out.lm_loss)
    # audio only: 32 tokens in, the video slot gone
    ex = _examples(1)[0]
    batch = collate([MultimodalExample(prompt=PROMPT, target=TARGET, audio=ex.audio)], tokenizer)
    at, vt = model.encode_modalities(batch.audio, batch.audio_mask, None, None)
    embeds, _, _ = model.splice(batch.input_ids, batch.attention_mask, at, vt)
    assert embeds.shape[1] == batch.input_ids.shape[1] - 2 + 32


def test_padded_features_change_nothing(model: MLlmDR, tokenizer: PreTrainedTokenizerFast) -> None:
    batch = collate(_examples(2), tokenizer)
    with torch.no_grad():
        base = model(batch)
        assert batch.audio is not None and batch.audio_mask is not None
        assert batch.visual is not None and batch.visual_mask is not None
        batch.audio[~batch.audio_mask] = 77.0
        batch.visual[~batch.visual_mask] = -55.0
        noisy = model(batch)
    assert torch.allclose(noisy.maa_score, base.maa_score, atol=1e-5)
    assert base.loss is not None and noisy.loss is not None
    assert torch.allclose(noisy.loss, base.loss, atol=1e-5)


def test_left_padding_does_not_change_a_row(model: MLlmDR, tokenizer: PreTrainedTokenizerFast) -> None:
    exs = _examples(2)
    with torch.no_grad():
        both = model(collate(exs, tokenizer))
        alone = model(collate([exs[1]], tokenizer))
    assert torch.allclose(both.maa_score[1], alone.maa_score[0], atol=1e-4)


def test_loss_mixes_lm_and_mse_and_both_lqformers_get_gradients(
    model: MLlmDR, tokenizer: PreTrainedTokenizerFast
) -> None:
    model.train()
    batch = collate(_examples(2), tokenizer)
    out = model(batch, alpha=0.25)
    assert out.lm_loss is not None and out.mse_loss is not None and out.loss is not None
    assert torch.allclose(out.loss, 0.25 * out.lm_loss + 0.75 * out.mse_loss)
    assert out.maa_score.shape == (2,)
    assert out.logits is not None and out.logits.shape[:2] == (2, int(batch.attention_mask.sum(1).max()) + 62)
    out.loss.backward()
    for prefix in ("audio_lqformer.", "visual_lqformer.", "maa.", "llm."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix) and p.requires_grad]
        assert grads and all(g is not None for g in grads), prefix
        assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0, prefix
    assert model.audio_lqformer.queries.grad is not None and model.visual_lqformer.queries.grad is not None


def test_maa_ignores_the_target_text(model: MLlmDR, tokenizer: PreTrainedTokenizerFast) -> None:
    ex = _examples(1)[0]
    other = MultimodalExample(
        ex.prompt, "Evaluation Result: 0. Evaluation Reason: fine.", ex.audio, ex.visual, 0.0
    )
    prompt_only = MultimodalExample(ex.prompt, None, ex.audio, ex.visual)
    with torch.no_grad():
        a = model(collate([ex], tokenizer)).maa_score
        b = model(collate([other], tokenizer)).maa_score
        c = model(collate([prompt_only], tokenizer)).maa_score
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)


def test_score_token_position_finds_the_item_digit(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer(TARGET, add_special_tokens=False)["input_ids"]
    pos = score_token_position(ids, tokenizer)
    assert pos is not None and tokenizer.decode([ids[pos]]).strip() == "2"
    assert tokenizer.decode(ids[:pos]).strip().endswith("Result:")
    no_digit = tokenizer("Evaluation Result: none. Reason: x", add_special_tokens=False)["input_ids"]
    assert score_token_position(no_digit, tokenizer) is None


def test_score_token_position_finds_a_digit_merged_with_punctuation() -> None:
    pieces = ["Evaluation", " Result", ": 2", ".", " Reason", ":", " poor", " sleep"]
    word_level = Tokenizer(models.WordLevel({p: i for i, p in enumerate(["<unk>", *pieces])}, "<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Split(Regex("|".join(map(re.escape, pieces))), "isolated")
    merging = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="<unk>")
    ids = merging(TARGET.replace(" Evaluation Reason", " Reason"), add_special_tokens=False)["input_ids"]
    assert merging.convert_ids_to_tokens(ids)[:3] == ["Evaluation", " Result", ": 2"]
    assert score_token_position(ids, merging) == 2


def test_score_token_weight_weights_only_the_digit(model: MLlmDR, tokenizer: PreTrainedTokenizerFast) -> None:
    """Weight w on the digit: LM loss = (Σ ce_i + (w−1)·ce_digit) / (n + w − 1); w = 1 is the plain mean."""
    examples = _examples(2)
    plain = collate(examples, tokenizer)
    assert plain.label_weights is None
    weighted = collate(examples, tokenizer, score_token_weight=5.0)
    assert weighted.label_weights is not None and weighted.labels is not None
    for b in range(2):
        row_w = weighted.label_weights[b]
        assert (row_w[weighted.labels[b] == IGNORE_INDEX] == 0).all()
        assert sorted(set(row_w[weighted.labels[b] != IGNORE_INDEX].tolist())) == [1.0, 5.0]
        assert tokenizer.decode(weighted.labels[b][row_w == 5.0].tolist()).strip() == "2"
    model.eval()
    with torch.no_grad():
        out_plain = model(plain, alpha=1.0)
        out_w = model(weighted, alpha=1.0)
        # per-token CE from the same logits, to check the weighted mean by hand
        assert out_plain.logits is not None
        logits = out_plain.logits[:, :-1].float()  # (B, L'-1, V)
        _embeds, _mask, index = model.splice(
            plain.input_ids,
            plain.attention_mask,
            *model.encode_modalities(plain.audio, plain.audio_mask, plain.visual, plain.visual_mask),
        )
        labels = plain.labels.gather(1, index.clamp(min=0)).masked_fill(index < 0, IGNORE_INDEX)  # type: ignore[union-attr]
        w = weighted.label_weights.gather(1, index.clamp(min=0)).masked_fill(index < 0, 0.0)[:, 1:]
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="none"
        ).reshape(w.shape)  # (B, L'-1)
    valid = labels[:, 1:] != IGNORE_INDEX
    assert out_plain.lm_loss is not None and out_w.lm_loss is not None
    assert torch.allclose(out_plain.lm_loss, ce[valid].mean(), atol=1e-5)
    assert torch.allclose(out_w.lm_loss, (ce * w).sum() / w.sum(), atol=1e-5)
    assert not torch.allclose(out_plain.lm_loss, out_w.lm_loss)
