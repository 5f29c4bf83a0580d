"""The forms of the release pages: QA review (signed, or a return with comments) and the QP decisions, each
with the signing dialog. The services check everything; the forms only collect the input."""

from __future__ import annotations

from wtforms import DateField, DateTimeLocalField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from cellfactory.core.forms import BaseForm
from cellfactory.signatures.forms import SigningForm

LOCAL = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]


def _reason(label: str, message: str) -> TextAreaField:
    return TextAreaField(label, validators=[DataRequired(message), Length(max=2000)])


class ReviewForm(SigningForm):
    """QA signs 'Reviewed': the comment goes into the signature and the audit trail."""

    reason = _reason("Review comment", "Write the review comment (it is part of the signed record).")


class ReturnForm(BaseForm):
    """QA returns the batch to manufacturing with comments (no signature: nothing is approved)."""

    reason = _reason("Comments: what must be corrected", "Say what must be corrected before the review.")


class CertifyForm(SigningForm):
    reason = _reason("Comment", "Write the certification comment (it is part of the signed record).")


class ConditionalForm(SigningForm):
    reason = _reason("Justification of the conditional release",
                     "Justify the release before the sterility result is final.")
    expected_final_date = DateField("Expected date of the final sterility read", validators=[Optional()],
                                    description="Left empty: the latest due date of the pending reads.")


class RejectForm(SigningForm):
    reason = _reason("Reason for the rejection", "Give the reason for the rejection.")


class ExceptionalForm(SigningForm):
    """EU GMP Part IV 11.5: the facts are checked by the service, which names each one missing."""

    reason = _reason("Justification", "Justify the exceptional release.")
    physician_name = StringField("Treating physician who requested the product",
                                 validators=[Optional(), Length(max=200)])
    physician_request_date = DateField("Date of the physician's written request", validators=[Optional()])
    risk_evaluation_reference = StringField("Reference of the factory's risk evaluation",
                                            validators=[Optional(), Length(max=300)])
    sponsor_reference = StringField("Reference of the notification to the sponsor",
                                    validators=[Optional(), Length(max=300)])
    sponsor_notified_at = DateTimeLocalField("Sponsor notified at (site time)", format=LOCAL,
                                             validators=[Optional()])
