"""The acknowledgement of a notification task: what was done, the physician informed, and the signing dialog."""

from __future__ import annotations

from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from cellfactory.signatures.forms import SigningForm


class AcknowledgeForm(SigningForm):
    capacity = HiddenField()
    comment = TextAreaField("What you did", validators=[
        DataRequired("Say what you did (e.g. units located and quarantined, physician called)."), Length(max=2000)])
    physician_name = StringField("Treating physician informed", validators=[Optional(), Length(max=200)])
