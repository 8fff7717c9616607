"""Request and response bodies of the JSON API (`XCreate` in, `XPublic` out), with bounds on every
field so that bad input is a 422 with a message, never a database error."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from rlhf.feedback.checks import check_keys
from rlhf.feedback.store import MAX_COMMENT_CHARS, MAX_TEXT_CHARS, RATING_SCALE, InvalidInput

Id = Annotated[int, Field(ge=1, le=2**31 - 1)]  # database ids; larger numbers are malformed, not 500s


class StrictCreate(BaseModel):
    """An input body whose unknown fields are refused, naming the closest known one (`labels_wnated`:
    did you mean 'labels_wanted'?) rather than silently dropped."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data):
        if isinstance(data, dict):
            try:
                check_keys(data, cls.model_fields)
            except InvalidInput as exc:
                # A custom error keeps the reply's `errors` plain JSON (a ValueError would sit in its ctx).
                raise PydanticCustomError("unknown_field", "{message}", {"message": str(exc)}) from None
        return data


class ResponsePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    text: str
    model: str
    model_version: str


class TaskPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: Literal["pairwise", "ranking", "rating", "edit", "binary"]
    prompt: str
    responses: list[ResponsePublic]
    objective: str | None
    is_gold: bool = Field(description="an onboarding question with a known answer")
    expires_at: datetime | None = Field(description="the reservation lapses then (UTC)")


class LabelCreate(StrictCreate):
    """One answer. Pairwise: `choice` (the preferred response id) and `strength`, or strength "tie" and
    no choice. Ranking: every response id, best first. Rating: 1-7. Edit: `edit_text`. Binary: `label`
    true (good) or false (bad), and optionally a `reason`."""

    task_id: Id
    client_request_id: str = Field(
        min_length=1,
        max_length=100,
        description="made once per answer; a retry with the same id is stored once",
    )
    choice: Id | None = None
    strength: Literal["much_better", "better", "slightly_better", "tie"] | None = None
    ranking: list[Id] | None = Field(default=None, max_length=20)
    rating: int | None = Field(default=None, ge=RATING_SCALE[0], le=RATING_SCALE[1])
    edit_text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    label: StrictBool | None = Field(default=None, description="binary: true = good, false = bad")
    reason: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS, description="binary: why")
    unsafe: bool = False
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)
    seconds: float | None = Field(default=None, ge=0, le=86_400)
    displayed_order: list[Id] | None = Field(default=None, max_length=20)


class LabelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    task_id: int
    client_request_id: str
    kind: str
    choice: int | None
    strength: str | None
    tie: bool
    ranking: list[int] | None
    rating: int | None
    edit_text: str | None
    label: bool | None
    reason: str | None
    unsafe: bool
    comment: str | None
    seconds: float | None
    displayed_order: list[int] | None
    created_at: datetime


class GoldPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    correct: bool
    expected: dict
    explanation: str


class SubmitPublic(BaseModel):
    label: LabelPublic
    created: bool = Field(description="false when this client_request_id was already stored")
    gold: GoldPublic | None = None


class SkipCreate(StrictCreate):
    reason: str = Field(min_length=1, max_length=MAX_COMMENT_CHARS)


class LabellerPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    role: str
    onboarded: bool
    flagged: bool
    active: bool = Field(description="false: the token and sessions are refused")
    quality: float | None = Field(
        default=None, description="estimated rationality on the target objective; null until estimated"
    )


class LabellerCreate(StrictCreate):
    name: str = Field(min_length=1, max_length=100)
    role: Literal["labeller", "admin"] = "labeller"


class LabellerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    active: StrictBool = Field(
        description="false refuses the labeller's token and sessions from the next request"
    )


class LabellerCreated(BaseModel):
    labeller: LabellerPublic
    token: str = Field(description="shown once; only its hash is stored")


class ResponseCreate(StrictCreate):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    model: str = Field(default="", max_length=200)
    model_version: str = Field(default="", max_length=200)


class GoldCreate(StrictCreate):
    answer: dict = Field(
        description='response indices, the one field of the kind: pairwise {"choice": 0} ({"choice": null} '
        'a tie), ranking {"ranking": [..]}, rating {"rating": n}, binary {"label": true}'
    )
    explanation: str = Field(default="", max_length=MAX_COMMENT_CHARS)


class CandidateCreate(StrictCreate):
    prompt: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    responses: list[ResponseCreate] = Field(min_length=1, max_length=9)
    kind: Literal["pairwise", "ranking", "rating", "edit", "binary"] = "pairwise"
    priority: float = Field(default=0.0, allow_inf_nan=False, strict=True)  # strict: true is not 1.0
    labels_wanted: int = Field(default=1, ge=1, le=100, strict=True)
    objective: str | None = Field(default=None, max_length=100)
    gold: GoldCreate | None = None


class TasksCreated(BaseModel):
    task_ids: list[int]
