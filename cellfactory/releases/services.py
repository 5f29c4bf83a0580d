"""After release: a late failing result (sterility read after a conditional release) alerts QA and the QP and
makes its deviation critical."""

from __future__ import annotations

from cellfactory.auth.models import Role, User
from cellfactory.batches.models import Batch
from cellfactory.deviations.models import Classification, Deviation, DeviationSource
from cellfactory.notifications.services import raise_alert
from cellfactory.qc.models import QcResult


def post_release_failure(actor: User, batch: Batch, result: QcResult, deviation: Deviation) -> None:
    """Within the caller's transaction: the deviation becomes critical and QA and the QP are alerted."""
    deviation.classification = Classification.CRITICAL
    deviation.source = DeviationSource.POST_RELEASE
    deviation.title = f"Failed after release: {result.spec_test.name} on {batch.number}"[:200]
    raise_alert(
        "post_release_failure",
        f"{result.spec_test.name} of batch {batch.number} ({batch.status.label}) is out of specification after "
        f"release: {result.value_text}. Deviation {deviation.number} (critical) is open. Check every unit issued "
        "and inform the treating physicians.",
        audiences={Role.QA, Role.QP}, site_ids=[batch.site_id])
