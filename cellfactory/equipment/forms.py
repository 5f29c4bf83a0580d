"""Forms of the equipment pages: registration, calibration records, service status."""

from __future__ import annotations

from wtforms import DateField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from cellfactory.core.forms import BaseForm


class EquipmentForm(BaseForm):
    code = StringField("Code (as on the equipment's label)", validators=[DataRequired("Enter the code."),
                                                                        Length(max=40)],
                       render_kw={"autocapitalize": "characters", "autocomplete": "off"})
    name = StringField("Name", validators=[DataRequired("Enter the name."), Length(max=200)])
    kind = StringField("Kind (incubator, biosafety cabinet, centrifuge, cell counter, freezer …)",
                       validators=[DataRequired("Enter the kind."), Length(max=60)])
    calibration_due = DateField("Calibration / qualification due",
                                validators=[DataRequired("Enter the due date.")])


class CalibrationForm(BaseForm):
    reference = StringField("Certificate or report reference",
                            validators=[DataRequired("Enter the certificate or report reference."), Length(max=200)])
    next_due = DateField("Next calibration due", validators=[DataRequired("Enter the next due date.")])


class ServiceStatusForm(BaseForm):
    reason = TextAreaField("Reason", validators=[DataRequired("Give the reason."), Length(max=2000)])
