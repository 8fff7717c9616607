"""Admin pages: the dashboard and export downloads (session + admin role)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request

from rlhf.feedback.dashboard import dashboard
from rlhf.web.deps import DbDep, PageAdminDep
from rlhf.web.routes.api_admin import jsonl_download
from rlhf.web.routes.pages import render

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/admin")
async def admin_page(request: Request, user: PageAdminDep, db: DbDep):
    return render(request, "admin.html", {"user": user, "d": await db.read(dashboard)})


@router.get("/admin/export/{kind}")
async def admin_export(
    request: Request,
    kind: Annotated[Literal["pairs", "rankings", "ratings", "binary"], Path()],
    _user: PageAdminDep,
    db: DbDep,
):
    return await jsonl_download(request, db, kind)
