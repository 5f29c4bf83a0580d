"""Forms of the reagent pages: catalogue items (QA), lot receipt, QA release or rejection."""

from __future__ import annotations

import datetime as dt

from wtforms import DateField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from cellfactory.core.forms import BaseForm
from cellfactory.reagents.models import LotStatus


class ItemForm(BaseForm):
    code = StringField("Catalogue code", validators=[DataRequired("Enter the code."), Length(max=40)],
                       render_kw={"autocapitalize": "characters", "autocomplete": "off"})
    name = StringField("Name", validators=[DataRequired("Enter the name."), Length(max=200)])
    supplier = StringField("Supplier", validators=[DataRequired("Enter the supplier."), Length(max=200)])
    category = StringField("Category (medium, enzyme, supplement, disposable …)",
                           validators=[DataRequired("Enter the category."), Length(max=60)])
    unit = StringField("Unit of use", default="mL", validators=[Optional(), Length(max=20)])


class LotForm(BaseForm):
    item = SelectField("Catalogue item", validators=[DataRequired("Choose the catalogue item.")])
    lot_number = StringField("Supplier's lot number", validators=[DataRequired("Enter the lot number."),
                                                                  Length(max=60)],
                             render_kw={"autocomplete": "off", "data-scanner": True})
    expiry_date = DateField("Expiry date", validators=[DataRequired("Enter the expiry date.")])
    coa_reference = StringField("Certificate of analysis reference (needed before QA release)",
                                validators=[Optional(), Length(max=200)])
    received_on = DateField("Received on", default=dt.date.today, validators=[DataRequired("Enter the date.")])


DECISION_LABELS = {LotStatus.RELEASED: "Release for use (CoA reviewed)", LotStatus.REJECTED: "Reject"}


class LotStatusForm(BaseForm):
    # The decisions offered are the ones the service allows from the lot's status (reagents.services.lot_decisions);
    # whatever is sent, the service decides.
    status = SelectField("Decision", choices=[], validate_choice=False)
    reason = TextAreaField("Reason", validators=[DataRequired("Give the reason for the decision."),
                                                 Length(max=2000)])

    def offer(self, decisions: tuple[LotStatus, ...]) -> LotStatusForm:
        self.status.choices = [(status.value, DECISION_LABELS.get(status, status.value)) for status in decisions]
        return self
