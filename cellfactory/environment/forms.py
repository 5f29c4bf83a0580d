"""Forms of the environmental monitoring pages. They carry the fields; what each must hold is the command's
(`environment/commands.py`), so the page and the API refuse the same input with the same words."""

from __future__ import annotations

from wtforms import IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import Optional

from cellfactory.batches.forms import LOCAL, SiteTimeField
from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _, _l
from cellfactory.environment.limits import CleanroomGrade, EmSampleType, RoomState
from cellfactory.signatures.forms import SigningForm


def _choices(enum_cls) -> list[tuple[str, str]]:
    return [("", _("Choose…"))] + [(member.value, member.label) for member in enum_cls]


class RoomForm(BaseForm):
    code = StringField(_l("Code"), validators=[Optional()], render_kw={"maxlength": 40, "autocapitalize": "characters"})
    name = StringField(_l("Name"), validators=[Optional()], render_kw={"maxlength": 200})
    grade = SelectField(_l("Grade"), validators=[Optional()], validate_choice=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.grade.choices = _choices(CleanroomGrade)


class DeviceForm(RoomForm):
    room = SelectField(_l("Room"), validators=[Optional()], validate_choice=False)
    equipment = StringField(_l("Equipment code (its equipment record, if any)"), validators=[Optional()],
                            render_kw={"maxlength": 40, "autocapitalize": "characters"})


class PointForm(BaseForm):
    room = SelectField(_l("Room"), validators=[Optional()], validate_choice=False)
    device = StringField(_l("Device code (when the point is in a device)"), validators=[Optional()],
                         render_kw={"maxlength": 40, "autocapitalize": "characters"})
    code = StringField(_l("Code"), validators=[Optional()], render_kw={"maxlength": 40, "autocapitalize": "characters"})
    description = StringField(_l("Where samples are taken"), validators=[Optional()], render_kw={"maxlength": 200})


class PlanForm(BaseForm):
    sample_type = SelectField(_l("Sample type"), validators=[Optional()], validate_choice=False)
    occupancy = SelectField(_l("At rest or in operation"), validators=[Optional()], validate_choice=False)
    frequency_days = IntegerField(_l("Every how many days"), validators=[Optional()],
                                  render_kw={"inputmode": "numeric"})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sample_type.choices = _choices(EmSampleType)
        self.occupancy.choices = _choices(RoomState)


class AlertLevelForm(SigningForm):
    grade = SelectField(_l("Grade"), validators=[Optional()], validate_choice=False)
    sample_type = SelectField(_l("Sample type"), validators=[Optional()], validate_choice=False)
    occupancy = SelectField(_l("At rest or in operation"), validators=[Optional()], validate_choice=False)
    level = IntegerField(_l("Alert level (below the action level)"), validators=[Optional()],
                         render_kw={"inputmode": "numeric"})
    reason = TextAreaField(_l("Reason"), validators=[Optional()], render_kw={"maxlength": 2000})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.grade.choices = _choices(CleanroomGrade)
        self.sample_type.choices = _choices(EmSampleType)
        self.occupancy.choices = _choices(RoomState)


class SessionForm(BaseForm):
    room = SelectField(_l("Room"), validators=[Optional()], validate_choice=False)
    device = SelectField(_l("Device (when sampling in one)"), validators=[Optional()], validate_choice=False)
    occupancy = SelectField(_l("At rest or in operation"), validators=[Optional()], validate_choice=False)
    started_at = SiteTimeField(_l("Sampling started (site time)"), format=LOCAL, validators=[Optional()])
    ended_at = SiteTimeField(_l("Sampling ended (site time)"), format=LOCAL, validators=[Optional()])
    plate_lot = StringField(_l("Plate lot"), validators=[Optional()], render_kw={"maxlength": 60})
    incubation_celsius = StringField(_l("Incubation temperature (°C)"), validators=[Optional()],
                                     render_kw={"maxlength": 20})
    incubation_days = IntegerField(_l("Incubation days"), validators=[Optional()], render_kw={"inputmode": "numeric"})
    notes = TextAreaField(_l("Notes"), validators=[Optional()], render_kw={"maxlength": 2000})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.occupancy.choices = _choices(RoomState)


class WorksheetForm(BaseForm):
    """The worksheet's CSRF token; its rows are read by their names (count-N, organism-N)."""


class ReviewForm(BaseForm):
    comment = TextAreaField(_l("Comment"), validators=[Optional()], render_kw={"maxlength": 2000})


class MissingSampleForm(BaseForm):
    step = SelectField(_l("Aseptic step"), validators=[Optional()], validate_choice=False)
    reason = TextAreaField(_l("Why no sample covers it"), validators=[Optional()], render_kw={"maxlength": 2000})
