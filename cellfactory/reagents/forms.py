"""Forms of the reagent pages: catalogue items (QA), lot receipt, QA release or rejection.

The forms only carry the fields; what each must hold is the command's (`reagents/commands.py`), so the page and
the API refuse the same input with the same words."""

from __future__ import annotations

import datetime as dt

from wtforms import DateField, SelectField, StringField, TextAreaField
from wtforms.validators import Optional

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _l
from cellfactory.reagents.models import LotStatus


class ItemForm(BaseForm):
    code = StringField(_l("Catalogue code"), validators=[Optional()],
                       render_kw={"autocapitalize": "characters", "autocomplete": "off", "maxlength": 40})
    name = StringField(_l("Name"), validators=[Optional()], render_kw={"maxlength": 200})
    supplier = StringField(_l("Supplier"), validators=[Optional()], render_kw={"maxlength": 200})
    category = StringField(_l("Category (medium, enzyme, supplement, disposable …)"), validators=[Optional()],
                           render_kw={"maxlength": 60})
    unit = StringField(_l("Unit of use"), default="mL", validators=[Optional()], render_kw={"maxlength": 20})


class LotForm(BaseForm):
    item = SelectField(_l("Catalogue item"), validators=[Optional()])
    lot_number = StringField(_l("Supplier's lot number"), validators=[Optional()],
                             render_kw={"autocomplete": "off", "data-scanner": True, "maxlength": 60})
    expiry_date = DateField(_l("Expiry date"), validators=[Optional()])
    coa_reference = StringField(_l("Certificate of analysis reference (needed before QA release)"),
                                validators=[Optional()], render_kw={"maxlength": 200})
    received_on = DateField(_l("Received on"), default=dt.date.today, validators=[Optional()])


DECISION_LABELS = {LotStatus.RELEASED: _l("Release for use (CoA reviewed)"), LotStatus.REJECTED: _l("Reject")}


class LotStatusForm(BaseForm):
    # The decisions offered are the ones the service allows from the lot's status (reagents.services.lot_decisions);
    # whatever is sent, the service decides.
    status = SelectField(_l("Decision"), choices=[], validate_choice=False)
    reason = TextAreaField(_l("Reason"), validators=[Optional()], render_kw={"maxlength": 2000})

    def offer(self, decisions: tuple[LotStatus, ...]) -> LotStatusForm:
        self.status.choices = [(status.value, str(DECISION_LABELS.get(status, status.value))) for status in decisions]
        return self
