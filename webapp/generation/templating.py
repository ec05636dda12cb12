"""Rendering an editor's template: in a sandbox, with an output budget, a loop budget and
a deadline, all enforced while it renders.

A template is first held to the subset (template_check.py); what passes is compiled with
every loop and every `~` routed through the budget, and renders in a sandbox whose hooks
refuse what the subset leaves out (a second line behind the tree check). Nothing here knows
what the row's values mean: the caller names the variables (prompts.VARIABLES).

Its messages are said in the language of the request that asked (a preview, a save); a
worker has none, and gets English.
"""
from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Optional

from flask import current_app, has_app_context
from flask_babel import gettext as _
from jinja2 import StrictUndefined, TemplateError, filters as jinja_filters, nodes
from jinja2 import tests as jinja_tests
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .template_check import (BUILTIN_FILTERS, LOOP_ATTRIBUTES, METHODS, TESTS, TemplateRefused,
                             check_tree)

MAX_TEMPLATE_LENGTH = 10_000
# Characters one render may produce (config TEMPLATE_OUTPUT_BUDGET): the default template
# makes at most about 2,700 (the longest title and notes); a prompt is a page or two.
OUTPUT_BUDGET = 20_000
# Loop bodies run at most this many times in one render, all loops together.
MAX_LOOP_ITERATIONS = 10_000
# Wall-clock time one render may take; every step between two checks is small (see below).
RENDER_SECONDS = 1.0
# ...and all the rows that one request renders (an estimate, an import, a submission):
# 10,000 rows of the default template take about 0.2 s.
ROWS_RENDER_SECONDS = 2.0

# Our own filters, put in by the rewrite below; a template cannot name them (not in FILTERS).
_LOOP_GUARD, _CONCAT_GUARD = "pressroom_loop", "pressroom_concat"


class RowRefused(TemplateRefused):
    """The template, rendered for one row, went over a budget or failed; says why."""


# -- the budget of the render in progress ---------------------------------------------------

@dataclass
class _Budget:
    chars: int
    deadline: float
    shared: bool = False  # the deadline is that of many rows rendered in one request
    iterations: int = 0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            if self.shared:
                seconds = format(ROWS_RENDER_SECONDS, "g")
                raise RowRefused(_("The template takes too long to render (more than %(s)s s "
                                   "for all the rows together); make it simpler.", s=seconds))
            seconds = format(RENDER_SECONDS, "g")
            raise RowRefused(_("The template takes too long to render (more than %(s)s s); "
                               "make it simpler.", s=seconds))

    def check_size(self, size: int) -> None:
        if size > self.chars:
            raise RowRefused(
                _("The template makes more than %(most)s characters (its output budget) for "
                  "this row; one expression alone would make %(size)s.",
                  most=_grouped(self.chars), size=_grouped(size)))


def _grouped(number: int) -> str:
    """1,000 rather than 1000, as the messages have always written it."""
    return format(number, ",")


# Set for the duration of one render (per thread: each worker thread has its own context).
_current: ContextVar[Optional[_Budget]] = ContextVar("pressroom_template_budget", default=None)


def _budget() -> _Budget:
    state = _current.get()
    if state is None:  # a template compiled here is only ever run by render()
        raise RowRefused(_("A template rendered without a budget."))
    return state


def output_budget() -> int:
    if has_app_context():
        return int(current_app.config.get("TEMPLATE_OUTPUT_BUDGET") or OUTPUT_BUDGET)
    return OUTPUT_BUDGET


def _sized(value) -> Optional[int]:
    return len(value) if isinstance(value, (str, list, tuple)) else None


def _guarded(fn):
    """A filter that checks the clock before, and the size of what it made after."""
    @wraps(fn)  # keeps Jinja's pass_environment/pass_eval_context marks
    def run(*args, **kwargs):
        state = _budget()
        state.check_time()
        result = fn(*args, **kwargs)
        size = _sized(result)
        if size is not None:
            state.check_size(size)
        return result
    return run


def _replace(value, old, new, count=None):
    """str.replace, refused before it runs when the result would be over the budget
    (`replace('', x)` puts x between every character)."""
    text, old, new = str(value), str(old), str(new)
    times = len(text) + 1 if old == "" else text.count(old)
    if count is not None and int(count) >= 0:
        times = min(times, int(count))
    _budget().check_size(len(text) + times * (len(new) - len(old)))
    return text.replace(old, new, -1 if count is None else int(count))


def _join(value, d=""):
    items = [str(item) for item in value]
    separator = str(d)
    _budget().check_size(sum(map(len, items)) + len(separator) * max(len(items) - 1, 0))
    return separator.join(items)


def _loop_guard(iterable):
    """Every loop goes through this: it counts iterations, all loops together, and looks
    at the clock, so loops that write nothing are bounded too."""
    state = _budget()
    for item in iterable:
        state.iterations += 1
        if state.iterations > MAX_LOOP_ITERATIONS:
            raise RowRefused(_("The template's loops run more than %(most)s times for this "
                               "row.", most=_grouped(MAX_LOOP_ITERATIONS)))
        state.check_time()
        yield item


def _concat_guard(parts):
    """`a ~ b ~ c`, with the size known before the text is made."""
    texts = [str(p) for p in parts]
    _budget().check_size(sum(map(len, texts)))
    return "".join(texts)


class _Environment(SandboxedEnvironment):
    """The sandbox, narrowed to the subset: a second line behind the tree check."""

    intercepted_binops = frozenset(["+", "-", "*", "/", "//", "%", "**"])

    def call_binop(self, context, operator, left, right):
        if operator in ("*", "%", "**"):
            raise SecurityError(_("the operator '%(operator)s' is not allowed",
                                  operator=operator))
        if operator == "+" and _sized(left) is not None and _sized(right) is not None:
            _budget().check_size(len(left) + len(right))
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj, attribute):
        if isinstance(obj, str) and attribute in METHODS:
            return getattr(obj, attribute)
        if isinstance(obj, LoopContext) and attribute in LOOP_ATTRIBUTES:
            return getattr(obj, attribute)
        raise SecurityError(_("access to attribute %(attribute)s of %(type)s object is unsafe",
                              attribute=repr(attribute), type=repr(type(obj).__name__)))

    def getitem(self, obj, argument):
        if isinstance(argument, str):
            return self.getattr(obj, argument)
        try:
            return obj[argument]
        except (TypeError, LookupError):
            return self.undefined(obj=obj, name=argument)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if not (isinstance(owner, str) and name in METHODS):
            raise SecurityError(_("calling %(name)s is not allowed",
                                  name=repr(name or type(__obj).__name__)))
        state = _budget()
        state.check_time()
        result = __obj(*args, **kwargs)
        size = _sized(result)
        if size is not None and isinstance(result, str):
            state.check_size(size)
        return result


def _make_env() -> _Environment:
    # No constant folding: it costs time cubic in the nesting depth of an expression (a
    # chain of 200 filters took seconds to compile), and prompts have little to fold.
    env = _Environment(undefined=StrictUndefined, autoescape=False, optimized=False)
    env.globals.clear()
    env.filters = {name: _guarded(jinja_filters.FILTERS[name]) for name in BUILTIN_FILTERS}
    env.filters.update({"replace": _guarded(_replace), "join": _guarded(_join),
                        _LOOP_GUARD: _loop_guard, _CONCAT_GUARD: _concat_guard})
    env.tests = {name: jinja_tests.TESTS[name] for name in TESTS}
    return env


_env = _make_env()


class _Guards(NodeTransformer):
    """Route every loop and every `~` through the budget (after the check)."""

    def visit_For(self, node):
        node = self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _LOOP_GUARD, [], [], None, None,
                                 lineno=node.iter.lineno)
        return node

    def visit_Concat(self, node):
        node = self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), _CONCAT_GUARD, [], [],
                            None, None, lineno=node.lineno)


@lru_cache(maxsize=256)
def _compiled(template_text: str, variables: tuple[str, ...]):
    # Checking and compiling take milliseconds (a quarter of a second for the longest text);
    # every article of a batch renders the same template, so each text is compiled once per
    # process. Templates render thread-safely (the budget lives in a context variable).
    try:
        tree = _env.parse(template_text)
        check_tree(tree, variables)
        tree = _Guards().visit(tree)
        tree.set_environment(_env)
        return _env.from_string(tree)
    except TemplateError as exc:
        raise TemplateRefused(_("The template does not render: %(why)s",
                                why=exc.message or exc)) from None
    except (RecursionError, MemoryError, SyntaxError):
        raise TemplateRefused(_("The template is nested too deeply.")) from None


def validate(template_text: str, variables: tuple[str, ...]) -> None:
    """Raise TemplateRefused when the text is not a template Pressroom runs."""
    if not template_text.strip():
        raise TemplateRefused(_("The template is empty."))
    if len(template_text) > MAX_TEMPLATE_LENGTH:
        raise TemplateRefused(_("A template may be at most %(most)s characters.",
                                most=_grouped(MAX_TEMPLATE_LENGTH)))
    _compiled(template_text, tuple(variables))


def render(template_text: str, row: dict, variables: tuple[str, ...], *,
           budget: Optional[int] = None, deadline: Optional[float] = None) -> str:
    """The template with one row (a missing or empty value renders as ""). TemplateRefused
    says why the template cannot be used; RowRefused (a kind of it) why it cannot be used
    for this row.

    Output is counted as it is made and the render stops at the budget; `deadline` (a
    time.monotonic() value) lets a caller rendering many rows share one time limit.
    """
    variables = tuple(variables)
    values = {name: row.get(name) or "" for name in variables}
    return _run(_compiled(template_text, variables), values, budget or output_budget(),
                deadline)


def _run(template, values: dict, limit: int, deadline: Optional[float]) -> str:
    """Render a compiled template under the budget (the sandbox hooks hold even for a
    template that did not pass the tree check: the tests compile some that way)."""
    own_deadline = time.monotonic() + RENDER_SECONDS
    shared = deadline is not None and deadline < own_deadline
    state = _Budget(limit, deadline if shared else own_deadline, shared)
    token = _current.set(state)
    parts: list[str] = []
    size = 0
    chunks = template.generate(**values)
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise RowRefused(_("The template makes more than %(most)s characters (its "
                                   "output budget) for this row.", most=_grouped(limit)))
            state.check_time()
            parts.append(chunk)
    except RowRefused:
        raise
    except SecurityError as exc:
        raise RowRefused(_("The template does not render: %(why)s.", why=exc)) from None
    except TemplateError as exc:
        raise RowRefused(_("The template does not render: %(why)s",
                           why=exc.message or exc)) from None
    except (RecursionError, MemoryError):
        raise RowRefused(_("The template does not render: it is too complex.")) from None
    except Exception as exc:  # TypeError, ValueError, ZeroDivisionError… from the row's values
        raise RowRefused(_("The template does not render for this row: %(why)s",
                           why=exc)) from None
    finally:
        chunks.close()
        _current.reset(token)
    return "".join(parts).strip()
