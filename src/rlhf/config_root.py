"""The root configuration: one section per component, what `rlhf config show` prints.

Kept apart from `rlhf.config` (the loader) so component modules can import the loader without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.algorithms.dpo import DPOConfig
from rlhf.algorithms.ilql import ILQLConfig
from rlhf.algorithms.kto import KTOConfig
from rlhf.algorithms.ppo import PPOConfig
from rlhf.algorithms.reward import RewardConfig
from rlhf.config import RunConfig, load_config
from rlhf.evaluation.frontier import FrontierConfig
from rlhf.loop import LoopConfig
from rlhf.world.build import WorldConfig
from rlhf.world.panel import PanelConfig


@dataclass
class RootConfig:
    """Resolved configuration of every rlhf component."""

    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "Seed, device, dtype, logging."})
    world: WorldConfig = field(
        default_factory=WorldConfig, metadata={"help": "The bundled toy world: corpus, tokenizer, tiny LM."}
    )
    panel: PanelConfig = field(
        default_factory=PanelConfig, metadata={"help": "The simulated labeller panel."}
    )
    reward: RewardConfig = field(default_factory=RewardConfig, metadata={"help": "Reward-model training."})
    ppo: PPOConfig = field(default_factory=PPOConfig, metadata={"help": "PPO fine-tuning of the policy."})
    dpo: DPOConfig = field(
        default_factory=DPOConfig, metadata={"help": "DPO fine-tuning on preference pairs."}
    )
    kto: KTOConfig = field(
        default_factory=KTOConfig, metadata={"help": "KTO fine-tuning on binary (thumbs up/down) labels."}
    )
    ilql: ILQLConfig = field(
        default_factory=ILQLConfig, metadata={"help": "ILQL offline RL on logged rewards."}
    )
    loop: LoopConfig = field(
        default_factory=LoopConfig, metadata={"help": "The closed loop of iterative online RLHF."}
    )
    frontier: FrontierConfig = field(
        default_factory=FrontierConfig, metadata={"help": "The helpful-harmless frontier sweep."}
    )


def load_root_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RootConfig:
    return load_config(RootConfig, path, overrides)
