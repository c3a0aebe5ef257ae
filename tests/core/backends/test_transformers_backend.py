from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from mllmdr_core.assess import Assessor
from mllmdr_core.assessment import Assessment
from mllmdr_core.backends.base import ItemRequest, LLMBackend
from mllmdr_core.backends.transformers_backend import TransformersBackend, left_pad
from mllmdr_core.bundle import LoadedBundle, load_bundle
from mllmdr_core.errors import BackendError
from mllmdr_core.grounded_decoding import GroundedDecoder
from mllmdr_core.model.mllm import MLlmDR, MultimodalExample, collate
from mllmdr_core.model.tokenizer import train_tokenizer
from mllmdr_core.snapshot import SessionSnapshot
from mllmdr_core.testing import tiny_config

PROMPTS = [
    "Rate sleep. Audio: <AudioHere> Video: <VideoHere> Reply",
    "Rate mood over the last two weeks. Audio: <AudioHere> Video: <VideoHere> Reply",
    "Rate appetite. Video: <VideoHere> Reply",
]


@pytest.fixture(scope="module")
def model() -> MLlmDR:
    tok = train_tokenizer(
        PROMPTS * 3 + ["Evaluation Result: 2. Evaluation Reason: poor sleep."], vocab_size=300
    )
    torch.manual_seed(0)
    return MLlmDR(tiny_config(), 36, 24, tok).eval()


@pytest.fixture(scope="module")
def feats() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 20, 36, generator=g), torch.randn(1, 9, 24, generator=g)


def _requests(model: MLlmDR, feats: tuple[torch.Tensor, torch.Tensor]) -> list[ItemRequest]:
    with torch.no_grad():
        embeds = model.prompt_embeds(PROMPTS, feats[0], None, feats[1], None)
    return [ItemRequest(f"item{i}", e) for i, e in enumerate(embeds)]


def test_batched_equals_single_and_is_deterministic(
    model: MLlmDR, feats: tuple[torch.Tensor, torch.Tensor]
) -> None:
    backend = TransformersBackend(model, max_new_tokens=8)
    assert isinstance(backend, LLMBackend) and backend.name == "transformers"
    reqs = _requests(model, feats)
    assert [r.embeds.shape[0] for r in reqs][2] < reqs[1].embeds.shape[0]  # ragged → left padding used
    batched = backend.generate(reqs)
    again = backend.generate(reqs)
    assert batched == again
    for req, out in zip(reqs, batched, strict=True):
        (single,) = backend.generate([req])
        assert single.text == out.text and single.generated_tokens == out.generated_tokens
        assert single.maa_score == pytest.approx(out.maa_score, abs=1e-5)
        assert out.item_key == req.item_key and out.prompt_tokens == req.embeds.shape[0]
        assert 0 < out.generated_tokens <= 8


def test_generation_matches_a_manual_greedy_loop(
    model: MLlmDR, feats: tuple[torch.Tensor, torch.Tensor]
) -> None:
    backend = TransformersBackend(model, max_new_tokens=5)
    req = _requests(model, feats)[0]
    out = backend.generate([req])[0]
    embed = model.llm.get_input_embeddings()
    seq = req.embeds.unsqueeze(0)  # (1, L, d)
    ids: list[int] = []
    with torch.no_grad():
        for _ in range(5):
            logits = model.llm(inputs_embeds=seq).logits[0, -1]
            logits[[model.audio_token_id, model.video_token_id]] = float("-inf")
            nxt = int(logits.argmax())
            if nxt == model.tokenizer.eos_token_id:
                break
            ids.append(nxt)
            seq = torch.cat([seq, embed(torch.tensor([[nxt]]))], dim=1)
    assert out.text == model.tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert out.generated_tokens == len(ids)


def test_maa_score_equals_the_training_forward(
    model: MLlmDR, feats: tuple[torch.Tensor, torch.Tensor]
) -> None:
    outs = TransformersBackend(model, max_new_tokens=2).generate(_requests(model, feats))
    examples = [MultimodalExample(p, None, feats[0][0].numpy(), feats[1][0].numpy()) for p in PROMPTS]
    with torch.no_grad():
        forward = model(collate(examples, model.tokenizer)).maa_score
    assert [o.maa_score for o in outs] == pytest.approx(forward.tolist(), abs=1e-5)


def test_left_pad_and_close(model: MLlmDR) -> None:
    padded, mask = left_pad([torch.ones(2, 4), torch.ones(3, 4)])
    assert padded.shape == (2, 3, 4) and mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert float(padded[0, 0].abs().sum()) == 0.0
    backend = TransformersBackend(model, max_new_tokens=2)
    assert backend.generate([]) == []
    backend.close()
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.generate([ItemRequest("x", torch.zeros(3, model.d_llm))])


# -- grounded decoding (issue 18) on the trained demo bundle ------------------------------------------


@pytest.fixture(scope="module")
def demo() -> tuple[LoadedBundle, SessionSnapshot]:
    from bench.grounded_decoding import snapshot

    bundle = load_bundle(Path(__file__).resolve().parents[3] / "bundles" / "demo")
    return bundle, snapshot(bundle)


def _assess(bundle: LoadedBundle, snap: SessionSnapshot, grounded: bool | None) -> Assessment:
    if grounded is not None:
        config = copy.deepcopy(bundle.config)
        config.assess.grounded_decoding = grounded
        bundle = dataclasses.replace(bundle, config=config)
    return Assessor(bundle).assess(snap, session_id="g", kind="checkpoint")


def test_grounded_decoding_grounds_every_item_and_the_bundle_setting_is_honoured(
    demo: tuple[LoadedBundle, SessionSnapshot],
) -> None:
    bundle, snap = demo
    shipped = _assess(bundle, snap, None)  # the bundle's own setting (the demo's was chosen on dev)
    off = _assess(bundle, snap, False)
    on = _assess(bundle, snap, True)
    same = on if bundle.config.assess.grounded_decoding else off
    assert [it.raw_text for it in shipped.items] == [it.raw_text for it in same.items]
    assert min(it.grounding.score for it in off.items if it.grounding) < 1.0  # the demo misquotes
    assert [it.grounding.score for it in on.items if it.grounding] == [1.0] * 8
    assert all(it.generated_score is not None for it in on.items)  # the reply format is kept
    changed = [a.raw_text != b.raw_text for a, b in zip(off.items, on.items, strict=True)]
    assert sum(changed) >= 4
    for a, b in zip(off.items, on.items, strict=True):  # nothing before the reason marker changes
        assert a.raw_text.split("Evaluation Reason:")[0] == b.raw_text.split("Evaluation Reason:")[0]


def test_grounded_generate_matches_a_manual_grounded_loop(demo: tuple[LoadedBundle, SessionSnapshot]) -> None:
    bundle, snap = demo
    model = bundle.model
    prompts = Assessor(bundle).prompts(snap)
    key = "sleep"
    backend = TransformersBackend(model, max_new_tokens=40, grounded_decoding=True)
    assert backend.grounding_vocab is not None
    audio = torch.from_numpy(snap.audio).unsqueeze(0)
    visual = torch.from_numpy(snap.visual).unsqueeze(0)
    with torch.no_grad():
        (embeds,) = model.prompt_embeds([prompts[key].text], audio, None, visual, None)
    (out,) = backend.generate([ItemRequest(key, embeds, prompts[key].text)])
    decoder = GroundedDecoder(backend.grounding_vocab, prompts[key].text)
    embed = model.llm.get_input_embeddings()
    seq = embeds.unsqueeze(0)  # (1, L, d)
    ids: list[int] = []
    with torch.no_grad():
        for _ in range(40):
            logits = model.llm(inputs_embeds=seq).logits[0, -1]
            logits[[model.audio_token_id, model.video_token_id]] = float("-inf")
            ranked = logits.argsort(descending=True)[:-2].tolist()
            nxt = decoder.choose(ids, ranked[:64])
            nxt = decoder.fallback(ids, ranked) if nxt is None else nxt
            if nxt == model.tokenizer.eos_token_id:
                break
            ids.append(nxt)
            seq = torch.cat([seq, embed(torch.tensor([[nxt]]))], dim=1)
    assert out.text == model.tokenizer.decode(ids, skip_special_tokens=True).strip()
    with pytest.raises(BackendError, match="prompt text"):
        backend.generate([ItemRequest(key, embeds)])
