"""Operations: a request id and one JSON log line per request, and the Prometheus metrics at /metrics.

`requests.register(app)` (called from `cellfactory.web.register`) sets up the JSON logging of every
`cellfactory.*` logger, the request hooks and the app's metrics registry; `views` serves /metrics.
"""

from flask import Blueprint

bp = Blueprint("operations", __name__)
