"""Admin-only API: export labels, dashboard figures, push tasks (the active-learning queue), add labellers."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from rlhf.feedback.dashboard import dashboard
from rlhf.feedback.exchange import export_rows, refuse_repeats
from rlhf.feedback.store import Candidate, ResponseIn
from rlhf.web.deps import ApiAdmin, StoreDep
from rlhf.web.schemas import CandidateCreate, LabellerCreate, LabellerCreated, LabellerPublic, TasksCreated

router = APIRouter(prefix="/api", tags=["admin"])
ExportKind = Literal["pairs", "rankings", "ratings"]


def jsonl_download(store, kind: str) -> StreamingResponse:
    # Rows are built inside one read transaction, then streamed as JSON lines.
    rows = list(export_rows(store, kind))
    body = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return StreamingResponse(
        body,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{kind}.jsonl"'},
    )


@router.get("/export", response_class=StreamingResponse)
def export(_admin: ApiAdmin, store: StoreDep, kind: Annotated[ExportKind, Query()] = "pairs"):
    """Labels as a preference file (JSONL) that `rlhf.data.load_preferences` and `rlhf reward train` read."""
    return jsonl_download(store, kind)


@router.get("/admin/dashboard")
def admin_dashboard(_admin: ApiAdmin, store: StoreDep) -> dict:
    return dashboard(store)


@router.post("/admin/tasks", response_model=TasksCreated, status_code=201)
def push_tasks(body: list[CandidateCreate], _admin: ApiAdmin, store: StoreDep):
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
    return TasksCreated(task_ids=store.push_candidates(candidates))


@router.post("/admin/labellers", response_model=LabellerCreated, status_code=201)
def add_labeller(body: LabellerCreate, _admin: ApiAdmin, store: StoreDep):
    labeller, token = store.add_labeller(body.name, body.role)
    return LabellerCreated(labeller=LabellerPublic.model_validate(labeller), token=token)
