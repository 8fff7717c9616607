"""The bundled toy world: a procedurally generated assistant corpus (`corpus`), the hidden gold
preference that scores any response (`gold`), and a panel of simulated labellers (`panel`).

Only numpy is imported here; the tiny language model lives in modules that import torch on demand.
"""

from rlhf.world.corpus import (
    DEFAULT_REQUEST_MIX,
    DEFAULT_RESPONSE_MIX,
    PROMPT_TEMPLATE,
    REQUEST_KINDS,
    RESPONSE_KINDS,
    Dialogue,
    Request,
    corpus_stats,
    format_prompt,
    generate_corpus,
    parse_request,
    sample_pairs,
    sample_prompts,
    sample_request,
    split_prompt,
    write_response,
)
from rlhf.world.gold import GUIDELINES, HARM_WEIGHT, gold_features, harm, helpfulness, response_kind, utility
from rlhf.world.panel import (
    Comparison,
    Labeller,
    LabellerSpec,
    Panel,
    PanelConfig,
    Ranking,
    Rating,
    agreement_with_gold,
    gold_choices,
    label_pairs,
    majority_agreement,
    make_panel,
    pairwise_agreement,
    panel_report,
)

__all__ = [
    "DEFAULT_REQUEST_MIX", "DEFAULT_RESPONSE_MIX", "PROMPT_TEMPLATE", "REQUEST_KINDS", "RESPONSE_KINDS",
    "Dialogue", "Request", "corpus_stats", "format_prompt", "generate_corpus", "parse_request", "sample_pairs",
    "sample_prompts", "sample_request", "split_prompt", "write_response",
    "GUIDELINES", "HARM_WEIGHT", "gold_features", "harm", "helpfulness", "response_kind", "utility",
    "Comparison", "Labeller", "LabellerSpec", "Panel", "PanelConfig", "Ranking", "Rating", "agreement_with_gold",
    "gold_choices", "label_pairs", "majority_agreement", "make_panel", "pairwise_agreement", "panel_report",
]
