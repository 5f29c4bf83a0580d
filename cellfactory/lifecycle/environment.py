"""Environmental monitoring read across the batches above it: the aseptic steps of batches that ran in a session's
room or cabinet while it was sampled (passed down to `environment.services.batch_links`, which opens the deviation
of an action-level excursion for every such batch), and the reason QA or
a technician records when a step has no monitoring result.

A step used a cabinet when it recorded the cabinet's equipment; it ran in a room when it recorded the equipment of
a device in that room. It overlapped the session when it started before the session ended and ended (or has not
yet) after the session started."""

from __future__ import annotations

import sqlalchemy as sa

from cellfactory.auth.models import User
from cellfactory.batches.models import Batch, BatchStep, StepEquipment
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.environment import services
from cellfactory.environment.commands import RecordMissingSample
from cellfactory.environment.models import Device, MissingSample, MonitoringSession
from cellfactory.extensions import db


def session_batch_links(session: MonitoringSession) -> list[services.BatchLink]:
    """The aseptic steps of batches at the session's site that used its cabinet (or, for a room session, a device
    of the room) while it was sampled, by batch number then step."""
    devices = sa.select(Device.equipment_id).where(Device.equipment_id.is_not(None))
    devices = devices.where(Device.id == session.device_id) if session.device_id is not None \
        else devices.where(Device.room_id == session.room_id)
    equipment_ids = [e for e in db.session.scalars(devices)]
    if not equipment_ids:
        return []
    rows = db.session.execute(
        sa.select(Batch.id, Batch.number, BatchStep.code, BatchStep.name)
        .join(BatchStep, BatchStep.batch_id == Batch.id)
        .join(StepEquipment, StepEquipment.step_id == BatchStep.id)
        .where(Batch.site_id == session.site_id, BatchStep.aseptic.is_(True), StepEquipment.voided_at.is_(None),
               StepEquipment.equipment_id.in_(equipment_ids), BatchStep.started_at.is_not(None),
               BatchStep.started_at <= session.ended_at,
               sa.or_(BatchStep.ended_at.is_(None), BatchStep.ended_at >= session.started_at))
        .distinct().order_by(Batch.number, BatchStep.code))
    return [services.BatchLink(batch_id, number, code, name) for batch_id, number, code, name in rows]


services.batch_links.find = session_batch_links


def record_missing_sample(actor: User, batch: Batch, command: RecordMissingSample) -> MissingSample:
    """Record why an aseptic step of the batch has no monitoring result."""
    step = next((s for s in batch.steps if s.code == command.step.upper()), None)
    if step is None or not step.aseptic:
        raise ValidationFailed(_("%(step)s is not an aseptic step of %(number)s.", step=command.step,
                                 number=batch.number), fields={"step": _("Not an aseptic step of this batch.")})
    return services.record_missing_sample(actor, batch.site_id, step.id, command.reason)

