"""rlhf: Reinforcement Learning from Human Feedback, from feedback collection to policy fine-tuning."""

__version__ = "0.1.0"
