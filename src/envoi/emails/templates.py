"""Email templates are Jinja2, rendered in a sandbox; they are checked when they are
written, so a template that could never render is refused at once instead of failing
a campaign.

`make_environment(kind)` is the one place the environment is built: write-time
validation here and rendering at send time both use it, so what passes the check is
what delivery can render. HTML kinds (`text_html`, `x_amp_html`) are autoescaped, as
recipients' data (profile fields, event payloads) must never become markup there;
`subject` and `text_plain` are not HTML and are not escaped. A template opts out for
one value with `{{ value|safe }}`.
"""

from __future__ import annotations

from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

from envoi.emails.variants import KINDS

# The kinds whose text is HTML, hence autoescaped.
HTML_KINDS: frozenset[str] = frozenset({"text_html", "x_amp_html"})
# Nodes that load another template: emails have no template loader.
_LOADING = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


def make_environment(kind: str) -> SandboxedEnvironment:
    """The sandbox a template of `kind` ("subject", "text_html", ...) is checked and
    rendered in. Filters, tests and globals that delivery offers are registered here,
    so the check at write time knows them."""
    if kind not in KINDS:
        raise ValueError(f"unknown template kind {kind!r}")
    return SandboxedEnvironment(autoescape=kind in HTML_KINDS)


def template_error(source: str, environment: SandboxedEnvironment) -> str | None:
    """None when `source` compiles in `environment`; else the problem and its line,
    in words for the user."""
    try:
        tree = environment.parse(source)
        problem = _unrenderable(tree, environment)
        if problem is not None:
            return problem
        # Compiling also reports what parsing cannot (a block defined twice ...).
        environment.compile(tree)
    except TemplateSyntaxError as exc:  # TemplateAssertionError (compile) is one too
        return f"template syntax error at line {exc.lineno}: {exc.message or 'invalid syntax'}"
    return None


def _unrenderable(tree: nodes.Template, environment: SandboxedEnvironment) -> str | None:
    """The first filter or test the environment lacks, or template loading, which no
    email can do. Jinja reports an unknown filter at compile time only outside every
    `{% if %}`; inside one it would fail at send time, so every node is looked at."""
    for node in tree.find_all((nodes.Filter, nodes.Test, *_LOADING)):
        if isinstance(node, nodes.Filter) and node.name not in environment.filters:
            return f"template error at line {node.lineno}: unknown filter '{node.name}'"
        if isinstance(node, nodes.Test) and node.name not in environment.tests:
            return f"template error at line {node.lineno}: unknown test '{node.name}'"
        if isinstance(node, _LOADING):
            return (
                f"template error at line {node.lineno}: an email template cannot "
                "include, import or extend other templates"
            )
    return None
