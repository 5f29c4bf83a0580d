"""Cleanroom grades, sample types and the default action limits of EU GMP Annex 1 (2022), with the source of each;
and the one rule that judges a count against an action limit and a site's alert level. Pure: no database.

Viable limits: Annex 1 (2022) Table 6, "Maximum action limits for viable particle contamination" (grade A: no
growth). Total particles: Annex 1 (2022) Table 5, "Maximum permitted total particle concentration" per m³, at rest
and in operation."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from cellfactory.core.i18n import N_, _, lazy_pgettext


class CleanroomGrade(enum.StrEnum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"

    @property
    def label(self) -> str:
        return _("grade %(grade)s", grade=self.value)


class RoomState(enum.StrEnum):
    AT_REST = "at_rest"
    IN_OPERATION = "in_operation"

    @property
    def label(self) -> str:
        return str(OCCUPANCY_WORDS[self])


OCCUPANCY_WORDS = {RoomState.AT_REST: lazy_pgettext("cleanroom state", "at rest"),
                   RoomState.IN_OPERATION: lazy_pgettext("cleanroom state", "in operation")}


class EmSampleType(enum.StrEnum):
    ACTIVE_AIR = "active_air"
    SETTLE_PLATE = "settle_plate"
    CONTACT_PLATE = "contact_plate"
    GLOVE_PRINT = "glove_print"
    PARTICLES_0_5 = "particles_0_5"
    PARTICLES_5 = "particles_5"

    @property
    def label(self) -> str:
        return str(SAMPLE_WORDS[self])

    @property
    def unit(self) -> str:
        return str(SAMPLE_UNITS[self])

    @property
    def viable(self) -> bool:
        return self not in (EmSampleType.PARTICLES_0_5, EmSampleType.PARTICLES_5)


SAMPLE_WORDS = {
    EmSampleType.ACTIVE_AIR: lazy_pgettext("EM sample type", "active air"),
    EmSampleType.SETTLE_PLATE: lazy_pgettext("EM sample type", "settle plate"),
    EmSampleType.CONTACT_PLATE: lazy_pgettext("EM sample type", "contact plate"),
    EmSampleType.GLOVE_PRINT: lazy_pgettext("EM sample type", "glove print"),
    EmSampleType.PARTICLES_0_5: lazy_pgettext("EM sample type", "particles ≥0.5 µm"),
    EmSampleType.PARTICLES_5: lazy_pgettext("EM sample type", "particles ≥5 µm"),
}
SAMPLE_UNITS = {
    EmSampleType.ACTIVE_AIR: lazy_pgettext("EM unit", "CFU/m³"),
    EmSampleType.SETTLE_PLATE: lazy_pgettext("EM unit", "CFU/4 h"),
    EmSampleType.CONTACT_PLATE: lazy_pgettext("EM unit", "CFU/plate"),
    EmSampleType.GLOVE_PRINT: lazy_pgettext("EM unit", "CFU/glove"),
    EmSampleType.PARTICLES_0_5: lazy_pgettext("EM unit", "particles/m³"),
    EmSampleType.PARTICLES_5: lazy_pgettext("EM unit", "particles/m³"),
}


class LimitKind(enum.StrEnum):
    VALUE = "value"
    NO_GROWTH = "no_growth"  # grade A viable: any growth is an action-level excursion
    NOT_SPECIFIED = "not_specified"  # Annex 1 sets none (≥5 µm at rest in A and B; glove prints in C and D)
    NOT_PREDETERMINED = "not_predetermined"  # grade D in operation: set by the site's risk assessment


@dataclass(frozen=True)
class ActionLimit:
    kind: LimitKind
    value: int | None
    source: str

    def said(self) -> str:
        if self.kind == LimitKind.VALUE:
            return f"{self.value:,}".replace(",", " ")
        return str(LIMIT_WORDS[self.kind])


LIMIT_WORDS = {LimitKind.NO_GROWTH: lazy_pgettext("EM limit", "no growth"),
               LimitKind.NOT_SPECIFIED: lazy_pgettext("EM limit", "not specified"),
               LimitKind.NOT_PREDETERMINED: lazy_pgettext("EM limit", "not predetermined"),
               LimitKind.VALUE: lazy_pgettext("EM limit", "value")}

VIABLE_SOURCE = "EU GMP Annex 1 (2022), Table 6"
PARTICLE_SOURCE = "EU GMP Annex 1 (2022), Table 5"

_NO, _NS, _NP = LimitKind.NO_GROWTH, LimitKind.NOT_SPECIFIED, LimitKind.NOT_PREDETERMINED
_G, _T, _S = CleanroomGrade, EmSampleType, RoomState
# Viable action limits, Table 6: the same at rest and in operation.
_VIABLE: dict[CleanroomGrade, dict[EmSampleType, int | LimitKind]] = {
    _G.A: {_T.ACTIVE_AIR: _NO, _T.SETTLE_PLATE: _NO, _T.CONTACT_PLATE: _NO, _T.GLOVE_PRINT: _NO},
    _G.B: {_T.ACTIVE_AIR: 10, _T.SETTLE_PLATE: 5, _T.CONTACT_PLATE: 5, _T.GLOVE_PRINT: 5},
    _G.C: {_T.ACTIVE_AIR: 100, _T.SETTLE_PLATE: 50, _T.CONTACT_PLATE: 25, _T.GLOVE_PRINT: _NS},
    _G.D: {_T.ACTIVE_AIR: 200, _T.SETTLE_PLATE: 100, _T.CONTACT_PLATE: 50, _T.GLOVE_PRINT: _NS},
}
# Total particles per m³, Table 5.
_PARTICLES: dict[tuple[RoomState, EmSampleType], dict[CleanroomGrade, int | LimitKind]] = {
    (_S.AT_REST, _T.PARTICLES_0_5): {_G.A: 3_520, _G.B: 3_520, _G.C: 352_000, _G.D: 3_520_000},
    (_S.IN_OPERATION, _T.PARTICLES_0_5): {_G.A: 3_520, _G.B: 352_000, _G.C: 3_520_000, _G.D: _NP},
    (_S.AT_REST, _T.PARTICLES_5): {_G.A: _NS, _G.B: _NS, _G.C: 2_930, _G.D: 29_300},
    (_S.IN_OPERATION, _T.PARTICLES_5): {_G.A: 29, _G.B: 2_930, _G.C: 29_300, _G.D: _NP},
}


def action_limit(grade: CleanroomGrade, sample_type: EmSampleType, occupancy: RoomState) -> ActionLimit:
    """The default action limit of Annex 1 (2022) for a sample of this type in a zone of this grade and state."""
    if sample_type.viable:
        entry, source = _VIABLE[grade][sample_type], VIABLE_SOURCE
    else:
        entry, source = _PARTICLES[(occupancy, sample_type)][grade], PARTICLE_SOURCE
    if isinstance(entry, LimitKind):
        return ActionLimit(entry, None, source)
    return ActionLimit(LimitKind.VALUE, entry, source)


class EmVerdict(enum.StrEnum):
    WITHIN = "within"
    ALERT = "alert"
    ACTION = "action"

    @property
    def label(self) -> str:
        return str(VERDICT_WORDS[self])


VERDICT_WORDS = {EmVerdict.WITHIN: lazy_pgettext("EM verdict", "within limits"),
                 EmVerdict.ALERT: lazy_pgettext("EM verdict", "alert level exceeded"),
                 EmVerdict.ACTION: lazy_pgettext("EM verdict", "action level exceeded")}


def judge(count: int, limit: ActionLimit, alert: Decimal | int | None) -> EmVerdict:
    """The verdict of one count: above the action limit (any growth where it is "no growth") is action; above the
    site's alert level is alert; else within. A limit Annex 1 does not set judges against the alert level only."""
    if limit.kind == LimitKind.NO_GROWTH:
        return EmVerdict.ACTION if count > 0 else EmVerdict.WITHIN
    if limit.kind == LimitKind.VALUE and count > limit.value:
        return EmVerdict.ACTION
    if alert is not None and count > alert:
        return EmVerdict.ALERT
    return EmVerdict.WITHIN


ALERT_AT_OR_ABOVE_ACTION = N_("The alert level must be below the action level (%(limit)s).")
ALERT_NO_GROWTH = N_("In grade A the action level is no growth: any growth is an action-level excursion, so there "
                     "is no alert level to set.")
ALERT_NO_LIMIT = N_("Annex 1 sets no action level here: there is nothing for an alert level to stay below.")


def alert_problem(limit: ActionLimit, level: Decimal) -> str | None:
    """Why a site may not set this alert level below this action limit (None when it may)."""
    if limit.kind == LimitKind.NO_GROWTH:
        return _(ALERT_NO_GROWTH)
    if limit.kind != LimitKind.VALUE:
        return _(ALERT_NO_LIMIT)
    if level >= limit.value:
        return _(ALERT_AT_OR_ABOVE_ACTION, limit=limit.said())
    return None
