"""What the batch page's and the article page's publish and unpublish forms share."""
from __future__ import annotations

from flask import flash, redirect, request, url_for

from ..labels import stored
from ..services import publishing

# The form's fields, as the service reads them (the API sends the same keys as JSON).
FIELDS = ("destination", "status", "publish_at", "categories", "tags", "to")


def publish_form() -> dict:
    return {name: request.form.get(name, "") for name in FIELDS}


def flash_requested(done: publishing.Requested) -> None:
    """What was queued and skipped; and why they wait, when the queue could not take them."""
    flash(done.message, "success")
    if done.send_error:
        flash(stored(done.send_error), "error")


def to_publications(batch_id: int):
    """Back to the batch page's publications, where what was queued shows."""
    return redirect(url_for("batches.batch_detail", batch_id=batch_id,
                            _anchor="batch-publications"), code=303)
