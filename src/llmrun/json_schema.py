"""Raw JSON Schemas (``output_schema=``): checking a schema, resolving its refs, validating values.

Built on the maintained tools of the field: ``jsonschema`` checks a schema against its
meta-schema (the draft named by ``$schema``, 2020-12 when none is named) and validates
values (with format checks), ``referencing`` resolves ``$ref`` anywhere in the document
(``#/definitions/...``, ``#/$defs/...``, nested JSON pointers, ``$id`` bases). Both are
imported on first use, so ``import llmrun`` stays light.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Mapping
from typing import Any, TypeGuard
from urllib.parse import urldefrag

from llmrun.errors import OutputValidationError, SchemaError

__all__ = ["SchemaDocument", "check_json_schema", "validate_json_value"]


class SchemaDocument:
    """A checked JSON Schema document: its validator and its ``$ref`` resolver.

    Build with :func:`check_json_schema`.
    """

    def __init__(self, schema: dict[str, Any] | bool) -> None:
        import jsonschema

        # (jsonschema's own dependency, untyped)
        specifications: Any = importlib.import_module("jsonschema_specifications").REGISTRY
        from referencing.jsonschema import DRAFT202012, specification_with

        self.schema = schema
        dialect = schema.get("$schema") if isinstance(schema, dict) else None
        self.specification: Any = (
            specification_with(dialect, default=DRAFT202012) if isinstance(dialect, str) else DRAFT202012
        )
        # draft 4-7 ids often end in an empty fragment ("https://x/schema#"): refs resolve against the URL
        base = urldefrag(self.specification.id_of(schema) or "").url
        resource = self.specification.create_resource(schema)
        # the JSON Schema meta-schemas ship with jsonschema: refs to them (a schema of schemas) resolve
        self.registry: Any = specifications.with_resource(uri=base, resource=resource)
        self.base_uri = base
        self.validator_class: Any = jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft202012Validator
        )
        self.format_checker: Any = self.validator_class.FORMAT_CHECKER
        self._validator: Any = self.validator_class(
            schema, registry=self.registry, format_checker=self.format_checker
        )

    def resolver(self) -> Any:
        """A ``referencing`` resolver at the document's base URI."""
        return self.registry.resolver(base_uri=self.base_uri)

    def entered(self, node: dict[str, Any], resolver: Any) -> Any:
        """``resolver`` moved to ``node``'s own ``$id`` (draft 4: ``id``) when it has one."""
        if not any(isinstance(node.get(k), str) for k in ("$id", "id")):
            return resolver  # ("id" may also be a property's name in a ``properties`` map)
        if not isinstance(self.specification.id_of(node), str):
            return resolver
        return resolver.in_subresource(self.specification.create_resource(node))

    def is_valid(self, value: Any, subschema: Any = None) -> bool:
        """Whether ``value`` is valid for the whole schema, or for ``subschema`` of this document.

        False too where a ref in ``subschema`` cannot be resolved from the document's root (one
        relative to a nested ``$id``): callers keep only values known to be valid.
        """
        from referencing.exceptions import Unresolvable

        validator = self._validator if subschema is None else self._validator.evolve(schema=subschema)
        try:
            return bool(validator.is_valid(value))
        except Unresolvable:  # jsonschema's wrapped referencing error is one
            return False

    def errors(self, value: Any) -> list[Any]:
        """jsonschema's validation errors of ``value`` against the whole schema, most relevant first."""
        import jsonschema

        return sorted(self._validator.iter_errors(value), key=jsonschema.exceptions.relevance)


def check_json_schema(schema: object, name: str = "output") -> SchemaDocument:
    """Check that ``schema`` is a usable JSON Schema: JSON data, valid for its meta-schema, refs resolvable.

    Raises :class:`~llmrun.errors.SchemaError` naming the problem. Returns the checked document
    (a JSON copy: later changes to ``schema`` do not affect it).
    """
    import jsonschema

    if not isinstance(schema, Mapping | bool):
        raise SchemaError(
            f"output_schema for {name!r} must be a JSON Schema (a dict such as "
            f'{{"type": "object", "properties": {{...}}}}), got {type(schema).__name__}'
        )
    try:
        text = json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"output_schema for {name!r} is not JSON data: {exc}") from None
    copy: dict[str, Any] | bool = json.loads(text)
    cls = jsonschema.validators.validator_for(copy, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(copy)
    except jsonschema.exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "<root>"
        raise SchemaError(
            f"output_schema for {name!r} is not a valid JSON Schema: at {where}: {exc.message}"
        ) from None
    document = SchemaDocument(copy)
    _check_refs(document, copy, document.resolver())
    return document


def _check_refs(document: SchemaDocument, node: Any, resolver: Any, path: str = "") -> None:
    """Resolve every ``$ref`` once, so a dangling or external ref fails before any generation.

    Each ref resolves against the ``$id`` (draft 4: ``id``) of the subschemas around it.
    """
    from referencing.exceptions import Unresolvable

    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_refs(document, item, resolver, f"{path}/{i}")
    if not isinstance(node, dict):
        return
    resolver = document.entered(node, resolver)
    ref = node.get("$ref")
    if isinstance(ref, str):
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:
            raise SchemaError(
                f"output_schema has a $ref {ref!r} at {path or '<root>'} that cannot be resolved ({exc}); "
                "only refs inside the schema document are supported"
            ) from None
    for key, value in node.items():
        if key not in ("enum", "const", "default", "examples"):
            _check_refs(document, value, resolver, f"{path}/{key}")


def validate_json_value(document: SchemaDocument, text: str, name: str = "output") -> Any:
    """Parse ``text`` as JSON and validate it against ``document``; return the value.

    Raises :class:`~llmrun.errors.OutputValidationError` (carrying the text) naming the
    failing keyword and where it failed.
    """
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise OutputValidationError(
            f"the model's output is not valid JSON for {name} ({exc}); raw output: {text[:200]!r}",
            raw_text=text,
        ) from None
    errors = document.errors(value)
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "<root>"
        raise OutputValidationError(
            f"the model's output for {name!r} does not satisfy the schema's {first.validator!r} at {where}: "
            f"{first.message[:200]}; raw output: {text[:200]!r}",
            raw_text=text,
        )
    return value


def _reject_constant(token: str) -> float:
    raise ValueError(f"{token} is not JSON")


def is_finite_number(value: object) -> TypeGuard[int | float]:
    """A JSON number (not a bool), finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
