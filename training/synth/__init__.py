"""Synthetic multimodal interview corpus with planted, known signals (raw media, DAIC-WOZ layout)."""

from training.synth.corpus import SynthConfig, generate_corpus, generate_session
from training.synth.plan import SessionPlan, plan_session

__all__ = ["SessionPlan", "SynthConfig", "generate_corpus", "generate_session", "plan_session"]
