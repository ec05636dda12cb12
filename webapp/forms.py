"""Form classes. They carry CSRF and render fields; the checks live in services.validation."""
from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice

from .services.validation import TONES


class NewBatchForm(FlaskForm):
    name = StringField("Name")
    titles = TextAreaField("Titles, one per line")
    model = StringField("Model")
    # Text, not IntegerField: WTForms would reject "abc" itself and the view would show
    # "the form expired" instead of the shared validator's message on this field.
    target_words = StringField("Target length (words)", default="800")
    tone = SelectField("Tone", choices=[SelectChoice(t, t.capitalize()) for t in TONES],
                       default="neutral",
                       validate_choice=False)
    language = StringField("Language", default="English")
    instructions = TextAreaField("Extra instructions (optional)")
    budget_usd = StringField("Budget in US dollars (optional)")
    template_id = SelectField("Prompt template", choices=[], validate_choice=False)
    webhook_url = StringField("Webhook URL (optional)")
    # Rendered by hand in new_batch.html (economy is offered only where it is available).
    mode = HiddenField(default="standard")
    import_file = FileField("Import titles from a CSV or JSON file")
    # After a pre-flight, the checked file travels back with the confirming post.
    import_text = HiddenField()
    import_name = HiddenField()

    def raw_data(self) -> dict:
        """What the user typed, before any coercion, for the shared validator."""
        return {name: (field.raw_data[0] if field.raw_data else "")
                for name, field in self._fields.items()
                if name not in ("csrf_token", "import_file")}
