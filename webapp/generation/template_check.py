"""The subset of Jinja that editors' templates may use, checked on the syntax tree.

Editors write templates, so they are untrusted. Jinja's sandbox alone stops attribute tricks
but not work: `{{ title * 200000000 }}` or two nested `range(99999)` loops hold a process for
minutes. So a template is held to a small subset of Jinja, checked here on its syntax tree
before it is compiled, with an allow-list of node types (each refusal says why). What does
pass still renders under a budget (templating.py), and the sandbox hooks there refuse the
same things again at run time, in case this check misses a way in.

The subset: `{{ }}` output of the row's variables, filters from FILTERS, methods from METHODS
(`keywords.split(',')`), `if`/`elif`/`else`, comparisons, `and`/`or`/`not`, `+ - / //`, `~`,
slices, and `for` loops over the row's own values (bounded by the row's size). Nothing that
repeats or pads text (`*`, `%`, `**`, `.format()`, `center`...), no `range`, no `set`,
macros, blocks, imports or includes.

The refusals are said in the language of the request that asked (English in a worker).
"""
from __future__ import annotations

from typing import Iterable

from flask_babel import gettext as _, lazy_gettext as _l
from jinja2 import nodes

# Nesting limits: compiling is superlinear in depth, and Python refuses deeper blocks.
MAX_BLOCK_DEPTH = 10
MAX_EXPRESSION_DEPTH = 40

# Jinja's filters that never make more text than they are given, or add a bounded amount
# (default, truncate's end). FILTERS adds replace and join: templating.py has its own
# versions that check the size first.
BUILTIN_FILTERS = ("upper", "lower", "title", "capitalize", "trim", "default", "d", "length",
                   "count", "truncate", "wordcount", "first", "last", "reverse", "int")
FILTERS = BUILTIN_FILTERS + ("replace", "join")
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

_STATEMENTS = {  # the tag a person wrote, for the messages
    "Macro": "macro", "CallBlock": "call", "Assign": "set", "AssignBlock": "set",
    "Include": "include", "Import": "import", "FromImport": "from … import",
    "Extends": "extends", "Block": "block", "FilterBlock": "filter", "With": "with",
    "ScopedEvalContextModifier": "autoescape", "EvalContextModifier": "autoescape",
    "ExprStmt": "do", "Break": "break", "Continue": "continue",
}
_OPERATORS = {"Mul": ("*", _l("it repeats text")), "Mod": ("%", _l("it formats and pads text")),
              "Pow": ("**", _l("it makes numbers of any size"))}


class TemplateRefused(Exception):
    """A template is outside what Pressroom runs (or does not parse); says why."""


def check_tree(tree: nodes.Template, variables: Iterable[str]) -> None:
    """Raise TemplateRefused unless the parsed template stays inside the subset and names
    only `variables` (and its own loop variables)."""
    _Checker(tuple(variables)).statements(tree.body)


def _methods_hint() -> str:
    return ", ".join(f".{m}()" for m in METHODS)


class _Checker:
    """Walks the parsed template with an allow-list of node types."""

    def __init__(self, variables: tuple[str, ...]):
        self.variables = variables
        self.loop_names: list[set[str]] = []
        self.blocks = 0
        self.depth = 0

    def refuse(self, node, why: str, *, undefined: bool = False) -> None:
        """Refuse the template, saying where and why (`undefined`: a name it does not know)."""
        if undefined:
            raise TemplateRefused(_("The template does not render (line %(line)s): %(why)s.",
                                    line=node.lineno, why=why))
        raise TemplateRefused(_("The template cannot be used (line %(line)s): %(why)s.",
                                line=node.lineno, why=why))

    # statements
    def statements(self, body) -> None:
        for node in body:
            self.statement(node)

    def block(self, node, body) -> None:
        self.blocks += 1
        if self.blocks > MAX_BLOCK_DEPTH:
            self.refuse(node, _("{%% if %%} and {%% for %%} may be nested at most %(most)s deep",
                                most=MAX_BLOCK_DEPTH))
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
            self.refuse(node, _("{%% %(tag)s %%} is not allowed; templates use {{ }}, {%% if %%} "
                                "and {%% for %%} over the row's values only", tag=tag))

    def loop(self, node: nodes.For) -> None:
        if node.recursive:
            self.refuse(node, _("recursive loops are not allowed"))
        targets = node.target.items if isinstance(node.target, nodes.Tuple) else [node.target]
        if not all(isinstance(t, nodes.Name) for t in targets):
            self.refuse(node, _("a loop variable must be a plain name"))
        if not self.row_value(node.iter):
            self.refuse(node, _("loops may only go over the row's values (such as "
                                "keywords.split(',')), not %(what)s",
                                what=self.describe(node.iter)))
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
            return node.name in self.variables or (node.name != "loop"
                                                   and self.in_scope(node.name))
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
            return _("a list written in the template")
        if isinstance(node, nodes.Const):
            return _("a constant")
        if isinstance(node, nodes.Name):
            return f"'{node.name}'"
        return _("an expression")

    # expressions
    def expr(self, node) -> None:
        self.depth += 1
        if self.depth > MAX_EXPRESSION_DEPTH:
            self.refuse(node, _("an expression may be nested at most %(most)s deep (filters, "
                                "operators and brackets)", most=MAX_EXPRESSION_DEPTH))
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
            self.refuse(node, _("the operator '%(operator)s' is not allowed (%(why)s)",
                                operator=symbol, why=why))
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
                self.refuse(node, _("the filter '%(name)s' is not allowed (the filters are: "
                                    "%(filters)s)", name=node.name, filters=", ".join(FILTERS)))
            self.operation(node)
        elif isinstance(node, nodes.Test):
            if node.name not in TESTS:
                self.refuse(node, _("the test 'is %(name)s' is not allowed", name=node.name))
            self.operation(node)
        elif isinstance(node, nodes.Getattr):
            if not (isinstance(node.node, nodes.Name) and node.node.name == "loop"
                    and node.attr in LOOP_ATTRIBUTES and self.in_scope("loop")):
                self.refuse(node, _("the attribute '%(name)s' is unsafe here: templates may "
                                    "call only %(methods)s on the row's values",
                                    name=node.attr, methods=_methods_hint()))
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                self.refuse(node, _("the item ['%(name)s'] is unsafe here",
                                    name=node.arg.value))
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
            self.refuse(node, _("this kind of expression (%(kind)s) is not allowed",
                                kind=type(node).__name__))

    def in_scope(self, name: str) -> bool:
        return any(name in names for names in self.loop_names)

    def name(self, node: nodes.Name) -> None:
        if node.name in self.variables or self.in_scope(node.name):
            return
        if node.name in _GLOBALS:
            self.refuse(node, _("'%(name)s' is not available in templates", name=node.name))
        self.refuse(node, _("'%(name)s' is undefined; the variables are %(variables)s",
                            name=node.name, variables=", ".join(self.variables)),
                    undefined=True)

    def operation(self, node) -> None:
        """A filter or test: the value it is applied to, then its arguments."""
        if node.node is not None:
            self.expr(node.node)
        self.arguments(node)

    def arguments(self, node) -> None:
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            self.refuse(node, _("unpacking arguments with * or ** is not allowed"))
        for arg in node.args:
            self.expr(arg)
        for keyword in node.kwargs:
            self.expr(keyword.value)

    def call(self, node: nodes.Call) -> None:
        target = node.node
        if isinstance(target, nodes.Getattr):
            if target.attr not in METHODS:
                self.refuse(node, _("calling '.%(name)s()' is not allowed; templates may call "
                                    "only %(methods)s", name=target.attr,
                                    methods=_methods_hint()))
            self.expr(target.node)
            self.arguments(node)
            return
        if isinstance(target, nodes.Name) and target.name == "range":
            self.refuse(node, _("range() is not allowed: loops may only go over the row's "
                                "values"))
        what = f"{target.name}()" if isinstance(target, nodes.Name) else _("this call")
        self.refuse(node, _("calling %(what)s is not allowed; templates may call only "
                            "%(methods)s", what=what, methods=_methods_hint()))
