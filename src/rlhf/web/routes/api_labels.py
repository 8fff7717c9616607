"""`/api/labels`: submit an answer (idempotent per client_request_id) and read your own labels."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from rlhf.feedback.store import FeedbackStore, LabelIn
from rlhf.web.deps import ApiLabeller, ApiToken, DbDep
from rlhf.web.guards import StrictJSONRoute
from rlhf.web.schemas import LabelCreate, LabellerPublic, LabelPublic, SubmitPublic

router = APIRouter(prefix="/api", tags=["labels"], route_class=StrictJSONRoute)


@router.post(
    "/labels", response_model=SubmitPublic, status_code=201, responses={200: {"description": "a retry"}}
)
async def submit_label(body: LabelCreate, token: ApiToken, db: DbDep, response: Response):
    """Store one label. 201 when stored; 200 with `created: false` when this client_request_id already was."""
    result = await db.submit_label(
        token, LabelIn(**body.model_dump())
    )  # the token checked in its transaction
    if not result.created:
        response.status_code = 200
    return SubmitPublic.model_validate(result, from_attributes=True)


@router.get("/labels", response_model=list[LabelPublic])
async def my_labels(
    labeller: ApiLabeller,
    db: DbDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
):
    """Your labels, newest first."""
    return [
        LabelPublic.model_validate(x)
        for x in await db.read(FeedbackStore.labels_of, labeller.id, limit, offset)
    ]


@router.get("/labels/{label_id}", response_model=LabelPublic)
async def my_label(label_id: Annotated[int, Path(ge=1, le=2**31 - 1)], labeller: ApiLabeller, db: DbDep):
    return LabelPublic.model_validate(await db.read(FeedbackStore.get_label, labeller.id, label_id))


@router.get("/me", response_model=LabellerPublic)
async def me(labeller: ApiLabeller):
    return LabellerPublic.model_validate(labeller)
