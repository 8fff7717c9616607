"""Evaluation of trained policies: KL to a reference on the policy's own samples, and head-to-head win
rates against a baseline judged by the world's gold or by a reward model."""

from rlhf.evaluation.compare import evaluate, win_rate
from rlhf.evaluation.kl import kl_note, sampled_kl

__all__ = ["evaluate", "kl_note", "sampled_kl", "win_rate"]
