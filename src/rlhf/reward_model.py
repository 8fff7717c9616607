"""The reward model: a transformers backbone plus linear heads, one output per objective, N ensemble members.

Layout of a saved reward model directory:
- the `AutoModelForSequenceClassification` checkpoint (config with `num_labels` = number of objectives,
  `id2label` = objective names, `pad_token_id`) and its tokenizer: plain transformers loads it and scores
  the last non-pad token. Its `score` layer holds the *mean* of the ensemble heads, and the mean of linear
  heads is a linear head, so plain transformers returns exactly the ensemble-mean score;
- `reward_heads.safetensors`: the N ensemble heads (N, H, D) of the cheap variant (shared backbone), and
  `offsets` (N, H): the threshold b between desirable and undesirable that binary (thumbs up/down) labels
  train, 0 without them. rlhf's score is w.h - b, plain transformers' w.h: a constant apart per objective,
  which comparisons, rankings and normalised rewards do not see;
- `reward_config.json`: objectives, ensemble layout, normalisation statistics;
- `members/member_<k>/` for the full variant (N separate models; the top directory is member 0).

The input is `rlhf.sequences.scored_text(tokenizer, prompt, response)` tokenized by `encode_scored`,
right-padded (left padding would shift Llama's position ids and change the scores), and read at the last
token that is not the pad id: the same score as `AutoModelForSequenceClassification` on `tokenizer(text)`
(docs/sequences.md). Texts that share a prompt (K samples of it) are scored with the prompt run once
(`member_scores`' `groups`, `rlhf.packing.pack_token_groups`), to the same scores.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf.errors import UserError

REWARD_CONFIG = "reward_config.json"
HEADS_FILE = "reward_heads.safetensors"
MEMBERS_DIR = "members"


@dataclass
class RewardMeta:
    """What our loader restores beyond plain transformers."""

    objectives: list[str] = field(default_factory=lambda: ["reward"])
    ensemble_size: int = 1
    ensemble_kind: str = "heads"  # "heads": N heads on one backbone; "models": N separate models
    norm_mean: list[float] | None = None  # per objective, over a reference set of policy samples
    norm_std: list[float] | None = None
    version: int = 1
    # per objective, the comparisons its heads were trained on (None: not recorded, older models); a
    # head with 0 has random weights and is refused as a reward or cost (`check_heads_trained`)
    training_pairs: dict[str, int] | None = None


def check_heads_trained(meta: RewardMeta, weights: dict[str, float], path: str | Path) -> None:
    """UserError when a head weighted non-zero got no training pairs: its scores would be random."""
    if meta.training_pairs is None:
        return
    untrained = [name for name, w in weights.items() if w != 0 and meta.training_pairs.get(name, 0) == 0]
    if untrained:
        per_head = ", ".join(f"{name} {n}" for name, n in meta.training_pairs.items())
        name = untrained[0]
        raise UserError(
            f"{path}: reward head {name!r} was trained on 0 pairs (pairs per head: {per_head}), so its scores "
            f"are random; retrain with `objective: {name}` on the rows about it (for `rlhf label import` "
            f'tasks: "objective": "{name}"), or leave {name!r} out of the reward and cost weights'
        )


class RewardModel(nn.Module):
    """Sequence-classification backbone + ensemble heads; `forward` returns scores (B, N, H)."""

    def __init__(
        self, seq_model: Any, heads: torch.Tensor, meta: RewardMeta, offsets: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.seq_model = seq_model
        self.heads = nn.Parameter(heads)  # (N, H, D)
        # b per member and objective: trained only on binary labels (`train_offsets`), else fixed at 0
        if offsets is None:
            offsets = torch.zeros(heads.shape[:2], dtype=heads.dtype, device=heads.device)
        self.offsets = nn.Parameter(offsets, requires_grad=False)  # (N, H)
        self.meta = meta
        # The mean head is written into `score` only at save time; it takes no gradient (and DDP must
        # not wait for one).
        seq_model.score.weight.requires_grad_(False)

    @property
    def objectives(self) -> list[str]:
        return self.meta.objectives

    def last_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden state of the last token of each row that is not the pad id: (B, D), transformers' rule."""
        from rlhf.sequences import score_positions

        out = self.seq_model.base_model(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state  # (B, T, D)
        last = score_positions(input_ids, self.seq_model.config.pad_token_id)  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def packed_hidden(
        self, packed: Any, layout: list[tuple[int, list[int]]], index: torch.Tensor
    ) -> torch.Tensor:
        """Hidden states at the packed positions `index` (B,) of `rlhf.packing.pack_token_groups`' row: (B, D)."""
        from rlhf.packing import packed_forward

        out = packed_forward(self.seq_model.base_model, packed, index, False, layout)
        return out.last_hidden_state[0, index]

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        packed: Any = None,
        layout: list[tuple[int, list[int]]] | None = None,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores (B, N, H) of right-padded rows (B, T); or, given `packed`, `layout` and `index` (see
        `packed_hidden`), of the packed rows (through `forward`, so a sharded model gathers its weights)."""
        if packed is not None:
            h = self.packed_hidden(packed, layout, index)  # (B, D)
        else:
            h = self.last_hidden(input_ids, attention_mask)  # (B, D)
        return torch.einsum("bd,nhd->bnh", h.to(self.heads.dtype), self.heads) - self.offsets  # (B, N, H)

    def train_offsets(self) -> None:
        """Let the offsets b learn (binary labels in the data): every batch's scores use them, so under
        DDP each step gives them a gradient (0 from a comparison: the difference cancels b)."""
        self.offsets.requires_grad_(True)

    def sync_mean_head(self) -> None:
        with torch.no_grad():
            self.seq_model.score.weight.copy_(self.heads.mean(0).to(self.seq_model.score.weight.dtype))


def init_reward_model(
    backbone_path: str | Path,
    objectives: list[str],
    ensemble_size: int,
    seed: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[RewardModel, Any]:
    """A new reward model whose backbone is the causal LM at `backbone_path` (its LM head is dropped)."""
    from transformers import AutoModelForSequenceClassification

    from rlhf.models import load_tokenizer, resolve_model_path

    path = resolve_model_path(backbone_path)
    tokenizer = load_tokenizer(path, padding_side="right")
    id2label = dict(enumerate(objectives))
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    # The LM head is dropped and the score head is new: transformers' load report says so, as expected.
    hf_logging.set_verbosity_error()
    try:
        seq_model = AutoModelForSequenceClassification.from_pretrained(
            str(path),
            num_labels=len(objectives),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            pad_token_id=tokenizer.pad_token_id,
            dtype=dtype,
            local_files_only=True,
            # a reward model as the backbone (preference-model pretraining, then fine-tuning): its score
            # layer may have another number of heads; the heads are new either way
            ignore_mismatched_sizes=True,
        )
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign checkpoint is a user-facing error
        raise UserError(
            f"cannot build a sequence-classification model from {path}: {str(exc).splitlines()[0]}"
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    seq_model.config.pad_token_id = tokenizer.pad_token_id
    hidden = seq_model.score.weight.shape[1]
    generator = torch.Generator().manual_seed(seed)
    # Each member starts from a different random head, one source of ensemble diversity (the other is
    # bootstrap resampling of the pairs); scale 1/sqrt(D) gives initial scores of order 1.
    heads = torch.randn(ensemble_size, len(objectives), hidden, generator=generator) / math.sqrt(hidden)
    meta = RewardMeta(objectives=list(objectives), ensemble_size=ensemble_size, ensemble_kind="heads")
    return RewardModel(seq_model, heads.to(dtype), meta), tokenizer


def save_reward_model(
    out_dir: str | Path,
    model: RewardModel,
    tokenizer: Any,
    extra_files: dict | None = None,
    carry: tuple[str, ...] = (),
) -> Path:
    """Write the reward model atomically (see the module docstring for the layout)."""
    from safetensors.torch import save_file

    from rlhf.models import has_lora, merge_lora, save_atomic

    if has_lora(model):  # save a plain transformers model: adapters merged into a copy, training goes on
        import copy

        model = copy.deepcopy(model)
        merge_lora(model.seq_model)
    model.sync_mean_head()

    def write(tmp: Path) -> None:
        model.seq_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tensors = {"heads": model.heads, "offsets": model.offsets}
        save_file(
            {k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}, str(tmp / HEADS_FILE)
        )
        (tmp / REWARD_CONFIG).write_text(json.dumps(asdict(model.meta), indent=2))
        for name, writer in (extra_files or {}).items():
            writer(tmp / name)

    return save_atomic(out_dir, write, carry=carry)


def is_reward_model_dir(path: str | Path) -> bool:
    return (Path(path) / REWARD_CONFIG).is_file()


class RewardModelEnsemble(nn.Module):
    """The full ensemble variant: N separate reward models; `forward` concatenates their scores (B, N, H)."""

    def __init__(self, members: list[RewardModel], meta: RewardMeta) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.meta = meta

    @property
    def objectives(self) -> list[str]:
        return self.meta.objectives

    def forward(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, **packed: Any
    ) -> torch.Tensor:
        return torch.cat([member(input_ids, attention_mask, **packed) for member in self.members], dim=1)


def load_reward_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
) -> tuple[Any, Any]:
    """Load a reward model saved by `save_reward_model` (our extras restored); a full ensemble comes back
    as a `RewardModelEnsemble` with the same interface."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from rlhf.models import load_tokenizer, resolve_device, resolve_dtype, resolve_model_path

    path = resolve_model_path(path)
    if not is_reward_model_dir(path):
        raise UserError(
            f"{path} is not an rlhf reward model directory (no {REWARD_CONFIG}); train one with `rlhf reward train`"
        )
    meta = RewardMeta(**json.loads((path / REWARD_CONFIG).read_text()))
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        seq_model = AutoModelForSequenceClassification.from_pretrained(
            str(path), dtype=torch_dtype, local_files_only=True
        )
        saved = load_file(str(path / HEADS_FILE))
        heads = saved["heads"].to(torch_dtype)
        offsets = saved["offsets"].to(torch_dtype) if "offsets" in saved else None  # older models: none
    except Exception as exc:  # noqa: BLE001 - a corrupt or partial checkpoint is a user-facing error
        raise UserError(f"could not load the reward model in {path}: {str(exc).splitlines()[0]}") from exc
    tokenizer = load_tokenizer(path, padding_side="right")
    if meta.ensemble_kind == "models":
        first = RewardModel(
            seq_model,
            heads,
            RewardMeta(**{**asdict(meta), "ensemble_kind": "heads", "ensemble_size": heads.shape[0]}),
            offsets,
        )
        others = [
            load_reward_model(path / MEMBERS_DIR / f"member_{k}", device, dtype)[0]
            for k in range(1, meta.ensemble_size)
        ]
        return RewardModelEnsemble([first.to(device), *others], meta).eval(), tokenizer
    model = RewardModel(seq_model, heads, meta, offsets).to(device).eval()
    return model, tokenizer


# ----------------------------------------------------------------------------- scoring


def pad_right(
    rows: list[list[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return input_ids.to(device), mask.to(device)


def backbone_config(model: Any) -> Any:
    """The transformers config of a reward model's backbone (of its first member for a full ensemble)."""
    first = model.members[0] if isinstance(model, RewardModelEnsemble) else model
    return first.seq_model.config


@dataclass
class Scores:
    """Ensemble mean and standard deviation per objective: each (B, H); `objectives` names the columns."""

    mean: torch.Tensor
    std: torch.Tensor
    objectives: list[str]


@torch.no_grad()
def member_scores(
    model: RewardModel,
    tokenizer: Any,
    texts: list[str],
    batch_size: int = 64,
    max_length: int = 512,
    groups: list[list[int]] | None = None,
) -> torch.Tensor:
    """Every ensemble member's raw score of every text: (B, N members, H objectives), on the CPU. Texts
    are cut from the left to `max_length` tokens or the model's context length, whichever is shorter.

    `groups` (row indices, every row once): texts that begin alike, e.g. the K responses to one prompt
    (PPO's RLOO and GRPO). When one holds two or more rows and the backbone can be packed
    (`rlhf.packing.supports_packing`), their common prefix is run once and their ends attend to it
    (`rlhf.packing.pack_token_groups`): the same scores, each shared prompt's blocks paid once instead
    of K times. The first packed call of a model is checked against the padded one."""
    from rlhf import packing
    from rlhf.sequences import cap_length, encode_scored

    model.eval()
    device = next(model.parameters()).device
    rows = encode_scored(tokenizer, texts, cap_length(max_length, backbone_config(model)))
    args = (model, rows, tokenizer.pad_token_id, device, batch_size)
    if groups is None or all(len(group) == 1 for group in groups) or not packing.supports_packing(model):
        return _padded_member_scores(*args)
    if sorted(b for group in groups for b in group) != list(range(len(rows))):
        raise ValueError(f"groups must hold every row index 0..{len(rows) - 1} once, got {groups}")
    try:
        packed = _packed_member_scores(*args, groups)
    except packing.PackingUnsupported:
        packing.set_packing_verdict(model, False)
        return _padded_member_scores(*args)
    if getattr(model, "_rlhf_packing", None) is None:
        padded = _padded_member_scores(*args)
        tolerance = 1e-3 if next(model.parameters()).dtype == torch.float32 else 5e-2
        same = torch.allclose(packed, padded, atol=tolerance, rtol=tolerance)
        packing.set_packing_verdict(model, same)
        if not same:
            return padded
    return packed


def _padded_member_scores(model, rows, pad_id, device, batch_size) -> torch.Tensor:
    # Sort by length so each batch pads little; results are put back in input order.
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = torch.zeros(len(rows), model.meta.ensemble_size, len(model.objectives))  # (B, N, H)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        input_ids, mask = pad_right([rows[i] for i in idx], pad_id, device)
        out[idx] = model(input_ids, mask).float().cpu()
    return out


def _packed_member_scores(model, rows, pad_id, device, batch_size, groups) -> torch.Tensor:
    """`member_scores` with each group's common prefix once, about `batch_size` rows (whole groups) a forward."""
    from rlhf.packing import pack_token_groups
    from rlhf.sequences import score_positions

    out = torch.zeros(len(rows), model.meta.ensemble_size, len(model.objectives))  # (B, N, H)
    chunks: list[list[list[int]]] = [[]]
    for group in groups:
        if chunks[-1] and sum(map(len, chunks[-1])) + len(group) > batch_size:
            chunks.append([])
        chunks[-1].append(group)
    for chunk in chunks:
        idx = [b for group in chunk for b in group]  # this forward's rows; its groups are runs of them
        ends = torch.tensor([len(group) for group in chunk]).cumsum(0).tolist()
        local = [list(range(end - len(group), end)) for group, end in zip(chunk, ends, strict=True)]
        chunk_rows = [rows[b] for b in idx]
        packed, layout = pack_token_groups(chunk_rows, local, device)
        # the position transformers' rule scores (the last token that is not the pad id), as padded
        last = score_positions(pad_right(chunk_rows, pad_id, device)[0], pad_id)  # (b,)
        index = packed.flat_index[torch.arange(len(idx), device=device), last]  # (b,)
        out[idx] = model(None, None, packed=packed, layout=layout, index=index).float().cpu()
    return out


@torch.no_grad()
def score_texts(
    model: RewardModel,
    tokenizer: Any,
    texts: list[str],
    batch_size: int = 64,
    max_length: int = 512,
    normalize: bool = False,
    groups: list[list[int]] | None = None,
) -> Scores:
    """Score texts made by `rlhf.sequences.scored_text`. With `normalize`, apply the stored reference
    statistics. `groups`: texts that share a prompt, scored with it once (see `member_scores`)."""
    out = member_scores(model, tokenizer, texts, batch_size, max_length, groups)  # (B, N, H)
    mean, std = out.mean(1), out.std(1, unbiased=False)
    if normalize:
        mean, std = apply_normalization(model.meta, mean, std)
    return Scores(mean, std, list(model.objectives))


def apply_normalization(
    meta: RewardMeta, mean: torch.Tensor, std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if meta.norm_mean is None or meta.norm_std is None:
        raise UserError(
            "normalised rewards were asked for but this reward model has no normalisation statistics; run `rlhf reward normalize` first"
        )
    ref_mean = torch.tensor(meta.norm_mean)
    ref_std = torch.tensor(meta.norm_std).clamp_min(1e-6)
    return (mean - ref_mean) / ref_std, std / ref_std


def normalization_stats(scores: torch.Tensor) -> tuple[list[float], list[float]]:
    """Mean and std per objective of reference scores (B, H)."""
    return scores.mean(0).tolist(), scores.std(0, unbiased=False).tolist()
