"""PromQL static checks against the series the gateway really exports.

An expression is walked as an AST (promql-parser); for every sub-expression the set of labels
it can carry is inferred from the gateway's exposition, so that selectors, `by`/`without`,
`on`/`ignoring`/`group_*` and legends naming a label the gateway never sets are caught.
Series of other exporters (vLLM, DCGM, kube-state-metrics, `up`) are not checked: their
label sets are unknown here (None).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import promql_parser as pp

# Labels Prometheus adds when scraping through a ServiceMonitor.
TARGET_LABELS = frozenset(
    {"job", "instance", "namespace", "pod", "container", "service", "endpoint"}
)
GATEWAY_PREFIXES = ("synapse_", "process_")
SET_OPS = {"and", "or", "unless"}

Labels = frozenset[str] | None  # None: unknown (a series the gateway does not export)


def is_gateway_series(name: str | None) -> bool:
    return bool(name) and name.startswith(GATEWAY_PREFIXES)


def selectors(node: object) -> Iterator[pp.VectorSelector]:
    """Every vector selector in the expression, depth first."""
    if isinstance(node, pp.VectorSelector):
        yield node
    elif isinstance(node, pp.MatrixSelector):
        yield node.vector_selector
    elif isinstance(node, pp.AggregateExpr):
        yield from selectors(node.expr)
        if node.param is not None:
            yield from selectors(node.param)
    elif isinstance(node, pp.BinaryExpr):
        yield from selectors(node.lhs)
        yield from selectors(node.rhs)
    elif isinstance(node, pp.Call):
        for arg in node.args:
            yield from selectors(arg)
    elif isinstance(node, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
        yield from selectors(node.expr)


@dataclass
class Checker:
    """Infers labels bottom-up and records every use of a label or series that cannot exist."""

    exported: dict[str, frozenset[str]]  # sample name -> its label names (le included)
    problems: list[str] = field(default_factory=list)

    def check(self, promql: str, legend: str = "") -> list[str]:
        self.problems = []
        labels = self.labels(pp.parse(promql))
        for name in _legend_labels(legend):
            if labels is not None and name not in labels:
                self.problems.append(f"legend uses {{{{{name}}}}}, result has {sorted(labels)}")
        return self.problems

    # -- inference ---------------------------------------------------------------------
    def labels(self, node: object) -> Labels:
        if isinstance(node, pp.VectorSelector):
            return self._selector(node)
        if isinstance(node, pp.MatrixSelector):
            return self._selector(node.vector_selector)
        if isinstance(node, (pp.NumberLiteral, pp.StringLiteral)):
            return frozenset()
        if isinstance(node, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
            return self.labels(node.expr)
        if isinstance(node, pp.Call):
            return self._call(node)
        if isinstance(node, pp.AggregateExpr):
            return self._aggregate(node)
        if isinstance(node, pp.BinaryExpr):
            return self._binary(node)
        raise TypeError(f"unhandled PromQL node {type(node).__name__}")

    def _selector(self, vs: pp.VectorSelector) -> Labels:
        if not is_gateway_series(vs.name):
            return None
        if vs.name not in self.exported:
            self.problems.append(f"{vs.name} is not exported by the gateway")
            return None
        known = self.exported[vs.name] | TARGET_LABELS
        for matcher in vs.matchers.matchers:
            if matcher.name != "__name__" and matcher.name not in known:
                self.problems.append(
                    f"{vs.name}{{{matcher.name}...}}: the gateway exports no label "
                    f"{matcher.name!r} on it (labels: {sorted(self.exported[vs.name])})"
                )
        return known

    def _call(self, call: pp.Call) -> Labels:
        name = call.func.name
        arg_labels = [self.labels(a) for a in call.args]  # visits every argument
        if name in ("label_replace", "label_join"):
            base = arg_labels[0]
            return None if base is None else base | {call.args[1].val}
        if name == "histogram_quantile":
            inner = arg_labels[1]
            if inner is not None and "le" not in inner:
                self.problems.append("histogram_quantile over a series without 'le'")
            return None if inner is None else inner - {"le"}
        if name in ("absent", "absent_over_time", "vector", "time", "scalar"):
            return frozenset()
        vectors = [
            labels
            for a, labels in zip(call.args, arg_labels, strict=True)
            if not isinstance(a, (pp.NumberLiteral, pp.StringLiteral))
        ]
        return vectors[0] if vectors else frozenset()

    def _aggregate(self, agg: pp.AggregateExpr) -> Labels:
        inner = self.labels(agg.expr)
        if agg.param is not None:
            self.labels(agg.param)
        modifier = agg.modifier
        grouping = frozenset(modifier.labels) if modifier is not None else frozenset()
        if inner is not None:
            for name in sorted(grouping - inner):
                self.problems.append(
                    f"{agg.op} {_mod_word(modifier)} ({name}): the aggregated series have no "
                    f"label {name!r} (they have {sorted(inner)})"
                )
        if modifier is None:
            result: Labels = frozenset()
        elif modifier.type == pp.AggModifierType.By:
            result = grouping
        else:
            result = None if inner is None else inner - grouping
        if str(agg.op) == "count_values" and result is not None:
            result = result | {agg.param.val}
        return result

    def _binary(self, expr: pp.BinaryExpr) -> Labels:
        lhs, rhs = self.labels(expr.lhs), self.labels(expr.rhs)
        op = str(expr.op)
        modifier = expr.modifier
        matching = modifier.matching if modifier is not None else None
        on = matching is not None and matching.type == pp.LabelModifierType.Include
        match_labels = frozenset(matching.labels) if matching is not None else frozenset()
        group = frozenset(modifier.group_labels or ()) if modifier is not None else frozenset()
        for side, labels in (("left", lhs), ("right", rhs)):
            if labels is None or _is_scalar(expr, side):
                continue
            if on:
                for name in sorted(match_labels - labels):
                    self.problems.append(f"on ({name}): the {side} side has no label {name!r}")
        card = modifier.card if modifier is not None else None
        if card == pp.VectorMatchCardinality.ManyToOne:
            one_side = rhs
        elif card == pp.VectorMatchCardinality.OneToMany:
            one_side = lhs
        else:
            one_side = None
        if one_side is not None:
            for name in sorted(group - one_side):
                self.problems.append(f"group_x ({name}): the 'one' side has no label {name!r}")

        if op == "or":
            return None if lhs is None or rhs is None else lhs | rhs
        if op in SET_OPS:
            return lhs
        if _is_scalar(expr, "left"):
            return rhs
        if _is_scalar(expr, "right"):
            return lhs
        if card == pp.VectorMatchCardinality.ManyToOne:
            return None if lhs is None or rhs is None else lhs | (group & rhs)
        if card == pp.VectorMatchCardinality.OneToMany:
            return None if lhs is None or rhs is None else rhs | (group & lhs)
        if lhs is None:
            return None
        if matching is not None and on:
            return match_labels
        return lhs - match_labels


def _is_scalar(expr: pp.BinaryExpr, side: str) -> bool:
    node = expr.lhs if side == "left" else expr.rhs
    while isinstance(node, (pp.ParenExpr, pp.UnaryExpr)):
        node = node.expr
    if isinstance(node, pp.Call):
        return node.func.name in ("scalar", "time", "pi")
    return isinstance(node, pp.NumberLiteral)


def _mod_word(modifier: pp.AggModifier) -> str:
    return "by" if modifier.type == pp.AggModifierType.By else "without"


def _legend_labels(legend: str) -> list[str]:
    return re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)
