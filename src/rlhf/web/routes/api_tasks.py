"""`/api/tasks`: the caller's next task, a task they hold, and skipping it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from rlhf.feedback.store import FeedbackStore
from rlhf.web.deps import ApiLabeller, ApiToken, DbDep
from rlhf.web.guards import StrictJSONRoute
from rlhf.web.schemas import SkipCreate, TaskPublic

router = APIRouter(prefix="/api/tasks", tags=["tasks"], route_class=StrictJSONRoute)
TaskId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/next", response_model=TaskPublic, responses={204: {"description": "no task for you now"}})
async def next_task(token: ApiToken, db: DbDep):
    """The task you hold, else the next one (onboarding gold questions first); reserved for you."""
    task = await db.next_task(token)  # the token is checked in the store's transaction
    if task is None:
        return Response(status_code=204)
    return TaskPublic.model_validate(task)


@router.get("/{task_id}", response_model=TaskPublic)
async def get_task(task_id: TaskId, labeller: ApiLabeller, db: DbDep):
    return TaskPublic.model_validate(await db.read(FeedbackStore.get_task, labeller.id, task_id))


@router.post("/{task_id}/skip", status_code=204)
async def skip_task(task_id: TaskId, body: SkipCreate, labeller: ApiLabeller, db: DbDep) -> None:
    """Give a held task back (with a reason); it goes to other labellers."""
    await db.skip(labeller.id, task_id, body.reason)
