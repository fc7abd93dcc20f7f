"""docs/openapi.yaml documents exactly the routes template.yaml deploys: a route added to the
template without its documentation (or documented and gone) fails here."""

from __future__ import annotations

from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs
from openapi_spec_validator import validate

from tests.support import ROOT
from tests.unit.test_template import source

DOCUMENT = ROOT / "docs" / "openapi.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return loaded


def template_routes() -> set[tuple[str, str]]:
    routes: set[tuple[str, str]] = set()
    for resource in source()["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for event in (resource["Properties"].get("Events") or {}).values():
            if event["Type"] == "Api":
                routes.add((event["Properties"]["Path"], event["Properties"]["Method"].lower()))
    return routes


def documented_routes() -> set[tuple[str, str]]:
    return {(path, method) for path, item in document()["paths"].items() for method in item if method in HTTP_METHODS}


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = document()
    assert spec["openapi"].startswith("3.1.")
    validate(spec)


def test_every_route_of_the_template_is_documented_and_no_other() -> None:
    routes = template_routes()
    assert ("/auth/login", "post") in routes
    assert documented_routes() == routes


def test_every_operation_documents_its_bodies_errors_and_headers() -> None:
    spec = document()
    for path, method in documented_routes():
        operation = spec["paths"][path][method]
        responses = operation["responses"]
        if method == "post":
            assert set(operation["requestBody"]["content"]) == {"application/json", "application/x-www-form-urlencoded"}
            assert {"200", "400", "403", "413", "415", "429", "502", "503", "504"} <= set(responses)
        elif method == "get":  # the metadata document and the code flow: no body
            assert {"200", "403"} <= set(responses) or {"302", "400", "404"} <= set(responses)
            assert "requestBody" not in operation
        else:
            assert {"204", "403"} <= set(responses)
    components = spec["components"]
    assert components["schemas"]["Error"]["required"] == ["error", "error_description"]
    assert {"CacheControl", "Pragma", "RetryAfter", "SetCookie", "AllowOrigin"} <= set(components["headers"])
    assert components["headers"]["CacheControl"]["schema"]["const"] == "no-store"
