from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerFast

from mllmdr_core.model.tokenizer import AUDIO_TOKEN, VIDEO_TOKEN, modality_token_ids


def test_special_tokens_are_single_ids(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer(f"Audio {AUDIO_TOKEN} video {VIDEO_TOKEN}.")["input_ids"]
    audio_id, video_id = modality_token_ids(tokenizer)
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(audio_id) == 1 and ids.count(video_id) == 1
    assert {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id} == {0, 1, 2}
    assert (audio_id, video_id) == (3, 4)


def test_byte_level_round_trip_and_unseen_text(tokenizer: PreTrainedTokenizerFast) -> None:
    text = "Ünïcode 睡眠 never seen: 42%"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_left_padding_and_save_reload(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    batch = tokenizer(["a", "sleep badly"], padding=True)
    assert batch["attention_mask"][0][0] == 0 and batch["input_ids"][0][0] == tokenizer.pad_token_id
    tokenizer.save_pretrained(tmp_path)
    again = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert again("sleep <AudioHere>")["input_ids"] == tokenizer("sleep <AudioHere>")["input_ids"]
    assert again.padding_side == "left" and again.pad_token == tokenizer.pad_token
