"""Parsing YAML that anyone may have written: safe tags only, and bounded in size, aliases and nesting.

``yaml.safe_load`` constructs no Python objects, but it will still spend minutes (or all memory) on a few
hundred bytes: aliases that each repeat the level before (an "alias bomb") expand exponentially in every
walk over the result, deep nesting exhausts recursion, and long integers parse in quadratic time. The
loader here checks the plan's ``PlanLimits`` while the document is *composed*, before anything is built
from it, so such text is refused after reading a few dozen values, with the line at fault.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from trackcheck.errors import PlanError
from trackcheck.plan.limits import DEFAULT_LIMITS, PlanLimits

if yaml.__with_libyaml__:  # libyaml's parser produces the events (four times faster); composing stays here
    from yaml._yaml import CParser as _Parser

    def _init_parser(loader: Any, text: str) -> None:
        _Parser.__init__(loader, text)

    _BASES: tuple[type, ...] = (Composer, _Parser)
else:  # pragma: no cover - PyYAML without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    def _init_parser(loader: Any, text: str) -> None:
        Reader.__init__(loader, text)
        Scanner.__init__(loader)
        Parser.__init__(loader)

    _BASES = (Reader, Scanner, Parser, Composer)


class LimitExceeded(yaml.MarkedYAMLError):
    """The YAML is well-formed but exceeds one of the plan limits (the problem names which)."""


class BoundedLoader(*_BASES, SafeConstructor, Resolver):  # type: ignore[misc]
    """``yaml.SafeLoader`` that enforces ``max_aliases``, ``max_alias_nodes``, ``max_depth`` and
    ``max_integer_chars`` while composing; ``composed`` counts the nodes it built (for tests)."""

    def __init__(self, text: str, limits: PlanLimits = DEFAULT_LIMITS) -> None:
        _init_parser(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.limits = limits
        self.composed = 0
        self._depth = 0
        self._aliases = 0
        self._alias_nodes = 0
        #: id(node) -> (values in it, aliases counted as written out; its height); set once it is complete
        self._shape: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            return self._alias(parent, index)
        self._depth += 1
        if self._depth > self.limits.max_depth:
            mark = self.peek_event().start_mark
            raise LimitExceeded(None, None, f"nested more than {self.limits.max_depth} levels (max_depth)", mark)
        try:
            node: Node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self.composed += 1
        self._shape[id(node)] = self._measure(node)
        return node

    def _alias(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        node = self.anchors.get(event.anchor)
        if node is None:  # an undefined alias: the composer says so
            return super().compose_node(parent, index)
        limits = self.limits
        self._aliases += 1
        if self._aliases > limits.max_aliases:
            raise LimitExceeded(None, None, f"more than {limits.max_aliases} aliases (max_aliases)", event.start_mark)
        shape = self._shape.get(id(node))
        if shape is None:
            problem = f"alias *{event.anchor} is inside the value it names (a recursive structure)"
            raise LimitExceeded(None, None, problem, event.start_mark)
        size, height = shape
        self._alias_nodes += size
        if self._alias_nodes > limits.max_alias_nodes:
            problem = f"aliases expand to more than {limits.max_alias_nodes} values (max_alias_nodes)"
            raise LimitExceeded(None, None, problem, event.start_mark)
        if self._depth + height > limits.max_depth:
            problem = f"alias *{event.anchor} nests more than {limits.max_depth} levels (max_depth)"
            raise LimitExceeded(None, None, problem, event.start_mark)
        return super().compose_node(parent, index)

    def _measure(self, node: Node) -> tuple[int, int]:
        """(size, height) of a node whose children are complete: each child is counted as often as it is
        used, so an alias weighs what it expands to."""
        if not isinstance(node, CollectionNode):
            if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:int":
                self._check_integer(node)
            return 1, 1
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        shapes = [self._shape[id(child)] for child in children]
        return 1 + sum(s for s, _ in shapes), 1 + max((h for _, h in shapes), default=0)

    def _check_integer(self, node: ScalarNode) -> None:
        if len(node.value) > self.limits.max_integer_chars:
            problem = (
                f"an integer longer than {self.limits.max_integer_chars} characters (max_integer_chars): "
                "quote it to make it text"
            )
            raise LimitExceeded(None, None, problem, node.start_mark)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """A value the YAML resolver accepts but Python cannot build (``2026-02-30``) is a YAML error at
        its line, not a ValueError from deep inside the constructor."""
        try:
            return super().construct_object(node, deep=deep)
        # explicit tags fail in other ways too: ``!!bool maybe`` (KeyError), ``!!int ''`` (IndexError)
        except (ValueError, OverflowError, LookupError, AttributeError, TypeError) as exc:
            problem = f"{node.value!r:.60} is not a valid value: {exc}"
            raise ConstructorError(None, None, problem, node.start_mark) from exc


def parse_yaml(text: str, *, limits: PlanLimits = DEFAULT_LIMITS, origin: str = "<plan>") -> Any:
    """The value of one YAML document, parsed safely within ``limits``; PlanError (naming ``origin``, the
    limit and the line) for text that is too large, malformed or exceeds a limit."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise PlanError(f"not Unicode text: a lone surrogate at character {exc.start}", plan=origin) from None
    if size > limits.max_yaml_bytes:
        raise PlanError(f"the plan is {size} bytes, more than {limits.max_yaml_bytes} (max_yaml_bytes)", plan=origin)
    loader = BoundedLoader(text, limits)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        what = "YAML exceeds a limit" if isinstance(exc, LimitExceeded) else "not valid YAML"
        said = ", ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
        said = said or str(exc).splitlines()[0]  # a reader error: "unacceptable character #x0000: ..."
        raise PlanError(f"{what}{line}: {said}", plan=origin) from exc
    finally:
        loader.dispose()
