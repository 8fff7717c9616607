"""Admin pages: the dashboard and export downloads (session + admin role)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request

from rlhf.feedback.dashboard import dashboard
from rlhf.web.deps import PageAdminDep, StoreDep
from rlhf.web.routes.api_admin import jsonl_download
from rlhf.web.routes.pages import render

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/admin")
def admin_page(request: Request, user: PageAdminDep, store: StoreDep):
    return render(request, "admin.html", {"user": user, "d": dashboard(store)})


@router.get("/admin/export/{kind}")
def admin_export(
    kind: Annotated[Literal["pairs", "rankings", "ratings"], Path()], _user: PageAdminDep, store: StoreDep
):
    return jsonl_download(store, kind)
