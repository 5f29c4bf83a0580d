"""Forms of the equipment pages: registration, calibration records, service status.

The forms only carry the fields; what each must hold is the command's (`equipment/commands.py`), so the page and
the API refuse the same input with the same words."""

from __future__ import annotations

from flask_wtf.file import FileField
from wtforms import DateField, SelectField, StringField, TextAreaField
from wtforms.validators import Optional

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _, _l, pgettext
from cellfactory.equipment.models import EventKind, EventResult


class EquipmentForm(BaseForm):
    code = StringField(_l("Code (as on the equipment's label)"), validators=[Optional()],
                       render_kw={"autocapitalize": "characters", "autocomplete": "off", "maxlength": 40})
    name = StringField(_l("Name"), validators=[Optional()], render_kw={"maxlength": 200})
    kind = StringField(_l("Kind (incubator, biosafety cabinet, centrifuge, cell counter, freezer …)"),
                       validators=[Optional()], render_kw={"maxlength": 60})
    calibration_due = DateField(_l("Calibration / qualification due"), validators=[Optional()])


class CalibrationForm(BaseForm):
    reference = StringField(_l("Certificate or report reference"), validators=[Optional()],
                            render_kw={"maxlength": 200})
    next_due = DateField(_l("Next calibration due"), validators=[Optional()])


class ServiceStatusForm(BaseForm):
    reason = TextAreaField(_l("Reason"), validators=[Optional()], render_kw={"maxlength": 2000})


class EventForm(BaseForm):
    kind = SelectField(_l("Kind of event"), validators=[Optional()], validate_choice=False)
    performed_on = DateField(_l("Performed on"), validators=[Optional()])
    result = SelectField(_l("Result"), validators=[Optional()], validate_choice=False)
    next_due = DateField(_l("Next due (passing calibration; maintenance, OQ and PQ if planned)"),
                         validators=[Optional()])
    reference = StringField(_l("Certificate or report reference"), validators=[Optional()],
                            render_kw={"maxlength": 200})
    notes = TextAreaField(_l("Notes"), validators=[Optional()], render_kw={"maxlength": 2000})
    certificate = FileField(_l("Certificate (PDF, at most 10 MB)"), render_kw={"accept": "application/pdf"})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kind.choices = [("", _("Choose…"))] + [(k.value, k.label) for k in EventKind]
        self.result.choices = [("", _("Choose…"))] + [(r.value, r.label) for r in EventResult]


class VoidEventForm(BaseForm):
    reason = TextAreaField(_l("Reason"), validators=[Optional()], render_kw={"maxlength": 2000})


class ImpactDeviationForm(BaseForm):
    title = StringField(_l("Title"), validators=[Optional()], render_kw={"maxlength": 200})
    classification = SelectField(_l("Classification"), validators=[Optional()], validate_choice=False)
    description = TextAreaField(_l("Further description"), validators=[Optional()], render_kw={"maxlength": 6000})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.classification.choices = [("", _("Choose…")), ("minor", pgettext("deviation class", "minor")),
                                       ("major", pgettext("deviation class", "major")),
                                       ("critical", pgettext("deviation class", "critical"))]
