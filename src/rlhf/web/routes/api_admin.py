"""Admin-only API: export labels, dashboard figures, push tasks (the active-learning queue), manage labellers
(add, deactivate or reactivate, rotate a token)."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import StreamingResponse

from rlhf.feedback.dashboard import dashboard
from rlhf.feedback.exchange import export_rows, refuse_repeats
from rlhf.feedback.store import Candidate, FeedbackStore, ResponseIn
from rlhf.web.deps import ApiAdmin, DbDep
from rlhf.web.guards import StrictJSONRoute
from rlhf.web.schemas import (
    CandidateCreate,
    Id,
    LabellerCreate,
    LabellerCreated,
    LabellerPublic,
    LabellerUpdate,
    TasksCreated,
)

router = APIRouter(prefix="/api", tags=["admin"], route_class=StrictJSONRoute)
ExportKind = Literal["pairs", "rankings", "ratings"]


async def jsonl_download(db: DbDep, kind: str) -> StreamingResponse:
    # Rows are built inside one read transaction, then streamed as JSON lines.
    rows = await db.read(lambda store: list(export_rows(store, kind)))
    body = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return StreamingResponse(
        body,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{kind}.jsonl"'},
    )


@router.get("/export", response_class=StreamingResponse)
async def export(_admin: ApiAdmin, db: DbDep, kind: Annotated[ExportKind, Query()] = "pairs"):
    """Labels as a preference file (JSONL) that `rlhf.data.load_preferences` and `rlhf reward train` read."""
    return await jsonl_download(db, kind)


@router.get("/admin/dashboard")
async def admin_dashboard(_admin: ApiAdmin, db: DbDep) -> dict:
    return await db.read(dashboard)


@router.post("/admin/tasks", response_model=TasksCreated, status_code=201)
async def push_tasks(body: list[CandidateCreate], _admin: ApiAdmin, db: DbDep):
    """Add tasks with priorities (higher first); gold answers use response indices. Every task is
    checked before any is stored; the same task twice in one request is refused (`422`)."""
    candidates = [
        Candidate(
            prompt=c.prompt,
            responses=[ResponseIn(r.text, r.model, r.model_version) for r in c.responses],
            kind=c.kind,
            priority=c.priority,
            labels_wanted=c.labels_wanted,
            objective=c.objective,
            gold_answer=c.gold.answer if c.gold else None,
            explanation=c.gold.explanation if c.gold else "",
        )
        for c in body
    ]
    refuse_repeats(candidates, [f"candidate {i}" for i in range(len(candidates))])
    return TasksCreated(task_ids=await db.push_candidates(candidates))


@router.post("/admin/labellers", response_model=LabellerCreated, status_code=201)
async def add_labeller(body: LabellerCreate, _admin: ApiAdmin, db: DbDep):
    labeller, token = await db.add_labeller(body.name, body.role)
    return LabellerCreated(labeller=LabellerPublic.model_validate(labeller), token=token)


@router.get("/admin/labellers", response_model=list[LabellerPublic])
async def list_labellers(_admin: ApiAdmin, db: DbDep):
    """Every account, active or not, by name."""
    return [LabellerPublic.model_validate(x) for x in await db.read(FeedbackStore.labellers)]


@router.patch("/admin/labellers/{labeller_id}", response_model=LabellerPublic)
async def update_labeller(
    labeller_id: Annotated[Id, Path()], body: LabellerUpdate, admin: ApiAdmin, db: DbDep
):
    """Deactivate (`{"active": false}`) or reactivate an account; effective from its next request.
    Deactivating ends its sessions and gives its tasks back to the queue. An admin cannot deactivate
    themselves (409), so the API always keeps the admin who could undo it."""
    if not body.active and labeller_id == admin.id:
        raise HTTPException(409, "you cannot deactivate your own account; ask another admin or use the CLI")
    return LabellerPublic.model_validate(await db.set_active(labeller_id, body.active))


@router.post("/admin/labellers/{labeller_id}/token", response_model=LabellerCreated)
async def rotate_token(labeller_id: Annotated[Id, Path()], _admin: ApiAdmin, db: DbDep):
    """A new token for the labeller, shown once; the old token and its sessions stop working."""
    labeller, token = await db.rotate_token(labeller_id)
    return LabellerCreated(labeller=LabellerPublic.model_validate(labeller), token=token)
