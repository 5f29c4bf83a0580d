"""/metrics: the Prometheus text format, for a signed-in administrator or a scraper holding the metrics token."""

from __future__ import annotations

import hmac

from flask import current_app
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.wrappers import Response

from cellfactory.core.permissions import or_bearer_token, roles_required
from cellfactory.core.roles import Role
from cellfactory.operations import bp, metrics


def metrics_token_matches(token: str) -> bool:
    expected = current_app.config["CELLFACTORY"].metrics_token
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


@bp.route("/metrics", methods=["GET"], endpoint="metrics")
@roles_required(Role.ADMIN)
@or_bearer_token(metrics_token_matches)
def metrics_page() -> Response:
    return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})
