"""In-context-learning evaluation: LLM Foundry's task formats, batched scoring, the gauntlet."""

from llmfoundry.eval.icl import evaluate_icl

__all__ = ["evaluate_icl"]
