"""Forms of the batch pages: start a batch, enter a step (or a passage), verify it, move the batch on.

The forms only carry what the technician types; every rule (lots, equipment, limits, reasons, who may
do what) is checked by the services, whose field errors are shown next to these fields.
"""

from __future__ import annotations

import datetime as dt

from wtforms import (
    BooleanField,
    DateTimeLocalField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from cellfactory.core.errors import DomainError
from cellfactory.core.forms import ROW_FIELD, BaseForm
from cellfactory.core.i18n import _l
from cellfactory.signatures.forms import SigningForm

LOCAL = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
REAGENT_ROWS = 3
MAX_REAGENT_ROWS = 12
# A gloved hand on a tablet: the number pad for counts, no autocorrection of codes.
NUMBER = {"inputmode": "decimal", "autocomplete": "off"}
COUNT = {"inputmode": "numeric", "autocomplete": "off"}
DIN_INPUT = {"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false", "enterkeyhint": "next",
             # static/js/scanner.js: the scanner's closing Enter moves on to the next field, it does not submit
             "data-scanner": True}


class SiteTimeField(DateTimeLocalField):
    """A datetime-local input in the site's time; shows seconds only when the stored time has them,
    so that re-saving a form never shifts a time by accident."""

    def _value(self) -> str:
        if self.raw_data:
            return " ".join(self.raw_data)
        if self.data is None:
            return ""
        return self.data.strftime(LOCAL[1] if self.data.second else LOCAL[0])


class StartBatchForm(BaseForm):
    product = SelectField(_l("Product"), validators=[DataRequired(_l("Choose the product."))])
    din = StringField(_l("DIN of the accepted source material: scan the barcode or type the DIN"),
                      validators=[Optional(), Length(max=40)], render_kw={**DIN_INPUT, "autofocus": True})
    din_2 = StringField(_l("Second source material (only when the batch pools several)"),
                        validators=[Optional(), Length(max=40)], render_kw=DIN_INPUT)
    din_3 = StringField(_l("Third source material"), validators=[Optional(), Length(max=40)], render_kw=DIN_INPUT)
    bank = SelectField(_l("The batch produces"), choices=[
        ("product", _l("Units for patients")), ("master", _l("A master cell bank (MCB), from source material")),
        ("working", _l("A working cell bank (WCB), from a master bank vial"))], default="product")
    bank_unit = StringField(_l("Or the bank vial it starts from: scan or type DIN-product code-division"),
                            validators=[Optional(), Length(max=40)],
                            render_kw={"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"})
    started_at = SiteTimeField(_l("Started (site time), only if not now"), format=LOCAL, validators=[Optional()])
    # Autologous and directed products only: whom the batch is made for (the service decides which applies).
    recipient_code = StringField(_l("Recipient code (pseudonymised; autologous or directed batches only)"),
                                 validators=[Optional(), Length(max=40)],
                                 render_kw={"autocomplete": "off", "autocapitalize": "characters",
                                            "spellcheck": "false"})
    recipient_trial_code = StringField(_l("Recipient's clinical trial code (autologous or directed batches only)"),
                                       validators=[Optional(), Length(max=40)], render_kw={"autocomplete": "off"})

    DIN_FIELDS = ("din", "din_2", "din_3")


class ReagentRowForm(Form):
    """One reagent lot used in the step: the lot, how much, in which unit (empty unit: the item's unit)."""

    lot_id = SelectField(_l("Reagent lot"), choices=[], validate_choice=False)
    quantity = StringField(_l("Quantity"), validators=[Optional(), Length(max=20)], render_kw=NUMBER)
    unit = StringField(_l("Unit"), validators=[Optional(), Length(max=20)], render_kw={"autocomplete": "off"})


class EntryForm(BaseForm):
    """What every step records; passages add their counts (PassageForm), plain steps their times (StepForm)."""

    version = HiddenField()
    equipment = SelectMultipleField(_l("Equipment used"), choices=[], validate_choice=False,
                                    widget=ListWidget(prefix_label=False), option_widget=CheckboxInput())
    reagents = FieldList(FormField(ReagentRowForm), _l("Reagent lots used"), min_entries=REAGENT_ROWS,
                         max_entries=MAX_REAGENT_ROWS)
    observations = TextAreaField(_l("Observations"), validators=[Optional(), Length(max=4000)])
    deviation_reference = StringField(_l("Deviation number (only when a deviation covers this step)"),
                                      validators=[Optional(), Length(max=40)],
                                      render_kw={"autocomplete": "off", "autocapitalize": "characters"})
    reason = TextAreaField(_l("Reason for the correction"), validators=[Optional(), Length(max=2000)])

    TIME_FIELDS: tuple[str, ...] = ()

    def _filled_rows(self) -> list[int]:
        """The page's reagent rows that hold something, in order: the uses `entries` hands to the command."""
        return [index for index, row in enumerate(self.reagents)
                if row.lot_id.data or (row.quantity.data or "").strip()]

    def on_rows(self, error: DomainError) -> DomainError:
        """The refusal with each use's error named by the page's row (`reagents[3].quantity`, the fourth row,
        when the empty rows before it were not sent)."""
        rows = self._filled_rows()

        def renamed(name: str) -> str:
            match = ROW_FIELD.fullmatch(name)
            if match is None or match["list"] != "reagents" or int(match["index"]) >= len(rows):
                return name
            return f"reagents[{rows[int(match['index'])]}].{match['field']}"

        error.fields = {renamed(name): message for name, message in error.fields.items()}
        return error

    def entries(self) -> dict:
        """The entries as typed, for `RecordStep.from_entries`: times as the site's (naive) local times."""
        data: dict = {
            "equipment": list(self.equipment.data or []),
            "reagents": [{"lot_id": row.lot_id.data, "quantity": (row.quantity.data or "").strip(),
                          "unit": (row.unit.data or "").strip()}
                         for row in self.reagents if row.lot_id.data or (row.quantity.data or "").strip()],
            # Browsers send a textarea's line breaks as CRLF: an unchanged text must stay unchanged.
            "observations": (self.observations.data or "").replace("\r\n", "\n"),
            "deviation_reference": self.deviation_reference.data or "",
        }
        for name in self.TIME_FIELDS:
            value: dt.datetime | None = self[name].data
            data[name] = value
        return data


class StepForm(EntryForm):
    started_at = SiteTimeField(_l("Started (site time)"), format=LOCAL, validators=[Optional()])
    ended_at = SiteTimeField(_l("Ended (site time): leave empty while the step is still running"), format=LOCAL,
                             validators=[Optional()])

    TIME_FIELDS = ("started_at", "ended_at")


class PassageForm(EntryForm):
    # No passage number: the service derives it (the next passage of the batch); it is never typed.
    vessel_type = SelectField(_l("Culture vessel type"), choices=[], validate_choice=False)
    vessel_count = StringField(_l("Number of vessels"), validators=[Optional(), Length(max=4)], render_kw=COUNT)
    cells_seeded = StringField(_l("Cells seeded (total)"), validators=[Optional(), Length(max=30)], render_kw=NUMBER)
    seeded_at = SiteTimeField(_l("Seeded at (site time)"), format=LOCAL, validators=[Optional()])
    cells_harvested = StringField(_l("Cells harvested (total)"), validators=[Optional(), Length(max=30)],
                                  render_kw=NUMBER)
    harvested_at = SiteTimeField(_l("Harvested at (site time)"), format=LOCAL, validators=[Optional()])
    viability_pct = StringField(_l("Viability at harvest (%)"), validators=[Optional(), Length(max=10)],
                                render_kw=NUMBER)
    confluence_pct = StringField(_l("Confluence at harvest (%)"), validators=[Optional(), Length(max=10)],
                                 render_kw=NUMBER)

    TIME_FIELDS = ("seeded_at", "harvested_at")
    COUNT_FIELDS = ("cells_seeded", "cells_harvested")

    def entries(self) -> dict:
        data = super().entries()
        for name in ("vessel_type", "vessel_count", "cells_seeded", "cells_harvested",
                     "viability_pct", "confluence_pct"):
            value = (self[name].data or "").strip()
            if name in self.COUNT_FIELDS:
                # "2 500 000", "2'500'000" and "2_500_000" are all 2500000; "2.5e6" is read as it is.
                value = value.replace(" ", "").replace("\u202f", "").replace("'", "").replace("_", "")
            data[name] = value
        return data


class VerifyForm(SigningForm):
    """The second person's check of a step's entries, signed 'Verified'."""


class TransitionForm(SigningForm):
    """One move of the state machine: a reason, and the signature where the move is a review or a decision."""

    version = HiddenField()
    reason = TextAreaField(_l("Reason or comment"), validators=[DataRequired(_l("Give the reason or comment.")),
                                                            Length(max=2000)])
    # Shown when a hold is lifted while out-of-specification deviations of the batch are open.
    confirm_open_deviations = BooleanField(_l("I have assessed the open deviations and lift the hold all the same"))
