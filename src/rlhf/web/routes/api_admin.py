"""Admin-only API: export labels, dashboard figures, push tasks (the active-learning queue), manage labellers
(add, deactivate or reactivate, rotate a token)."""

from __future__ import annotations

import itertools
import json
import threading
from typing import Annotated, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from rlhf.feedback.dashboard import dashboard
from rlhf.feedback.exchange import EXPORT_CHUNK, export_rows, refuse_repeats
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
ExportKind = Literal["pairs", "rankings", "ratings", "binary"]
MAX_PUSH = 1_000  # tasks in one POST /api/admin/tasks


async def jsonl_download(request: Request, db: DbDep, kind: str) -> StreamingResponse:
    """The labels as JSON lines, streamed from one read transaction in chunks (memory stays flat). An
    export reads every label, so a worker runs one at a time; another meanwhile is a 429."""
    slot: threading.Lock = request.app.state.exports
    if not slot.acquire(blocking=False):
        raise HTTPException(
            429, "an export is already running; try again when it has finished", {"Retry-After": "10"}
        )
    released = []

    def release() -> None:  # once, whichever comes first: the end, an error, a dropped download
        if not released:
            released.append(True)
            slot.release()

    def lines():
        try:
            chunk = []
            for row in export_rows(db.store, kind):
                chunk.append(json.dumps(row, ensure_ascii=False) + "\n")
                if len(chunk) == EXPORT_CHUNK:
                    yield "".join(chunk)
                    chunk = []
            yield "".join(chunk)
        finally:
            release()

    stream = lines()
    try:  # started here, so its `finally` runs however the download ends (closed, or collected)
        first = await run_in_threadpool(next, stream)
    except BaseException:
        release()
        raise
    # Starlette runs a plain generator in its thread pool, a chunk a step, off the database threads.
    return StreamingResponse(
        itertools.chain([first], stream),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{kind}.jsonl"'},
        background=BackgroundTask(release),
    )


@router.get("/export", response_class=StreamingResponse)
async def export(
    request: Request, _admin: ApiAdmin, db: DbDep, kind: Annotated[ExportKind, Query()] = "pairs"
):
    """Labels as a preference file (JSONL) that `rlhf.data.load_preferences` and `rlhf reward train` read."""
    return await jsonl_download(request, db, kind)


@router.get("/admin/dashboard")
async def admin_dashboard(_admin: ApiAdmin, db: DbDep) -> dict:
    return await db.read(dashboard)


@router.post("/admin/tasks", response_model=TasksCreated, status_code=201)
async def push_tasks(
    body: Annotated[list[CandidateCreate], Body(max_length=MAX_PUSH)], _admin: ApiAdmin, db: DbDep
):
    """Add tasks with priorities (higher first); gold answers use response indices. Every task is
    checked before any is stored; the same task twice in one request is refused (`422`). At most
    1,000 tasks a request: the database's write lock is held while they are stored, and labelling
    waits meanwhile (about a millisecond a task on SQLite); send more in several requests."""
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
