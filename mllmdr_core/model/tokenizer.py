"""Offline byte-level BPE tokenizer for tiny / demo LLMs, with the two modality placeholder tokens.

Real backbones (LLaMA-3 etc.) bring their own tokenizer; :func:`add_modality_tokens` adds
``<AudioHere>`` / ``<VideoHere>`` to it. Tiny random-init models (tests, demo bundle) use
:func:`train_tokenizer`, which needs no download: byte-level BPE never produces an unknown token.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

AUDIO_TOKEN = "<AudioHere>"
VIDEO_TOKEN = "<VideoHere>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, AUDIO_TOKEN, VIDEO_TOKEN)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4000) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` (offline) and wrap it for transformers.

    Ids 0–4 are ``<pad> <s> </s> <AudioHere> <VideoHere>``. Encoding with special tokens prepends
    ``<s>``; the modality tokens are single ids wherever they stand in the text.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[AUDIO_TOKEN, VIDEO_TOKEN],
        padding_side="left",
    )
    return wrapped


def add_modality_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """Make sure a (pretrained) tokenizer knows both modality tokens and a pad token.

    Returns how many tokens were added (the LLM's embedding table must grow by that many).
    """
    added = 0
    missing = [t for t in (AUDIO_TOKEN, VIDEO_TOKEN) if t not in tokenizer.get_vocab()]
    if missing:
        added += tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return added


def modality_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """(audio_id, video_id) of the placeholder tokens."""
    ids = tokenizer.convert_tokens_to_ids([AUDIO_TOKEN, VIDEO_TOKEN])
    assert isinstance(ids, list)
    return int(ids[0]), int(ids[1])
