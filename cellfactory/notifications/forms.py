"""The acknowledgement of a notification task: what was done, the physician informed, and the signing dialog.
What each field must hold is the command's (`notifications/commands.py`)."""

from __future__ import annotations

from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import Optional

from cellfactory.core.i18n import _l
from cellfactory.signatures.forms import SigningForm


class AcknowledgeForm(SigningForm):
    capacity = HiddenField()
    comment = TextAreaField(_l("What you did"), validators=[Optional()], render_kw={"maxlength": 2000})
    physician_name = StringField(_l("Treating physician informed"), validators=[Optional()],
                                 render_kw={"maxlength": 200})


class AcknowledgeManyForm(SigningForm):
    """Several notices acknowledged as QA of the site: one statement of what was done, one signing dialog."""

    comment = TextAreaField(_l("What you did (for each notice listed)"), validators=[Optional()],
                            render_kw={"maxlength": 2000})
