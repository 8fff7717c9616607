"""The records every reader produces and every trainer consumes: pairs, rankings, binary labels, and the
joining rule.

`PreferencePair`, `RankingExample` and `BinaryExample` hold rendered text (a chat conversation has already been turned
into a prompt string and response strings), so trainers never see message lists. `join_prompt_response`
is the one place where a prompt and a response become one model input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.io import write_jsonl


def join_prompt_response(prompt: str, response: str) -> str:
    """The model input for `response` to `prompt`: one space between them unless one side already has it.

    The world's prompts end with "Assistant:" and its responses have no leading space; TRL-style data
    often puts the space at the start of the response; chat templates end the prompt with a newline.
    Plain concatenation in those cases, `prompt + " " + response` otherwise.
    """
    if not prompt or prompt[-1].isspace() or not response or response[0].isspace():
        return prompt + response
    return f"{prompt} {response}"


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: `chosen` was preferred to `rejected` (or judged equal, `tie=True`) for `prompt`."""

    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0  # how much better chosen is, on the labeller's scale (0 = unknown)
    weight: float = 1.0  # relative weight in the reward-model loss (> 0)
    labeller_id: str | None = None
    objective: str | None = None  # which reward head this is about; None = the default (first) head
    tie: bool = False
    source: str = ""  # "file.jsonl:12" (1-based line) or "file.parquet:row 12" (0-based row)


@dataclass(frozen=True)
class RankingExample:
    """K responses to one prompt ordered best first; `ranking` holds tie groups of response indices."""

    prompt: str
    responses: tuple[str, ...]
    ranking: tuple[tuple[int, ...], ...]  # e.g. ((2,), (0, 1), (3,)): 2 best, 0 and 1 tie, 3 worst
    weight: float = 1.0
    labeller_id: str | None = None
    objective: str | None = None
    source: str = ""

    def pairs(self) -> list[PreferencePair]:
        """Every (better, worse) pair across groups, then tie pairs (`tie=True`) within each group.

        Strict pairs come first, in ranking order: a full ranking of K gives K(K-1)/2 strict pairs.
        """
        common = dict(
            prompt=self.prompt,
            weight=self.weight,
            labeller_id=self.labeller_id,
            objective=self.objective,
            source=self.source,
        )
        out = []
        for g, better in enumerate(self.ranking):
            for worse in self.ranking[g + 1 :]:
                for i in better:
                    for j in worse:
                        out.append(
                            PreferencePair(chosen=self.responses[i], rejected=self.responses[j], **common)
                        )
        for group in self.ranking:
            for a, i in enumerate(group):
                for j in group[a + 1 :]:
                    out.append(
                        PreferencePair(
                            chosen=self.responses[i], rejected=self.responses[j], tie=True, **common
                        )
                    )
        return out


@dataclass(frozen=True)
class BinaryExample:
    """One unpaired judgement (TRL's KTO format): `completion` to `prompt` is desirable (`label=True`,
    thumbs up) or undesirable (`label=False`)."""

    prompt: str
    completion: str
    label: bool
    weight: float = 1.0
    labeller_id: str | None = None
    objective: str | None = None
    source: str = ""


def summarize(
    pairs: list[PreferencePair], rankings: list[RankingExample], binary: list[BinaryExample] = ()
) -> dict[str, int]:
    """Counts that describe a set of records (used for every `PreferenceData.stats`); `desirable` and
    `undesirable` are the class balance of the binary records."""
    desirable = sum(b.label for b in binary)
    return {
        "pairs": len(pairs),
        "rankings": len(rankings),
        "binary": len(binary),
        "desirable": desirable,
        "undesirable": len(binary) - desirable,
        "prompts": len({p.prompt for p in pairs} | {r.prompt for r in rankings} | {b.prompt for b in binary}),
        "ties": sum(p.tie for p in pairs),
    }


@dataclass
class PreferenceData:
    """Everything read from one preference file: pairs, rankings (kept whole), binary labels, and counts."""

    pairs: list[PreferencePair]
    rankings: list[RankingExample]
    # rows_read, rows_kept, rows_bad, duplicates_removed, pairs_from_ratings, ratings_unpaired,
    # pairs, rankings, binary, desirable, undesirable, prompts, ties (tie pairs in `pairs`);
    # rows_read = rows_kept + rows_bad + duplicates
    stats: dict[str, int] = field(default_factory=dict)
    binary: list[BinaryExample] = field(default_factory=list)

    def prompts(self) -> set[str]:
        return (
            {p.prompt for p in self.pairs}
            | {r.prompt for r in self.rankings}
            | {b.prompt for b in self.binary}
        )

    def __len__(self) -> int:
        return len(self.pairs) + len(self.rankings) + len(self.binary)


def pair_to_row(pair: PreferencePair) -> dict[str, Any]:
    """A JSONL row in the pairwise format; optional fields only when they differ from the default."""
    row: dict[str, Any] = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
    if pair.margin != 0.0:
        row["margin"] = pair.margin
    if pair.weight != 1.0:
        row["weight"] = pair.weight
    if pair.labeller_id is not None:
        row["labeller_id"] = pair.labeller_id
    if pair.objective is not None:
        row["objective"] = pair.objective
    if pair.tie:
        row["tie"] = True
    if pair.source:
        row["source"] = pair.source  # kept as provenance; readers ignore unknown fields
    return row


def write_preferences(path: str | Path, pairs: Iterable[PreferencePair]) -> int:
    """Write pairs as JSONL that `load_preferences` reads back to the same pairs; returns the row count."""
    return write_jsonl(path, (pair_to_row(p) for p in pairs))
