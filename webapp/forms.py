"""Form classes. They carry CSRF and render fields; the checks live in services.validation."""
from __future__ import annotations

from flask_babel import get_translations, gettext, lazy_gettext as _l, lazy_ngettext
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import (BooleanField, EmailField, HiddenField, PasswordField, SelectField,
                     StringField, TextAreaField)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from .services.validation import TONES

# WTForms' own messages that these forms' fields and validators can produce (DataRequired,
# Length(max=…), SelectField), listed so that `make messages` extracts them into our
# catalog: Flask-WTF's bundled translations would answer 繁體中文 with Simplified.
WTFORMS_MESSAGES = (
    _l("This field is required."),
    lazy_ngettext("Field cannot be longer than %(max)d character.",
                  "Field cannot be longer than %(max)d characters.", 255, max=255),
    _l("Not a valid choice."),
    _l("Invalid Choice: could not coerce."),
)


class _Translations:
    """WTForms' messages through our catalog, in the page's language (English without a
    request). Unformatted: WTForms fills in its own `%(max)d` afterwards."""

    def gettext(self, string):
        return gettext(string)  # formats only when given values, and none are given

    def ngettext(self, singular, plural, n):
        # Not flask_babel.ngettext: it always formats (with `num`), and `%(max)d` would fail.
        return get_translations().ngettext(singular, plural, n)


class Form(FlaskForm):
    """A form whose WTForms messages speak the page's language."""

    class Meta:
        def get_translations(self, form):
            return _Translations()


class LoginForm(Form):
    email = EmailField(_l("Email"), validators=[DataRequired(), Length(max=255)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=200)])
    remember = BooleanField(_l("Keep me signed in"))


# What the tone list shows for each of services.validation.TONES.
TONE_CHOICES = {
    "neutral": _l("Neutral"),
    "friendly": _l("Friendly"),
    "formal": _l("Formal"),
    "persuasive": _l("Persuasive"),
    "playful": _l("Playful"),
    "authoritative": _l("Authoritative"),
}


class NewBatchForm(Form):
    name = StringField(_l("Name"))
    titles = TextAreaField(_l("Titles, one per line"))
    model = StringField(_l("Model"))
    # Text, not IntegerField: WTForms would reject "abc" itself and the view would show
    # "the form expired" instead of the shared validator's message on this field.
    target_words = StringField(_l("Target length (words)"), default="800")
    tone = SelectField(_l("Tone"), choices=[SelectChoice(t, TONE_CHOICES[t]) for t in TONES],
                       default="neutral",
                       validate_choice=False)
    # The default is the articles' language, sent in the prompt: not translated.
    language = StringField(_l("Language"), default="English")
    instructions = TextAreaField(_l("Extra instructions (optional)"))
    budget_usd = StringField(_l("Budget in US dollars (optional)"))
    template_id = SelectField(_l("Prompt template"), choices=[], validate_choice=False)
    webhook_url = StringField(_l("Webhook URL (optional)"))
    # Rendered by hand in new_batch.html (economy is offered only where it is available).
    mode = HiddenField(default="standard")
    import_file = FileField(_l("Import titles from a CSV or JSON file"))
    # The keys of services.encodings.ENCODINGS; "" detects the encoding. Checked there.
    import_encoding = SelectField(_l("Encoding of the file"), choices=[
        SelectChoice("", _l("Detect automatically")),
        SelectChoice("utf-8", "UTF-8"),
        SelectChoice("utf-16", _l("UTF-16 (Excel “Unicode text”)")),
        SelectChoice("gb18030", _l("GB18030 / GBK (Simplified Chinese)")),
        SelectChoice("big5", _l("Big5 (Traditional Chinese)"))],
        default="", validate_choice=False)
    # After a pre-flight, the checked file travels back with the confirming post.
    import_text = HiddenField()
    import_name = HiddenField()

    def raw_data(self) -> dict:
        """What the user typed, before any coercion, for the shared validator."""
        return {name: (field.raw_data[0] if field.raw_data else "")
                for name, field in self._fields.items()
                if name not in ("csrf_token", "import_file")}
