"""Prompt templates: Jinja text with a few variables, rendered in a sandbox with a budget.

Editors write templates, so they are untrusted. Jinja's sandbox alone stops attribute tricks
but not work: `{{ title * 200000000 }}` or two nested `range(99999)` loops hold a process for
minutes. So a template is held to a small subset of Jinja, checked on its syntax tree before
it is compiled (each refusal says why), and every render has an output budget, a loop budget
and a deadline, enforced while it renders. The sandbox hooks below refuse the same things
again at run time, in case the tree check misses a way in.

The subset: `{{ }}` output of the row's variables, filters from FILTERS, methods from METHODS
(`keywords.split(',')`), `if`/`elif`/`else`, comparisons, `and`/`or`/`not`, `+ - / //`, `~`,
slices, and `for` loops over the row's own values (bounded by the row's size). Nothing that
repeats or pads text (`*`, `%`, `**`, `.format()`, `center`...), no `range`, no `set`,
macros, blocks, imports or includes.
"""
from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Optional

from flask import current_app, has_app_context
from jinja2 import StrictUndefined, TemplateError, filters as jinja_filters, nodes
from jinja2 import tests as jinja_tests
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .provider import Prompt

VARIABLES = ("title", "keywords", "tone", "words", "language", "notes")

DEFAULT_TEMPLATE = """Title: {{ title }}
Write a complete article of about {{ words }} words with this title.
Tone: {{ tone }}
Language: {{ language }}
{% if keywords %}Keywords to work in naturally: {{ keywords }}
{% endif %}{% if notes %}Notes from the editor: {{ notes }}
{% endif %}Use Markdown, and start with a level-one heading that is the title."""

SAMPLE_ROW = {"title": "Ten quiet places to read in the city", "keywords": "libraries, parks",
              "tone": "friendly", "words": 800, "language": "English",
              "notes": "Mention opening hours where known."}

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
# Nesting limits: compiling is superlinear in depth, and Python refuses deeper blocks.
MAX_BLOCK_DEPTH = 10
MAX_EXPRESSION_DEPTH = 40

# Filters that never make more text than they are given, or add a bounded amount (default,
# truncate's end); replace and join are our own versions that check the size first.
_BUILTIN_FILTERS = ("upper", "lower", "title", "capitalize", "trim", "default", "d", "length",
                    "count", "truncate", "wordcount", "first", "last", "reverse", "int")
# String methods that split or trim, never grow.
METHODS = ("split", "rsplit", "splitlines", "strip", "lstrip", "rstrip", "lower", "upper",
           "title", "capitalize", "startswith", "endswith")
TESTS = ("defined", "undefined", "none", "number", "string", "integer", "float", "boolean",
         "true", "false", "even", "odd", "divisibleby", "sequence", "lower", "upper", "in",
         "eq", "ne", "lt", "le", "gt", "ge", "==", "!=", "<", "<=", ">", ">=")
LOOP_ATTRIBUTES = ("index", "index0", "revindex", "revindex0", "first", "last", "length",
                   "previtem", "nextitem", "depth", "depth0")
# Names Jinja offers by default; they are not available here, and saying so is clearer
# than "undefined".
_GLOBALS = ("range", "lipsum", "dict", "cycler", "joiner", "namespace")
# Our own filters, put in by the rewrite below; a template cannot name them (not in FILTERS).
_LOOP_GUARD, _CONCAT_GUARD = "pressroom_loop", "pressroom_concat"


class TemplateRefused(Exception):
    """A template is outside what Pressroom runs (or does not parse); says why."""


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
            raise RowRefused(
                "The template takes too long to render (more than "
                + (f"{ROWS_RENDER_SECONDS:g} s for all the rows together" if self.shared
                   else f"{RENDER_SECONDS:g} s") + "); make it simpler.")

    def check_size(self, size: int) -> None:
        if size > self.chars:
            raise RowRefused(
                f"The template makes more than {self.chars:,} characters (its output budget) "
                f"for this row; one expression alone would make {size:,}.")


# Set for the duration of one render (per thread: each worker thread has its own context).
_current: ContextVar[Optional[_Budget]] = ContextVar("pressroom_template_budget", default=None)


def _budget() -> _Budget:
    state = _current.get()
    if state is None:  # a template compiled here is only ever run by render()
        raise RowRefused("A template rendered without a budget.")
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
            raise RowRefused(f"The template's loops run more than "
                                  f"{MAX_LOOP_ITERATIONS:,} times for this row.")
        state.check_time()
        yield item


def _concat_guard(parts):
    """`a ~ b ~ c`, with the size known before the text is made."""
    texts = [str(p) for p in parts]
    _budget().check_size(sum(map(len, texts)))
    return "".join(texts)


FILTERS = _BUILTIN_FILTERS + ("replace", "join")


class _Environment(SandboxedEnvironment):
    """The sandbox, narrowed to the subset: a second line behind the tree check."""

    intercepted_binops = frozenset(["+", "-", "*", "/", "//", "%", "**"])

    def call_binop(self, context, operator, left, right):
        if operator in ("*", "%", "**"):
            raise SecurityError(f"the operator '{operator}' is not allowed")
        if operator == "+" and _sized(left) is not None and _sized(right) is not None:
            _budget().check_size(len(left) + len(right))
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj, attribute):
        if isinstance(obj, str) and attribute in METHODS:
            return getattr(obj, attribute)
        if isinstance(obj, LoopContext) and attribute in LOOP_ATTRIBUTES:
            return getattr(obj, attribute)
        raise SecurityError(f"access to attribute {attribute!r} of "
                            f"{type(obj).__name__!r} object is unsafe")

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
            raise SecurityError(f"calling {name or type(__obj).__name__!r} is not allowed")
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
    env.filters = {name: _guarded(jinja_filters.FILTERS[name]) for name in _BUILTIN_FILTERS}
    env.filters.update({"replace": _guarded(_replace), "join": _guarded(_join),
                        _LOOP_GUARD: _loop_guard, _CONCAT_GUARD: _concat_guard})
    env.tests = {name: jinja_tests.TESTS[name] for name in TESTS}
    return env


_env = _make_env()


# -- the tree check --------------------------------------------------------------------------

_STATEMENTS = {  # the tag a person wrote, for the messages
    "Macro": "macro", "CallBlock": "call", "Assign": "set", "AssignBlock": "set",
    "Include": "include", "Import": "import", "FromImport": "from … import",
    "Extends": "extends", "Block": "block", "FilterBlock": "filter", "With": "with",
    "ScopedEvalContextModifier": "autoescape", "EvalContextModifier": "autoescape",
    "ExprStmt": "do", "Break": "break", "Continue": "continue",
}
_OPERATORS = {"Mul": ("*", "it repeats text"), "Mod": ("%", "it formats and pads text"),
              "Pow": ("**", "it makes numbers of any size")}


def _methods_hint() -> str:
    return ", ".join(f".{m}()" for m in METHODS)


class _Checker:
    """Walks the parsed template with an allow-list of node types."""

    def __init__(self):
        self.loop_names: list[set[str]] = []
        self.blocks = 0
        self.depth = 0

    def refuse(self, node, why: str, prefix: str = "The template cannot be used") -> None:
        raise TemplateRefused(f"{prefix} (line {node.lineno}): {why}.")

    # statements
    def statements(self, body) -> None:
        for node in body:
            self.statement(node)

    def block(self, node, body) -> None:
        self.blocks += 1
        if self.blocks > MAX_BLOCK_DEPTH:
            self.refuse(node, f"{{% if %}} and {{% for %}} may be nested at most "
                              f"{MAX_BLOCK_DEPTH} deep")
        self.statements(body)
        self.blocks -= 1

    def statement(self, node) -> None:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if not isinstance(child, nodes.TemplateData):
                    self.expr(child)
        elif isinstance(node, nodes.If):
            self.expr(node.test)
            self.block(node, node.body)
            for branch in node.elif_:
                self.statement(branch)
            self.block(node, node.else_)
        elif isinstance(node, nodes.For):
            self.loop(node)
        else:
            kind = type(node).__name__
            tag = _STATEMENTS.get(kind, kind.lower())
            self.refuse(node, f"{{% {tag} %}} is not allowed; templates use {{{{ }}}}, "
                              "{% if %} and {% for %} over the row's values only")

    def loop(self, node: nodes.For) -> None:
        if node.recursive:
            self.refuse(node, "recursive loops are not allowed")
        targets = node.target.items if isinstance(node.target, nodes.Tuple) else [node.target]
        if not all(isinstance(t, nodes.Name) for t in targets):
            self.refuse(node, "a loop variable must be a plain name")
        if not self.row_value(node.iter):
            self.refuse(node, "loops may only go over the row's values (such as "
                              f"keywords.split(',')), not {self.describe(node.iter)}")
        self.expr(node.iter)
        names = {t.name for t in targets}
        self.loop_names.append(names)
        if node.test is not None:
            self.expr(node.test)
        self.loop_names[-1] = names | {"loop"}
        self.block(node, node.body)
        self.loop_names.pop()
        self.block(node, node.else_)

    def row_value(self, node) -> bool:
        """Whether a loop over `node` is bounded by the row: a variable, a loop variable, or
        a method, filter or slice of one."""
        if isinstance(node, nodes.Name):
            return node.name in VARIABLES or (node.name != "loop" and self.in_scope(node.name))
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            return node.node.attr in METHODS and self.row_value(node.node.node)
        if isinstance(node, nodes.Filter):
            return node.name in FILTERS and node.node is not None and self.row_value(node.node)
        if isinstance(node, nodes.Getitem):
            return self.row_value(node.node)
        return False

    @staticmethod
    def describe(node) -> str:
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name):
            return f"{node.node.name}(...)"
        if isinstance(node, (nodes.List, nodes.Tuple)):
            return "a list written in the template"
        if isinstance(node, nodes.Const):
            return "a constant"
        if isinstance(node, nodes.Name):
            return f"'{node.name}'"
        return "an expression"

    # expressions
    def expr(self, node) -> None:
        self.depth += 1
        if self.depth > MAX_EXPRESSION_DEPTH:
            self.refuse(node, f"an expression may be nested at most {MAX_EXPRESSION_DEPTH} "
                              "deep (filters, operators and brackets)")
        self.one_expr(node)
        self.depth -= 1

    def one_expr(self, node) -> None:
        if isinstance(node, (nodes.Const, nodes.TemplateData)):
            return
        if isinstance(node, nodes.Name):
            return self.name(node)
        if isinstance(node, (nodes.List, nodes.Tuple)):
            for item in node.items:
                self.expr(item)
        elif isinstance(node, nodes.Compare):
            self.expr(node.expr)
            for operand in node.ops:
                self.expr(operand.expr)
        elif isinstance(node, (nodes.And, nodes.Or, nodes.Add, nodes.Sub, nodes.Div,
                               nodes.FloorDiv)):
            self.expr(node.left)
            self.expr(node.right)
        elif isinstance(node, (nodes.Not, nodes.Neg, nodes.Pos)):
            self.expr(node.node)
        elif type(node).__name__ in _OPERATORS:
            symbol, why = _OPERATORS[type(node).__name__]
            self.refuse(node, f"the operator '{symbol}' is not allowed ({why})")
        elif isinstance(node, nodes.Concat):
            for part in node.nodes:
                self.expr(part)
        elif isinstance(node, nodes.CondExpr):
            self.expr(node.test)
            self.expr(node.expr1)
            if node.expr2 is not None:
                self.expr(node.expr2)
        elif isinstance(node, nodes.Filter):
            if node.name not in FILTERS:
                self.refuse(node, f"the filter '{node.name}' is not allowed (the filters are: "
                                  f"{', '.join(FILTERS)})")
            self.operation(node)
        elif isinstance(node, nodes.Test):
            if node.name not in TESTS:
                self.refuse(node, f"the test 'is {node.name}' is not allowed")
            self.operation(node)
        elif isinstance(node, nodes.Getattr):
            if not (isinstance(node.node, nodes.Name) and node.node.name == "loop"
                    and node.attr in LOOP_ATTRIBUTES and self.in_scope("loop")):
                self.refuse(node, f"the attribute '{node.attr}' is unsafe here: templates "
                                  f"may call only {_methods_hint()} on the row's values")
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                self.refuse(node, f"the item ['{node.arg.value}'] is unsafe here")
            self.expr(node.node)
            if isinstance(node.arg, nodes.Slice):
                for part in (node.arg.start, node.arg.stop, node.arg.step):
                    if part is not None:
                        self.expr(part)
            else:
                self.expr(node.arg)
        elif isinstance(node, nodes.Call):
            self.call(node)
        else:
            self.refuse(node, f"this kind of expression ({type(node).__name__}) is not allowed")

    def in_scope(self, name: str) -> bool:
        return any(name in names for names in self.loop_names)

    def name(self, node: nodes.Name) -> None:
        if node.name in VARIABLES or self.in_scope(node.name):
            return
        if node.name in _GLOBALS:
            self.refuse(node, f"'{node.name}' is not available in templates")
        self.refuse(node, f"'{node.name}' is undefined; the variables are "
                          f"{', '.join(VARIABLES)}", prefix="The template does not render")

    def operation(self, node) -> None:
        """A filter or test: the value it is applied to, then its arguments."""
        if node.node is not None:
            self.expr(node.node)
        self.arguments(node)

    def arguments(self, node) -> None:
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            self.refuse(node, "unpacking arguments with * or ** is not allowed")
        for arg in node.args:
            self.expr(arg)
        for keyword in node.kwargs:
            self.expr(keyword.value)

    def call(self, node: nodes.Call) -> None:
        target = node.node
        if isinstance(target, nodes.Getattr):
            if target.attr not in METHODS:
                self.refuse(node, f"calling '.{target.attr}()' is not allowed; templates may "
                                  f"call only {_methods_hint()}")
            self.expr(target.node)
            self.arguments(node)
            return
        if isinstance(target, nodes.Name) and target.name == "range":
            self.refuse(node, "range() is not allowed: loops may only go over the row's values")
        what = f"{target.name}()" if isinstance(target, nodes.Name) else "this call"
        self.refuse(node, f"calling {what} is not allowed; templates may call only "
                          f"{_methods_hint()}")


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
def _compiled(template_text: str):
    # Checking and compiling take milliseconds (a quarter of a second for the longest text);
    # every article of a batch renders the same template, so each text is compiled once per
    # process. Templates render thread-safely (the budget lives in a context variable).
    try:
        tree = _env.parse(template_text)
        _Checker().statements(tree.body)
        tree = _Guards().visit(tree)
        tree.set_environment(_env)
        return _env.from_string(tree)
    except TemplateError as exc:
        raise TemplateRefused(f"The template does not render: {exc.message or exc}") from None
    except (RecursionError, MemoryError, SyntaxError):
        raise TemplateRefused("The template is nested too deeply.") from None


def validate(template_text: str) -> None:
    """Raise TemplateRefused when the text is not a template Pressroom runs."""
    if not template_text.strip():
        raise TemplateRefused("The template is empty.")
    if len(template_text) > MAX_TEMPLATE_LENGTH:
        raise TemplateRefused(f"A template may be at most {MAX_TEMPLATE_LENGTH:,} characters.")
    _compiled(template_text)


def render(template_text: str, row: dict, *, budget: Optional[int] = None,
           deadline: Optional[float] = None) -> str:
    """The template with one row. TemplateRefused says why the template cannot be used;
    RowRefused (a kind of it) why it cannot be used for this row.

    Output is counted as it is made and the render stops at the budget; `deadline` (a
    time.monotonic() value) lets a caller rendering many rows share one time limit.
    """
    return _run(_compiled(template_text), row, budget or output_budget(), deadline)


def _run(template, row: dict, limit: int, deadline: Optional[float]) -> str:
    """Render a compiled template under the budget (the sandbox hooks hold even for a
    template that did not pass the tree check: the tests compile some that way)."""
    values = {name: row.get(name) or "" for name in VARIABLES}
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
                raise RowRefused(f"The template makes more than {limit:,} characters "
                                 "(its output budget) for this row.")
            state.check_time()
            parts.append(chunk)
    except RowRefused:
        raise
    except SecurityError as exc:
        raise RowRefused(f"The template does not render: {exc}.") from None
    except TemplateError as exc:
        raise RowRefused(f"The template does not render: {exc.message or exc}") from None
    except (RecursionError, MemoryError):
        raise RowRefused("The template does not render: it is too complex.") from None
    except Exception as exc:  # TypeError, ValueError, ZeroDivisionError… from the row's values
        raise RowRefused(f"The template does not render for this row: {exc}") from None
    finally:
        chunks.close()
        _current.reset(token)
    return "".join(parts).strip()


def check(template_text: str) -> Optional[str]:
    """Why a template cannot be used, or None when it renders the sample row."""
    try:
        validate(template_text)
        render(template_text, SAMPLE_ROW)
    except TemplateRefused as exc:
        return str(exc)
    return None


def build_prompt(template_text: str, *, title: str, words: int, tone: str, language: str,
                 keywords: str = "", notes: str = "", instructions: str = "",
                 extra_instructions: str = "", deadline: Optional[float] = None) -> Prompt:
    """The prompt for one article: the template with its row, then any instructions.

    Raises TemplateRefused when the template cannot be used for this row."""
    text = render(template_text or DEFAULT_TEMPLATE,
                  {"title": title, "keywords": keywords, "tone": tone, "words": words,
                   "language": language, "notes": notes}, deadline=deadline)
    if instructions:
        text += f"\n\nInstructions for the whole batch: {instructions}"
    if extra_instructions:
        text += f"\n\nInstructions for this version: {extra_instructions}"
    return Prompt(title=title, words=words, user_text=text)
