"""LINE's OpenAPI specs as request and webhook validators.

The vendored specs (specs/messaging-api.yml, specs/webhook.yml) are the contract: linesim accepts what
they allow and refuses what they do not. OpenAPI 3.0 schemas are almost JSON Schema; three things
need translating before jsonschema (Draft 2020-12) can use them:

- `$ref: "#/components/schemas/X"` points into the whole document, so the whole converted document
  is registered as one `referencing` resource and every validator starts from a pointer into it.
- `nullable: true` means "or null".
- `discriminator`: a subtype such as TextMessage is `allOf: [Message, {text...}]`, and Message only
  requires `type`. Read as mere documentation, `{"type": "text"}` without `text` would be valid,
  which LINE refuses. So each discriminated schema X becomes "X's own rules, and if `type` is k then
  the mapped subtype's rules" (if/then, which keeps jsonschema's errors precise), and the subtypes'
  `allOf: [X]` point at X's own rules only (otherwise X → subtype → X would never end). A `type`
  outside the mapping is refused, as LINE refuses unknown message and action types.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_DIR = Path(__file__).resolve().parent / "specs"
_SCHEMAS = "#/components/schemas/"
_BASE = "__own"  # suffix of a discriminated schema's own rules, without the dispatch


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a body is refused, shaped like an item of LINE's `details`."""
    message: str
    property: str = ""

    def as_json(self) -> dict[str, str]:
        return {"message": self.message, "property": self.property} if self.property else {"message": self.message}


@functools.cache
def load(name: str) -> dict[str, Any]:
    """The raw spec document (e.g. "messaging-api.yml"), parsed once."""
    with open(SPEC_DIR / name, encoding="utf-8") as f:
        # The C loader, where PyYAML has it, reads the 6,000-line spec several times faster.
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _convert_node(node: Any, discriminated: set[str]) -> Any:
    if isinstance(node, list):
        return [_convert_node(x, discriminated) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert_node(v, discriminated) for k, v in node.items() if k not in ("nullable", "discriminator")}
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    if isinstance(out.get("allOf"), list):
        # A subtype inherits its parent's own rules, not the parent's dispatch back to subtypes.
        out["allOf"] = [
            {**item, "$ref": item["$ref"] + _BASE}
            if isinstance(item, dict) and item.get("$ref", "").removeprefix(_SCHEMAS) in discriminated
            else item
            for item in out["allOf"]
        ]
    return out


def convert(doc: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.0 document with its component schemas rewritten as JSON Schema 2020-12."""
    schemas = doc.get("components", {}).get("schemas", {})
    discriminated = {name for name, s in schemas.items() if isinstance(s, dict) and "discriminator" in s}
    out = copy.deepcopy(doc)
    converted: dict[str, Any] = {}
    for name, schema in schemas.items():
        own = _convert_node(schema, discriminated)
        if name not in discriminated:
            converted[name] = own
            continue
        disc = schema["discriminator"]
        prop, mapping = disc["propertyName"], disc.get("mapping", {})
        converted[name + _BASE] = own
        rules: list[dict[str, Any]] = [{"$ref": _SCHEMAS + name + _BASE}]
        if mapping:
            rules.append({"properties": {prop: {"enum": sorted(mapping)}}})
        for value, ref in mapping.items():
            rules.append({
                "if": {"properties": {prop: {"const": value}}, "required": [prop]},
                "then": {"$ref": ref},
            })
        converted[name] = {"allOf": rules}
    out.setdefault("components", {})["schemas"] = converted
    return out


@functools.cache
def _registry_and_uri(name: str) -> tuple[Registry, str]:
    uri = f"urn:linesim:{name}"
    resource = Resource(contents=convert(load(name)), specification=DRAFT202012)
    return Registry().with_resource(uri, resource), uri


def _path_of(parts: Any) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def _problem(error: Any) -> list[Problem]:
    where = _path_of(error.absolute_path)
    kind, value = error.validator, error.validator_value
    if kind == "required":
        missing = [p for p in value if isinstance(error.instance, dict) and p not in error.instance]
        return [Problem("must be specified", _path_of([*error.absolute_path, p])) for p in missing]
    if kind in ("maxItems", "minItems"):
        lo = error.schema.get("minItems", 0)
        hi = error.schema.get("maxItems")
        span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        return [Problem(f"Size must be {span}", where)]
    if kind in ("maxLength", "minLength"):
        return [Problem(f"Length must be {'at most' if kind == 'maxLength' else 'at least'} {value}", where)]
    if kind == "enum":
        return [Problem("must be one of " + ", ".join(map(str, value)), where)]
    if kind == "type":
        return [Problem(f"must be of type {value}", where)]
    return [Problem(error.message, where)]


class SchemaValidator:
    """Validates instances against one component schema of one spec document."""

    def __init__(self, doc_name: str, schema_name: str):
        registry, uri = _registry_and_uri(doc_name)
        self.doc_name, self.schema_name = doc_name, schema_name
        self._validator = Draft202012Validator({"$ref": f"{uri}{_SCHEMAS}{schema_name}"}, registry=registry)

    def problems(self, instance: Any) -> list[Problem]:
        """Every reason the instance is refused (empty when it is valid), duplicates removed."""
        found: list[Problem] = []
        for error in self._validator.iter_errors(instance):
            for p in _problem(error):
                if p not in found:
                    found.append(p)
        return found

    def is_valid(self, instance: Any) -> bool:
        return self._validator.is_valid(instance)

    def validate(self, instance: Any) -> None:
        """Raises ValueError listing the problems; handy in tests."""
        found = self.problems(instance)
        if found:
            raise ValueError(f"not a valid {self.schema_name}: " + "; ".join(
                f"{p.property or '(body)'}: {p.message}" for p in found))


@functools.cache
def schema_validator(doc_name: str, schema_name: str) -> SchemaValidator:
    return SchemaValidator(doc_name, schema_name)


@functools.cache
def request_validator(method: str, path: str) -> SchemaValidator:
    """The validator of an operation's JSON request body, e.g. ("post", "/v2/bot/message/push")."""
    operation = load("messaging-api.yml")["paths"][path][method.lower()]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return schema_validator("messaging-api.yml", ref.removeprefix(_SCHEMAS))


def webhook_validator() -> SchemaValidator:
    """The validator of a webhook body LINE POSTs to a bot (CallbackRequest in webhook.yml)."""
    return schema_validator("webhook.yml", "CallbackRequest")


def error_body(problems: list[Problem]) -> dict[str, Any]:
    """A 400 body as LINE words it."""
    return {"message": f"The request body has {len(problems)} error(s)",
            "details": [p.as_json() for p in problems]}
