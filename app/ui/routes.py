"""The console's routes: pages under /ui/, its static files, /docs and the redirect of `/`.
create_app (app/http.py) serves them beside the API's ROUTES."""

from __future__ import annotations

from starlette.routing import Route

from app.ui import assets
from app.ui.views import dead, docs, enqueue, jobs, overview, signin

ROUTES = [
    Route("/", docs.home, methods=["GET"]),
    Route("/docs", docs.docs, methods=["GET"]),
    Route("/ui/", overview.overview, methods=["GET"]),
    Route("/ui/live", overview.live, methods=["GET"]),
    Route("/ui/signin", signin.sign_in_form, methods=["GET"]),
    Route("/ui/signin", signin.sign_in, methods=["POST"]),
    Route("/ui/signout", signin.sign_out, methods=["POST"]),
    Route("/ui/queues/{name}/pause", overview.pause, methods=["POST"]),
    Route("/ui/queues/{name}/resume", overview.resume, methods=["POST"]),
    Route("/ui/jobs", jobs.jobs, methods=["GET"]),
    Route("/ui/jobs/{job_id}", jobs.job, methods=["GET"]),
    Route("/ui/jobs/{job_id}/retry", jobs.retry, methods=["POST"]),
    Route("/ui/jobs/{job_id}/delete", jobs.delete, methods=["POST"]),
    Route("/ui/jobs/{job_id}/cancel", jobs.cancel_job, methods=["POST"]),
    Route("/ui/dead", dead.dead_letters, methods=["GET"]),
    Route("/ui/dead/confirm", dead.confirm, methods=["POST"]),
    Route("/ui/bulk", dead.run_bulk, methods=["POST"]),
    Route("/ui/bulk/{operation}", dead.bulk_progress, methods=["GET"]),
    Route("/ui/enqueue", enqueue.enqueue_form, methods=["GET"]),
    Route("/ui/enqueue", enqueue.enqueue, methods=["POST"]),
    Route("/ui/static/{digest}/{path:path}", assets.static, methods=["GET"]),
]
