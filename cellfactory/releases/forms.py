"""The forms of the release pages: QA review (signed, or a return with comments) and the QP decisions, each
with the signing dialog. The forms only collect the input: what each field must hold is its command's
(`releases/commands.py`), what a decision needs is the service's."""

from __future__ import annotations

from wtforms import DateField, DateTimeLocalField, StringField, TextAreaField
from wtforms.validators import Optional

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _l
from cellfactory.signatures.forms import SigningForm

LOCAL = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]


def _reason(label) -> TextAreaField:
    return TextAreaField(label, validators=[Optional()], render_kw={"maxlength": 2000})


class ReviewForm(SigningForm):
    """QA signs 'Reviewed': the comment goes into the signature and the audit trail."""

    reason = _reason(_l("Review comment"))


class ReturnForm(BaseForm):
    """QA returns the batch to manufacturing with comments (no signature: nothing is approved)."""

    reason = _reason(_l("Comments: what must be corrected"))


class CertifyForm(SigningForm):
    reason = _reason(_l("Comment"))


class ConditionalForm(SigningForm):
    reason = _reason(_l("Justification of the conditional release"))
    expected_final_date = DateField(_l("Expected date of the final sterility read"), validators=[Optional()],
                                    description=_l("Left empty: the latest due date of the pending reads."))


class RejectForm(SigningForm):
    reason = _reason(_l("Reason for the rejection"))


class ExceptionalForm(SigningForm):
    """EU GMP Part IV 11.5: the facts are checked by the service, which names each one missing."""

    reason = _reason(_l("Justification"))
    physician_name = StringField(_l("Treating physician who requested the product"),
                                 validators=[Optional()], render_kw={"maxlength": 200})
    physician_request_date = DateField(_l("Date of the physician's written request"), validators=[Optional()])
    risk_evaluation_reference = StringField(_l("Reference of the factory's risk evaluation"),
                                            validators=[Optional()], render_kw={"maxlength": 300})
    sponsor_reference = StringField(_l("Reference of the notification to the sponsor"),
                                    validators=[Optional()], render_kw={"maxlength": 300})
    sponsor_notified_at = DateTimeLocalField(_l("Sponsor notified at (site time)"), format=LOCAL,
                                             validators=[Optional()])
