"""Prompt templates: list, create, edit, archive, copy, preview.

Anyone who writes batches may use and copy any template; only its author or an admin may
change or archive it (a shared template changing under its users is the problem this
prevents). Templates with no author (made before authors were kept) are the admins'.
"""
from __future__ import annotations

from typing import Optional

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import select

from ..generation import prompts
from ..extensions import db
from ..models import PromptTemplate, Role, User, utcnow
from . import audit
from .errors import Invalid, NotAllowed, NotFound
from .imports import LIMITS
from .users import emails_of

NAME_LENGTH = 100
# A preview's sample row has a value for each of these (`unit` follows from its language).
VARIABLES = prompts.ROW_VARIABLES


def active() -> list[PromptTemplate]:
    return db.session.scalars(select(PromptTemplate).where(PromptTemplate.archived_at.is_(None))
                              .order_by(PromptTemplate.name)).all()


def all_templates() -> list[PromptTemplate]:
    return db.session.scalars(select(PromptTemplate).order_by(
        PromptTemplate.archived_at.is_not(None), PromptTemplate.name)).all()


def usable(template_id: int) -> Optional[PromptTemplate]:
    tpl = db.session.get(PromptTemplate, template_id)
    return tpl if tpl is not None and tpl.archived_at is None else None


def text_for(template_id: Optional[int]) -> str:
    """The text a new batch keeps: the chosen template, or the shipped default."""
    if template_id is None:
        return prompts.DEFAULT_TEMPLATE
    tpl = usable(template_id)
    return tpl.body if tpl else prompts.DEFAULT_TEMPLATE


def can_change(user: User, tpl: PromptTemplate) -> bool:
    """Whether `user` may edit or archive the template: its author, or an admin."""
    if user.role == Role.ADMIN:
        return True
    return user.role == Role.EDITOR and tpl.created_by is not None and tpl.created_by == user.id


def _require_change(user: User, tpl: PromptTemplate, what: str) -> None:
    """`what` the user means to do: "edit", "archive" or "restore"."""
    if can_change(user, tpl):
        return
    if what == "archive":
        message = _("Only the template's author or an admin can archive it; you can use it, "
                    "or copy it and change the copy.")
    elif what == "restore":
        message = _("Only the template's author or an admin can restore it; you can use it, "
                    "or copy it and change the copy.")
    else:
        message = _("Only the template's author or an admin can edit it; you can use it, or "
                    "copy it and change the copy.")
    raise NotAllowed(message)


def get(template_id: int) -> PromptTemplate:
    tpl = db.session.get(PromptTemplate, template_id)
    if tpl is None:
        raise NotFound(_("No such template."))
    return tpl


def _check(name: str, body: str, template_id: Optional[int]) -> dict[str, str]:
    problems = {}
    name = name.strip()
    if not name or len(name) > NAME_LENGTH:
        problems["name"] = _("Give the template a name of 1 to %(most)s characters.",
                             most=NAME_LENGTH)
    else:
        clash = db.session.scalar(select(PromptTemplate.id).where(PromptTemplate.name == name))
        if clash is not None and clash != template_id:
            problems["name"] = _("A template called “%(name)s” exists already.", name=name)
    error = prompts.check(body)
    if error:
        problems["body"] = error
    return problems


def save(user: User, name: str, body: str, template_id: Optional[int] = None) -> PromptTemplate:
    """Create or edit a template; batches already submitted keep their own copy."""
    if user.role not in (Role.ADMIN, Role.EDITOR):
        raise NotAllowed(_("Only editors and admins write templates."))
    tpl = None
    if template_id is not None:
        tpl = get(template_id)
        _require_change(user, tpl, "edit")  # before the fields: nothing is said about them
    problems = _check(name or "", body or "", template_id)
    if problems:
        raise Invalid(problems)
    if tpl is None:
        tpl = PromptTemplate(name=name.strip(), body=body, created_by=user.id)
        db.session.add(tpl)
        action = "template_created"
    else:
        tpl.name, tpl.body, tpl.updated_at = name.strip(), body, utcnow()
        action = "template_edited"
    db.session.flush()
    audit.record(action, user=user, target=f"template:{tpl.id}", detail=tpl.name, commit=False)
    db.session.commit()
    return tpl


def archive(user: User, template_id: int, archived: bool = True) -> PromptTemplate:
    tpl = get(template_id)
    _require_change(user, tpl, "archive" if archived else "restore")
    tpl.archived_at = utcnow() if archived else None
    audit.record("template_archived" if archived else "template_restored", user=user,
                 target=f"template:{tpl.id}", detail=tpl.name, commit=False)
    db.session.commit()
    return tpl


def copy_of(template_id: int) -> tuple[str, str]:
    """The name and body a copy starts with: “Copy of X”, made unique, and X's text."""
    tpl = get(template_id)
    base = _("Copy of %(name)s", name=tpl.name)
    taken = set(db.session.scalars(select(PromptTemplate.name).where(
        PromptTemplate.name.startswith(base[:NAME_LENGTH], autoescape=True))))
    name, n = base[:NAME_LENGTH], 2
    while name in taken:
        suffix = f" ({n})"
        name, n = base[:NAME_LENGTH - len(suffix)] + suffix, n + 1
    return name, tpl.body


def list_view(user: User) -> dict:
    """What the templates page shows: every template, which ones `user` may change, authors."""
    rows = all_templates()
    return {"templates": rows, "default_text": prompts.DEFAULT_TEMPLATE,
            "changeable": {t.id for t in rows if can_change(user, t)},
            "authors": emails_of({t.created_by for t in rows}), "budget": prompts.output_budget()}


def form_view(user: User, tpl: Optional[PromptTemplate] = None, name: str = "",
              body: str = "") -> dict:
    """What the template form shows: the text as typed (or stored), whether `user` may save
    it, and the reference of the template language."""
    return {"tpl": tpl, "name": name or (tpl.name if tpl else ""),
            "body": body or (tpl.body if tpl else prompts.DEFAULT_TEMPLATE),
            "can_change": tpl is None or can_change(user, tpl),
            "variables": prompts.VARIABLES, "sample_fields": VARIABLES,
            "filters": prompts.FILTERS,
            "methods": prompts.METHODS, "budget": prompts.output_budget(),
            "sample": prompts.SAMPLE_ROW}


def _sample_limits() -> dict[str, int]:
    """A sample may be as long as a real row's value, and no longer."""
    return {"title": current_app.config["MAX_TITLE_LENGTH"], "tone": 50, "words": 10, **LIMITS}


def preview(body: str, row: Optional[dict] = None) -> str:
    """The prompt for a sample row; Invalid says why the template does not render."""
    error = prompts.check(body or "")
    if error:
        raise Invalid({"body": error})
    sample = dict(row or prompts.SAMPLE_ROW)
    for name, limit in _sample_limits().items():
        if len(str(sample.get(name) or "")) > limit:
            most = format(limit, ",")
            raise Invalid({f"sample_{name}": _("The sample %(name)s may be at most %(most)s "
                                                "characters, as in a real row.", name=name,
                                                most=most)})
    words = str(sample.get("words") or "").strip()
    if words.isdigit():
        sample["words"] = int(words)  # a real row's words is a number
    try:
        return prompts.render(body, sample)
    except prompts.TemplateRefused as exc:
        raise Invalid({"body": str(exc)}) from exc
