"""Read a (built) SAM template into the functions and routes the runner serves.

Generic on purpose: every ``AWS::Serverless::Function`` with ``Api`` events becomes routes,
so a new function or route in ``template.yaml`` needs no change here. Intrinsic functions
are resolved the way CloudFormation would for one local stack (``AWS::Region`` us-east-1,
``AWS::StackName`` token-broker-local).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; only YAMLError is used
from samcli.yamlhelper import yaml_parse

STACK_NAME = "token-broker-local"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
PSEUDO_PARAMETERS: dict[str, Any] = {
    "AWS::Region": REGION,
    "AWS::StackName": STACK_NAME,
    "AWS::AccountId": ACCOUNT_ID,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{STACK_NAME}/local",
    "AWS::NotificationARNs": [],
}
FUNCTION_TYPE = "AWS::Serverless::Function"
LAYER_TYPE = "AWS::Serverless::LayerVersion"
API_TYPE = "AWS::Serverless::Api"
TABLE_TYPES = ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable")
_SIMPLE_TABLE_TYPES = {"String": "S", "Number": "N", "Binary": "B"}


class TemplateError(Exception):
    """The template cannot be run locally."""


class UnsupportedFunction(TemplateError):
    """A function this runner cannot execute (not a python Zip function)."""


class _NoValue:
    """``AWS::NoValue``: the key or list item it stands in is dropped."""


NO_VALUE = _NoValue()


@dataclass(frozen=True)
class Route:
    method: str  # upper case; "ANY" matches every method
    path: str  # the resource path, e.g. /auth/login or /items/{id}
    function: str
    auth: str = "NONE"  # "AWS_IAM" or "API_KEY" when API Gateway would check the caller first

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters when this route serves ``method path``, else None."""
        if self.method not in ("ANY", method.upper()):
            return None
        return match_path(self.path, path)


@dataclass(frozen=True)
class Function:
    name: str  # the logical id
    code_dir: Path
    handler: str
    runtime: str
    layer_dirs: tuple[Path, ...]  # each layer's python/ dir, Lambda's /opt/python
    timeout: int
    memory_size: int
    environment: Mapping[str, str] = field(default_factory=dict)
    remote_layers: tuple[str, ...] = ()  # published layer ARNs: nothing local to put on the path


@dataclass(frozen=True)
class Table:
    """A DynamoDB table of the template, to be created in moto."""

    name: str
    key_schema: list[dict[str, str]]
    attributes: list[dict[str, str]]
    ttl_attribute: str | None = None


@dataclass(frozen=True)
class App:
    functions: Mapping[str, Function]
    routes: tuple[Route, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)  # functions that cannot run here, and why
    tables: tuple[Table, ...] = ()
    # The API's GatewayResponses: response type -> the headers API Gateway adds to its own errors.
    gateway_responses: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def route_for(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        # Literal paths win over parameterised ones, as in API Gateway.
        for route in sorted(self.routes, key=lambda r: ("{" in r.path, r.method == "ANY")):
            params = route.match(method, path)
            if params is not None:
                return route, params
        return None

    def secret_ids(self, variable: str = "BROKER_SECRET_ID") -> list[str]:
        ids = (f.environment.get(variable, "") for f in self.functions.values())
        return sorted({i for i in ids if i})


def match_path(template: str, path: str) -> dict[str, str] | None:
    """Match an API Gateway resource path (``{name}``, greedy ``{name+}``) against a request path."""
    pattern = ""
    for part in re.split(r"(\{[^}]+\})", template):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            greedy = name.endswith("+")
            name = name.rstrip("+")
            pattern += f"(?P<{name}>.+)" if greedy else f"(?P<{name}>[^/]+)"
        else:
            pattern += re.escape(part)
    found = re.fullmatch(pattern, path.rstrip("/") or "/") or re.fullmatch(pattern, path)
    return None if found is None else found.groupdict()


def load_app(template_path: Path, overrides: Mapping[str, str] | None = None) -> App:
    """Every runnable function, and a route per ``Api`` event (CodeUri/ContentUri relative to the template)."""
    try:
        document = yaml_parse(template_path.read_text())
    except FileNotFoundError as exc:
        raise TemplateError(f"{template_path} not found: run `sam build` first (or drop --no-build)") from exc
    except yaml.YAMLError as exc:
        raise TemplateError(f"{template_path}: {exc}") from exc
    if not isinstance(document, Mapping):
        raise TemplateError(f"{template_path} is not a template")
    resolver = Resolver(document, overrides or {}, template_path.parent)
    functions: dict[str, Function] = {}
    routes: list[Route] = []
    skipped: dict[str, str] = {}
    for name, resource in resolver.resources.items():
        if resource.get("Type") != FUNCTION_TYPE or not resolver.included(resource):
            continue
        try:
            functions[name] = resolver.function(name, resource)
        except UnsupportedFunction as exc:
            skipped[name] = str(exc)
            continue
        events = resolver.resolve(resource.get("Properties", {}).get("Events", {})) or {}
        api_events = [e.get("Properties", {}) for e in events.values() if e.get("Type") == "Api"]
        routes += [Route(str(e["Method"]).upper(), str(e["Path"]), name, route_auth(resolver, e)) for e in api_events]
    tables = tuple(
        resolver.table(name, resource)
        for name, resource in resolver.resources.items()
        if resource.get("Type") in TABLE_TYPES and resolver.included(resource)
    )
    return App(functions, tuple(routes), skipped, tables, gateway_responses(resolver))


def gateway_responses(resolver: Resolver) -> dict[str, tuple[tuple[str, str], ...]]:
    """The first API's ``GatewayResponses`` headers, their values unquoted ('no-store' -> no-store)."""
    api: Mapping[str, Any] = next(
        (r for r in resolver.resources.values() if r.get("Type") == API_TYPE and resolver.included(r)), {}
    )
    declared = resolver.resolve((api.get("Properties") or {}).get("GatewayResponses")) or {}
    found: dict[str, tuple[tuple[str, str], ...]] = {}
    for kind, response in declared.items():
        headers = ((response or {}).get("ResponseParameters") or {}).get("Headers") or {}
        found[str(kind)] = tuple((str(name), str(value).strip("'")) for name, value in headers.items())
    return found


def route_auth(resolver: Resolver, event: dict[str, Any]) -> str:
    """What API Gateway checks before the function runs: the event's own Auth, or the API's
    DefinitionBody (``x-amazon-apigateway-auth``, an api_key ``security`` requirement)."""
    auth = event.get("Auth") or {}
    if auth.get("Authorizer") == "AWS_IAM":
        return "AWS_IAM"
    if auth.get("ApiKeyRequired") is True:
        return "API_KEY"
    api = event.get("RestApiId")
    api_name = api.get("Ref") if isinstance(api, dict) else api
    resource = resolver.resources.get(str(api_name), {}) if api_name else {}
    body = resolver.resolve(resource.get("Properties", {}).get("DefinitionBody")) or {}
    operation = (body.get("paths", {}).get(str(event["Path"])) or {}).get(str(event["Method"]).lower()) or {}
    if (operation.get("x-amazon-apigateway-auth") or {}).get("type") == "AWS_IAM":
        return "AWS_IAM"
    if any("api_key" in requirement for requirement in operation.get("security") or []):
        return "API_KEY"
    return "NONE"


class Resolver:
    """Resolves intrinsic functions against Parameters, Conditions and pseudo parameters."""

    def __init__(self, document: Mapping[str, Any], overrides: Mapping[str, str], base_dir: Path) -> None:
        self.base_dir = base_dir
        self.resources: Mapping[str, Any] = document.get("Resources", {})
        self.globals: Mapping[str, Any] = (document.get("Globals") or {}).get("Function", {})
        declared: Mapping[str, Any] = document.get("Parameters") or {}
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise TemplateError(f"unknown template parameter(s): {', '.join(unknown)}")
        self.parameters: dict[str, Any] = {**PSEUDO_PARAMETERS}
        for name, spec in declared.items():
            if name in overrides:
                self.parameters[name] = overrides[name]
            elif "Default" in spec:
                self.parameters[name] = spec["Default"]
        self._conditions: Mapping[str, Any] = document.get("Conditions") or {}
        self._condition_values: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._condition_values:
            if name not in self._conditions:
                raise TemplateError(f"unknown condition {name}")
            self._condition_values[name] = bool(self.resolve(self._conditions[name]))
        return self._condition_values[name]

    def included(self, resource: Mapping[str, Any]) -> bool:
        name = resource.get("Condition")
        return name is None or self.condition(str(name))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [i for i in items if i is not NO_VALUE]
        if not isinstance(value, Mapping):
            return value
        if len(value) == 1:
            (key, argument), *_ = value.items()
            if key == "Ref" or key.startswith("Fn::") or key == "Condition":
                return self._intrinsic(key, argument)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def _intrinsic(self, key: str, argument: Any) -> Any:  # noqa: PLR0912 - one branch per intrinsic
        match key:
            case "Ref":
                return self._ref(str(argument))
            case "Condition":
                return self.condition(str(argument))
            case "Fn::If":
                name, if_true, if_false = argument
                return self.resolve(if_true if self.condition(str(name)) else if_false)
            case "Fn::Equals":
                left, right = (self.resolve(a) for a in argument)
                return str(left) == str(right)
            case "Fn::Not":
                return not self.resolve(argument[0])
            case "Fn::And":
                return all(self.resolve(a) for a in argument)
            case "Fn::Or":
                return any(self.resolve(a) for a in argument)
            case "Fn::Sub":
                return self._sub(argument)
            case "Fn::Join":
                separator, items = argument
                return str(separator).join(str(i) for i in self.resolve(items))
            case "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            case "Fn::Split":
                separator, text = argument
                return str(self.resolve(text)).split(str(separator))
            case "Fn::GetAtt":
                parts = argument.split(".", 1) if isinstance(argument, str) else argument
                return f"local-{parts[0]}-{parts[1]}"  # no deployed resource to read it from
            case _:
                raise TemplateError(f"{key} is not supported by the local runner")

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            if self.resources[name].get("Type") in TABLE_TYPES:
                return self.table_name(name)
            return name  # another resource: its logical id stands in for its physical id
        raise TemplateError(f"Ref to unknown name {name}")

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {k: self.resolve(v) for k, v in variables.items()}

        def replace(found: re.Match[str]) -> str:
            name = found.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in values:
                return str(values[name])
            if "." in name:
                return str(self._intrinsic("Fn::GetAtt", name))
            return str(self._ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, str(text))

    def function(self, name: str, resource: Mapping[str, Any]) -> Function:
        own: Mapping[str, Any] = self.resolve(resource.get("Properties", {}))
        merged: Mapping[str, Any] = {**self.resolve(self.globals), **own}
        if merged.get("PackageType", "Zip") != "Zip":
            raise UnsupportedFunction("only Zip functions run locally")
        runtime = str(merged.get("Runtime", ""))
        if not runtime.startswith("python"):
            raise UnsupportedFunction(f"runtime {runtime!r} is not supported (python only)")
        environment = {
            **_variables(self.resolve(self.globals).get("Environment")),
            **_variables(own.get("Environment")),
        }
        # SAM appends a function's Layers to the global ones.
        layers = [*self.resolve(self.globals).get("Layers", []), *own.get("Layers", [])]
        return Function(
            name=name,
            code_dir=(self.base_dir / str(merged["CodeUri"])).resolve(),
            handler=str(merged["Handler"]),
            runtime=runtime,
            layer_dirs=tuple(self._layer_dir(str(layer)) for layer in layers if self._is_local_layer(layer)),
            timeout=int(merged.get("Timeout", 3)),
            memory_size=int(merged.get("MemorySize", 128)),
            environment=environment,
            remote_layers=tuple(str(layer) for layer in layers if not self._is_local_layer(layer)),
        )

    def table_name(self, name: str) -> str:
        properties = self.resources[name].get("Properties") or {}
        return str(self.resolve(properties.get("TableName", f"{STACK_NAME}-{name}")))

    def table(self, name: str, resource: Mapping[str, Any]) -> Table:
        properties: Mapping[str, Any] = self.resolve(resource.get("Properties") or {})
        if resource["Type"] == "AWS::Serverless::SimpleTable":
            key = properties.get("PrimaryKey") or {"Name": "id", "Type": "String"}
            key_type = _SIMPLE_TABLE_TYPES[str(key["Type"])]
            return Table(
                self.table_name(name),
                [{"AttributeName": str(key["Name"]), "KeyType": "HASH"}],
                [{"AttributeName": str(key["Name"]), "AttributeType": key_type}],
            )
        ttl = properties.get("TimeToLiveSpecification") or {}
        return Table(
            self.table_name(name),
            [dict(k) for k in properties["KeySchema"]],
            [dict(a) for a in properties["AttributeDefinitions"]],
            str(ttl["AttributeName"]) if ttl.get("Enabled") in (True, "true") else None,
        )

    def _is_local_layer(self, layer: Any) -> bool:
        return bool(self.resources.get(str(layer), {}).get("Type") == LAYER_TYPE)

    def _layer_dir(self, layer: str) -> Path:
        resource = self.resources[layer]
        content = self.base_dir / str(self.resolve(resource["Properties"]["ContentUri"]))
        python_dir = content / "python"
        return (python_dir if python_dir.is_dir() else content).resolve()


def _variables(environment: Any) -> dict[str, str]:
    variables = (environment or {}).get("Variables") or {}
    return {str(k): _text(v) for k, v in variables.items()}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
