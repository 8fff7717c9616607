"""Evaluation of trained policies: KL to a reference on the policy's own samples (more to come: win rates,
curves and the report of the closed loop)."""

from rlhf.evaluation.kl import sampled_kl

__all__ = ["sampled_kl"]
