"""MLlm-DR: LQ-former soft tokens spliced into a causal LM at ``<AudioHere>`` / ``<VideoHere>``.

Per PHQ-8 item prompt::

    audio (B, Ta, Da) --LQFormer--> (B, 32, d_llm)      visual (B, Tv, Dv) --LQFormer--> (B, 32, d_llm)
    input_ids (B, L) --embed--> (B, L, d_llm) --splice: each placeholder → its 32 tokens--> (B, L', d_llm)
    --LLM (+LoRA)--> logits (B, L', V) [LM loss on the target]  and  last hidden (B, L', d_llm)
    --MAA over the prompt positions--> score (B,)

Loss = a·LM + (1−a)·MSE(score, item label). The MAA head pools only the prompt positions (the causal LM
lets them see nothing of the target), so the training forward and inference (prompt only) agree and
the target text cannot leak into the regression. A modality that is absent (``None``) has its
placeholder removed from the sequence; rows are re-padded on the left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mllmdr_core.config import LLMConfig, MllmdrConfig
from mllmdr_core.errors import ConfigError
from mllmdr_core.model.lora import apply_lora
from mllmdr_core.model.lqformer import LQFormer
from mllmdr_core.model.maa import MAAHead
from mllmdr_core.model.tokenizer import AUDIO_TOKEN, VIDEO_TOKEN, add_modality_tokens, modality_token_ids

IGNORE_INDEX = -100


@dataclass
class MultimodalBatch:
    """A padded training/inference batch. Token tensors are left-padded; features right-padded."""

    input_ids: torch.Tensor  # (B, L) long
    attention_mask: torch.Tensor  # (B, L) long/bool, 1 = token
    labels: torch.Tensor | None = None  # (B, L) long, IGNORE_INDEX on prompt and padding
    audio: torch.Tensor | None = None  # (B, Ta, Da) float
    audio_mask: torch.Tensor | None = None  # (B, Ta) bool, True = valid frame
    visual: torch.Tensor | None = None  # (B, Tv, Dv) float
    visual_mask: torch.Tensor | None = None  # (B, Tv) bool
    target_score: torch.Tensor | None = None  # (B,) float item labels 0–3
    label_weights: torch.Tensor | None = None  # (B, L) float LM-loss weight per label token (None: all 1)

    def to(self, device: torch.device | str) -> MultimodalBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return MultimodalBatch(
            **{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()}
        )


@dataclass
class MultimodalExample:
    """One item prompt (with ``<AudioHere>``/``<VideoHere>`` where present) and its features/targets."""

    prompt: str
    target: str | None = None  # "Evaluation Result: N. Evaluation Reason: …" (training)
    audio: npt.NDArray[np.float32] | None = None  # (Ta, Da)
    visual: npt.NDArray[np.float32] | None = None  # (Tv, Dv)
    target_score: float | None = None


@dataclass
class MLlmDROutput:
    loss: torch.Tensor | None
    lm_loss: torch.Tensor | None
    mse_loss: torch.Tensor | None
    maa_score: torch.Tensor  # (B,)
    logits: torch.Tensor | None = None  # (B, L', V) when labels were given


def _pad_features(
    arrays: Sequence[npt.NDArray[np.float32] | None], name: str
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    present = [a for a in arrays if a is not None]
    if not present:
        return None, None
    dim = present[0].shape[-1]
    if any(a.ndim != 2 or a.shape[-1] != dim for a in present):
        raise ConfigError(f"{name} features must all be (T, {dim}) arrays")
    length = max(1, max(a.shape[0] for a in present))
    out = torch.zeros(len(arrays), length, dim)  # (B, T, D)
    mask = torch.zeros(len(arrays), length, dtype=torch.bool)  # (B, T)
    for i, a in enumerate(arrays):
        if a is not None and a.shape[0]:
            out[i, : a.shape[0]] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            mask[i, : a.shape[0]] = True
    return out, mask


SCORE_DIGITS = frozenset("0123")
SCORE_SEARCH_TOKENS = 12  # the score digit sits right after "Evaluation Result:" at the target's start


def score_token_position(target_ids: Sequence[int], tokenizer: PreTrainedTokenizerBase) -> int | None:
    """Index in ``target_ids`` of the token holding the item-score digit of "Evaluation Result: N. …"
    (None if absent); a tokenizer that merges the digit with its neighbours (": 2") gives that token."""
    for i, tok in enumerate(target_ids[:SCORE_SEARCH_TOKENS]):
        if SCORE_DIGITS.intersection(str(tokenizer.decode([tok]))):
            return i
    return None


def collate(
    examples: Sequence[MultimodalExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    score_token_weight: float = 1.0,
) -> MultimodalBatch:
    """Tokenise prompts (+ targets ending in EOS), left-pad, and pad features with validity masks.

    ``score_token_weight`` ≠ 1 weights the LM loss of each target's score digit (the one token the
    reported item score is read from) against its rationale tokens; 1 is the paper's plain mean.
    """
    if not examples:
        raise ConfigError("collate needs at least one example")
    pad_id = int(tokenizer.pad_token_id)
    eos_id = int(tokenizer.eos_token_id)
    seqs: list[list[int]] = []
    labs: list[list[int]] = []
    score_at: list[int | None] = []  # per example: index of the score digit in its unpadded sequence
    for ex in examples:
        prompt_ids: list[int] = tokenizer(ex.prompt)["input_ids"]
        target_ids: list[int] = []
        pos = None
        if ex.target is not None:
            target_ids = [*tokenizer(ex.target, add_special_tokens=False)["input_ids"], eos_id]
            pos = score_token_position(target_ids, tokenizer) if score_token_weight != 1.0 else None
        seqs.append(prompt_ids + target_ids)
        labs.append([IGNORE_INDEX] * len(prompt_ids) + target_ids)
        score_at.append(None if pos is None else len(prompt_ids) + pos)
    length = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)  # (B, L)
    attention_mask = torch.zeros(len(seqs), length, dtype=torch.long)  # (B, L)
    labels = torch.full((len(seqs), length), IGNORE_INDEX, dtype=torch.long)  # (B, L)
    for i, (s, lab) in enumerate(zip(seqs, labs, strict=True)):
        input_ids[i, length - len(s) :] = torch.tensor(s)
        attention_mask[i, length - len(s) :] = 1
        labels[i, length - len(s) :] = torch.tensor(lab)
    audio, audio_mask = _pad_features([ex.audio for ex in examples], "audio")
    visual, visual_mask = _pad_features([ex.visual for ex in examples], "visual")
    scores = [ex.target_score for ex in examples]
    if any(s is None for s in scores) and not all(s is None for s in scores):
        raise ConfigError("either every example or none has a target_score")
    target = None if scores[0] is None else torch.tensor(scores, dtype=torch.float32)  # (B,)
    has_targets = any(ex.target is not None for ex in examples)
    label_weights = None
    if has_targets and score_token_weight != 1.0:
        label_weights = (labels != IGNORE_INDEX).float()  # (B, L): 1 per target token, 0 elsewhere
        for i, (s, at) in enumerate(zip(seqs, score_at, strict=True)):
            if at is not None:
                label_weights[i, length - len(s) + at] = score_token_weight
    return MultimodalBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels if has_targets else None,
        audio=audio,
        audio_mask=audio_mask,
        visual=visual,
        visual_mask=visual_mask,
        target_score=target,
        label_weights=label_weights,
    )


def build_llm(cfg: LLMConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The base causal LM: pretrained from ``cfg.model`` or a random-init Llama from ``cfg.llama``."""
    dtype = getattr(torch, cfg.dtype)
    llm: PreTrainedModel
    if cfg.model is None:
        kwargs = {
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "tie_word_embeddings": False,
            **cfg.llama,
        }
        llm = LlamaForCausalLM(LlamaConfig(**kwargs)).to(dtype)
    else:
        llm = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
    fit_embeddings(llm, tokenizer)
    return llm


def input_embedding(llm: PreTrainedModel | PeftModel) -> nn.Embedding:
    """The LLM's token embedding table."""
    emb = llm.get_input_embeddings()
    assert isinstance(emb, nn.Embedding)
    return emb


def fit_embeddings(llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the embedding tables to the tokenizer; new rows get the (deterministic) mean row."""
    add_modality_tokens(tokenizer)
    old = input_embedding(llm).weight.shape[0]
    if len(tokenizer) <= old:
        return
    llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        for emb in (llm.get_input_embeddings(), llm.get_output_embeddings()):
            if isinstance(emb, nn.Module) and isinstance(emb.weight, torch.Tensor):
                emb.weight[old:] = emb.weight[:old].mean(dim=0)


class MLlmDR(nn.Module):
    """LQ-formers + MAA head around a (LoRA-adapted) causal LM."""

    def __init__(
        self,
        config: MllmdrConfig,
        audio_dim: int,
        visual_dim: int,
        tokenizer: PreTrainedTokenizerBase,
        llm: PreTrainedModel | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.audio_dim = audio_dim
        self.visual_dim = visual_dim
        base = build_llm(config.llm, tokenizer) if llm is None else llm
        if llm is not None:
            fit_embeddings(base, tokenizer)
        self.llm: PreTrainedModel | PeftModel = base
        if not isinstance(base, PeftModel) and config.llm.lora.r > 0:
            self.llm = apply_lora(base, config.llm.lora)
        d_llm = int(input_embedding(self.llm).weight.shape[1])
        self.d_llm = d_llm
        self.audio_lqformer = LQFormer(config.lqformer, audio_dim, d_llm)
        self.visual_lqformer = LQFormer(config.lqformer, visual_dim, d_llm)
        self.maa = MAAHead(config.maa, d_llm)
        self.audio_token_id, self.video_token_id = modality_token_ids(tokenizer)

    # -- stages -------------------------------------------------------------------------------------------
    def encode_modalities(
        self,
        audio: torch.Tensor | None,
        audio_mask: torch.Tensor | None,
        visual: torch.Tensor | None,
        visual_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Features → soft tokens: (B, Q, d_llm) per modality, ``None`` where the modality is absent."""
        audio_tokens = visual_tokens = None
        if audio is not None:
            am = audio_mask if audio_mask is not None else audio.new_ones(audio.shape[:2], dtype=torch.bool)
            audio_tokens = self.audio_lqformer(audio, am)  # (B, Q, d_llm)
        if visual is not None:
            vm = (
                visual_mask
                if visual_mask is not None
                else visual.new_ones(visual.shape[:2], dtype=torch.bool)
            )
            visual_tokens = self.visual_lqformer(visual, vm)  # (B, Q, d_llm)
        return audio_tokens, visual_tokens

    def encode_latents(
        self, audio: torch.Tensor | None, visual: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Features (all frames valid) → the LQ-formers' outputs before their projection into the LLM's
        space: (B, Q, d_lq) per modality, ``None`` where absent (``encode_modalities``: ``proj`` of these)."""
        audio_out = visual_out = None
        if audio is not None:
            audio_out = self.audio_lqformer.latent(audio, audio.new_ones(audio.shape[:2], dtype=torch.bool))
        if visual is not None:
            visual_out = self.visual_lqformer.latent(
                visual, visual.new_ones(visual.shape[:2], dtype=torch.bool)
            )
        return audio_out, visual_out

    def splice(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        audio_tokens: torch.Tensor | None,
        visual_tokens: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Replace each placeholder by its modality's soft tokens (or drop it when that modality is None).

        ``input_ids``/``attention_mask`` (B, L) left-padded; soft tokens (B or 1, Q, d_llm). Returns
        ``inputs_embeds`` (B, L', d_llm), ``attention_mask`` (B, L') and ``labels_index`` (B, L'): for each
        new position the index of the token it came from in ``input_ids``, −1 for soft tokens and padding.
        """
        text = input_embedding(self.llm)(input_ids)  # (B, L, d_llm)
        bsz = input_ids.shape[0]
        rows: list[torch.Tensor] = []
        idx_rows: list[torch.Tensor] = []
        for b in range(bsz):
            positions = attention_mask[b].bool().nonzero().squeeze(-1)  # (n_b,)
            ids = input_ids[b, positions]  # (n_b,)
            pieces: list[torch.Tensor] = []
            idx_pieces: list[torch.Tensor] = []
            start = 0
            is_slot = (ids == self.audio_token_id) | (ids == self.video_token_id)
            for k in is_slot.nonzero().squeeze(-1).tolist():
                pieces.append(text[b, positions[start:k]])
                idx_pieces.append(positions[start:k])
                soft = audio_tokens if int(ids[k]) == self.audio_token_id else visual_tokens
                if soft is not None:
                    tok = soft[b if soft.shape[0] > 1 else 0].to(text.dtype)  # (Q, d_llm)
                    pieces.append(tok)
                    idx_pieces.append(positions.new_full((tok.shape[0],), -1))
                start = k + 1
            pieces.append(text[b, positions[start:]])
            idx_pieces.append(positions[start:])
            rows.append(torch.cat(pieces))  # (L_b, d_llm)
            idx_rows.append(torch.cat(idx_pieces))  # (L_b,)
        length = max(r.shape[0] for r in rows)
        embeds = text.new_zeros(bsz, length, text.shape[-1])  # (B, L', d_llm)
        mask = attention_mask.new_zeros(bsz, length)  # (B, L')
        index = input_ids.new_full((bsz, length), -1)  # (B, L')
        for b, (row, idx) in enumerate(zip(rows, idx_rows, strict=True)):
            embeds[b, length - row.shape[0] :] = row
            mask[b, length - row.shape[0] :] = 1
            index[b, length - row.shape[0] :] = idx
        return embeds, mask, index

    def prompt_embeds(
        self,
        prompts: Sequence[str],
        audio: torch.Tensor | None,
        audio_mask: torch.Tensor | None,
        visual: torch.Tensor | None,
        visual_mask: torch.Tensor | None,
    ) -> list[torch.Tensor]:
        """Spliced embeddings per prompt, unpadded: list of (L_i, d_llm). Features (1 or B, T, D)."""
        enc = self.tokenizer(list(prompts), padding=True, return_tensors="pt")
        enc = enc.to(input_embedding(self.llm).weight.device)  # the LLM's device (e.g. a GPU)
        audio_tokens, visual_tokens = self.encode_modalities(audio, audio_mask, visual, visual_mask)
        embeds, mask, _ = self.splice(enc["input_ids"], enc["attention_mask"], audio_tokens, visual_tokens)
        return [embeds[b, mask[b].bool()] for b in range(embeds.shape[0])]

    def forward(self, batch: MultimodalBatch, alpha: float = 0.5) -> MLlmDROutput:
        """Loss = alpha·LM + (1−alpha)·MSE when labels / target scores are present; MAA score always."""
        # 1. soft tokens and splice
        audio_tokens, visual_tokens = self.encode_modalities(
            batch.audio, batch.audio_mask, batch.visual, batch.visual_mask
        )
        embeds, mask, index = self.splice(batch.input_ids, batch.attention_mask, audio_tokens, visual_tokens)
        # 2. labels follow their tokens; soft tokens and padding are ignored
        labels = weights = None
        if batch.labels is not None:
            labels = batch.labels.gather(1, index.clamp(min=0)).masked_fill(
                index < 0, IGNORE_INDEX
            )  # (B, L')
            if batch.label_weights is not None:
                weights = batch.label_weights.gather(1, index.clamp(min=0))  # (B, L')
                weights = weights.masked_fill(index < 0, 0.0)
        # 3. LLM (positions count real tokens only, as in left-padded generation)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L')
        out = self.llm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=0 if labels is not None else 1,
        )
        hidden = out.hidden_states[-1]  # (B, L', d_llm)
        # 4. MAA over prompt positions only
        prompt_mask = mask.bool() if labels is None else mask.bool() & (labels == IGNORE_INDEX)  # (B, L')
        score = self.maa(hidden, prompt_mask)  # (B,)
        lm_loss = mse_loss = None
        if labels is not None and bool((labels != IGNORE_INDEX).any()):
            logits = out.logits[:, :-1].float()  # (B, L'-1, V)
            flat_labels = labels[:, 1:].reshape(-1)  # (B·(L'-1),)
            if weights is None:
                lm_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat_labels)
            else:
                token_loss = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), flat_labels, reduction="none"
                )  # (B·(L'-1),), 0 where IGNORE_INDEX
                w = weights[:, 1:].reshape(-1).to(token_loss.dtype) * (flat_labels != IGNORE_INDEX)
                lm_loss = (token_loss * w).sum() / w.sum().clamp(min=1e-8)
        if batch.target_score is not None:
            mse_loss = F.mse_loss(score.float(), batch.target_score.to(score.device).float())
        if lm_loss is not None and mse_loss is not None:
            loss: torch.Tensor | None = alpha * lm_loss + (1.0 - alpha) * mse_loss
        else:
            loss = lm_loss if lm_loss is not None else mse_loss
        return MLlmDROutput(
            loss=loss,
            lm_loss=lm_loss,
            mse_loss=mse_loss,
            maa_score=score,
            logits=out.logits if labels is not None else None,
        )


__all__ = [
    "AUDIO_TOKEN",
    "IGNORE_INDEX",
    "VIDEO_TOKEN",
    "MLlmDR",
    "MLlmDROutput",
    "MultimodalBatch",
    "MultimodalExample",
    "build_llm",
    "collate",
    "fit_embeddings",
    "input_embedding",
]
