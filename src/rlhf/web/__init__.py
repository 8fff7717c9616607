"""The labelling web app: server-rendered pages for labellers and admins, and a JSON API under /api.

`create_app(WebSettings(db_url=...))` builds it; `rlhf label serve` runs it with uvicorn. It talks to
the feedback store only, never to training code (docs/labelling.md).
"""

from rlhf.web.app import create_app
from rlhf.web.settings import WebSettings

__all__ = ["WebSettings", "create_app"]
