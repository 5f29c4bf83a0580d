"""Forms of the equipment pages: registration, calibration records, service status.

The forms only carry the fields; what each must hold is the command's (`equipment/commands.py`), so the page and
the API refuse the same input with the same words."""

from __future__ import annotations

from wtforms import DateField, StringField, TextAreaField
from wtforms.validators import Optional

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _l


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
