"""Prompt templates: list, create, edit, archive, preview."""
from __future__ import annotations

from typing import Optional

from sqlalchemy import select

from .. import prompts
from ..extensions import db
from ..models import PromptTemplate, User, utcnow
from . import audit


class TemplateError(Exception):
    def __init__(self, fields: dict[str, str]):
        super().__init__("; ".join(fields.values()))
        self.fields = fields


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


def _check(name: str, body: str, template_id: Optional[int]) -> dict[str, str]:
    problems = {}
    name = name.strip()
    if not name or len(name) > 100:
        problems["name"] = "Give the template a name of 1 to 100 characters."
    else:
        clash = db.session.scalar(select(PromptTemplate.id).where(PromptTemplate.name == name))
        if clash is not None and clash != template_id:
            problems["name"] = f"A template called “{name}” exists already."
    error = prompts.check(body)
    if error:
        problems["body"] = error
    return problems


def save(user: User, name: str, body: str, template_id: Optional[int] = None) -> PromptTemplate:
    """Create or edit a template; batches already submitted keep their own copy."""
    problems = _check(name or "", body or "", template_id)
    if problems:
        raise TemplateError(problems)
    if template_id is None:
        tpl = PromptTemplate(name=name.strip(), body=body, created_by=user.id)
        db.session.add(tpl)
        action = "template_created"
    else:
        tpl = db.session.get(PromptTemplate, template_id)
        if tpl is None:
            raise LookupError("No such template.")
        tpl.name, tpl.body, tpl.updated_at = name.strip(), body, utcnow()
        action = "template_edited"
    db.session.flush()
    audit.record(action, user=user, target=f"template:{tpl.id}", detail=tpl.name, commit=False)
    db.session.commit()
    return tpl


def archive(user: User, template_id: int, archived: bool = True) -> PromptTemplate:
    tpl = db.session.get(PromptTemplate, template_id)
    if tpl is None:
        raise LookupError("No such template.")
    tpl.archived_at = utcnow() if archived else None
    audit.record("template_archived" if archived else "template_restored", user=user,
                 target=f"template:{tpl.id}", detail=tpl.name, commit=False)
    db.session.commit()
    return tpl


def preview(body: str, row: Optional[dict] = None) -> tuple[Optional[str], Optional[str]]:
    """The prompt for a sample row, or why the template does not render."""
    error = prompts.check(body or "")
    if error:
        return None, error
    return prompts.render(body, row or prompts.SAMPLE_ROW), None
