"""What an instrument's failure touches, read across the domains above the equipment: the batches whose steps or
QC results used it in a window (passed to `equipment.services.impacted_batches`) and the one deviation QA opens
holding all of them (passed to `equipment.services.open_impact_deviation`). The equipment package, below batches, QC
and deviations, cannot read them itself."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from cellfactory.core.i18n import _
from cellfactory.equipment import services
from cellfactory.equipment.models import Equipment
from cellfactory.extensions import db


def batch_uses(equipment: Equipment, since: dt.datetime | None, until: dt.datetime | None) -> list[services.BatchUse]:
    """The uses of the equipment by batches in [since, until): steps that recorded it (not voided) and ran in the
    window, and QC results (not invalidated) measured in it (between sampling and entry)."""
    from cellfactory.batches.models import Batch, BatchStep, StepEquipment
    from cellfactory.qc.models import QcResult

    found: list[services.BatchUse] = []
    began = sa.func.coalesce(BatchStep.started_at, StepEquipment.created_at)
    steps = (sa.select(Batch.id, Batch.number, BatchStep.code, BatchStep.name, began, BatchStep.ended_at)
             .join(BatchStep, BatchStep.batch_id == Batch.id).join(StepEquipment, StepEquipment.step_id == BatchStep.id)
             .where(StepEquipment.equipment_id == equipment.id, StepEquipment.voided_at.is_(None)))
    if until is not None:
        steps = steps.where(began < until)
    if since is not None:
        steps = steps.where(sa.or_(BatchStep.ended_at.is_(None), BatchStep.ended_at >= since))
    for batch_id, number, code, name, at, _ended in db.session.execute(steps):
        found.append(services.BatchUse(batch_id, number, _("step %(code)s %(name)s", code=code, name=name), at))
    results = (sa.select(Batch.id, Batch.number, QcResult.sample_id, QcResult.method, QcResult.sampled_at)
               .join(QcResult, QcResult.batch_id == Batch.id)
               .where(QcResult.equipment_id == equipment.id, QcResult.invalidated_at.is_(None)))
    if until is not None:
        results = results.where(QcResult.sampled_at < until)
    if since is not None:
        results = results.where(QcResult.created_at >= since)
    for batch_id, number, sample, method, at in db.session.execute(results):
        found.append(services.BatchUse(batch_id, number, _("QC result of sample %(sample)s (%(method)s)",
                                                           sample=sample, method=method), at))
    return found


def open_batch_deviation(actor, site, batch_ids: list[int], title: str, description: str, classification: str) -> str:
    """Open one deviation holding the batches in the caller's transaction (the deviations' own service); its
    number."""
    from cellfactory.deviations.models import Classification, DeviationSource
    from cellfactory.deviations.services import create_deviation

    return create_deviation(actor, site, title=title, description=description,
                            classification=Classification(classification), source=DeviationSource.EQUIPMENT,
                            batch_id=batch_ids[0], linked_batch_ids=batch_ids[1:]).number
