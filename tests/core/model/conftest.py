from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from mllmdr_core.config import MllmdrConfig
from mllmdr_core.model.mllm import MLlmDR
from mllmdr_core.model.tokenizer import train_tokenizer
from mllmdr_core.testing import tiny_config

CORPUS = [
    "Evaluation Result: 2. Evaluation Reason: the participant reports poor sleep most nights.",
    "How have you been sleeping lately? Not well, I wake up at three and cannot fall asleep again.",
    "Do you still enjoy things? I used to love football but now I do not care about it.",
    "Audio: <AudioHere> Video: <VideoHere> Rate the item from 0 to 3.",
]
AUDIO_DIM = 36  # not a multiple of the heads → exercises the input projection
VISUAL_DIM = 24


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(CORPUS * 4, vocab_size=400)


@pytest.fixture(scope="session")
def cfg() -> MllmdrConfig:
    return tiny_config()


@pytest.fixture()
def model(cfg: MllmdrConfig, tokenizer: PreTrainedTokenizerFast) -> MLlmDR:
    torch.manual_seed(0)
    return MLlmDR(cfg, AUDIO_DIM, VISUAL_DIM, tokenizer).eval()
