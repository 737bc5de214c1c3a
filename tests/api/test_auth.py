"""Who may call the API: tokens by hash, roles, and where an open API may listen."""

from __future__ import annotations

import inspect

import pytest

from service.api.auth import (
    GRANTS,
    LOCAL_ADMIN,
    ApiExposedError,
    Authenticator,
    ForbiddenError,
    Permission,
    Principal,
    UnauthenticatedError,
    check_exposure,
    is_loopback,
    sha256_hex,
)
from service.errors import InputError
from service.settings import ApiSettings, load_settings

TOKENS = {"viewer": "v-secret-1", "operator": "o-secret-2", "approver": "a-secret-3"}


def api_settings(**tokens: str) -> ApiSettings:
    return ApiSettings.model_validate(
        {
            "tokens": [
                {"name": f"{role}-token", "role": role, "sha256": sha256_hex(token)}
                for role, token in tokens.items()
            ]
        }
    )


def test_a_configured_token_is_its_principal() -> None:
    auth = Authenticator(api_settings(**TOKENS))
    for role, token in TOKENS.items():
        assert auth.principal(f"Bearer {token}") == Principal(f"{role}-token", role)  # type: ignore[arg-type]
        assert auth.principal(f"bearer   {token}") == Principal(f"{role}-token", role)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer nope", "v-secret-1"]
)
def test_no_token_or_an_unknown_one_is_unauthenticated(header: str | None) -> None:
    auth = Authenticator(api_settings(**TOKENS))
    with pytest.raises(UnauthenticatedError) as caught:
        auth.principal(header)
    assert "secret" not in str(caught.value)


def test_the_hash_is_compared_not_the_token() -> None:
    # the configured hash itself, presented as a token, is not accepted
    auth = Authenticator(api_settings(viewer="v-secret-1"))
    with pytest.raises(UnauthenticatedError):
        auth.principal(f"Bearer {sha256_hex('v-secret-1')}")


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("viewer", {Permission.READ}),
        ("operator", {Permission.READ, Permission.OPERATE}),
        ("approver", {Permission.READ, Permission.APPROVE}),
        ("admin", {Permission.READ, Permission.OPERATE, Permission.APPROVE}),
    ],
)
def test_each_role_has_exactly_its_permissions(role: str, allowed: set[Permission]) -> None:
    auth = Authenticator(api_settings(**{role: "tok-" + role}))
    for permission in Permission:
        if permission in allowed:
            assert auth.authorize(f"Bearer tok-{role}", permission).role == role
        else:
            with pytest.raises(ForbiddenError) as caught:
                auth.authorize(f"Bearer tok-{role}", permission)
            assert f"role {role}, which may not {permission.value}" in str(caught.value)
    assert set(GRANTS[role]) == allowed  # type: ignore[index]


def test_without_tokens_every_caller_is_the_local_admin() -> None:
    auth = Authenticator(ApiSettings())
    assert auth.open
    assert auth.authorize(None, Permission.APPROVE) == LOCAL_ADMIN


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.org", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_open_api_is_refused_beyond_loopback() -> None:
    check_exposure("127.0.0.1", ApiSettings())
    check_exposure("0.0.0.0", api_settings(viewer="x"))
    with pytest.raises(ApiExposedError) as caught:
        check_exposure("0.0.0.0", ApiSettings())
    assert "http_host '0.0.0.0' is not a loopback address and api.tokens is empty" in str(
        caught.value
    )
    assert isinstance(caught.value, InputError)  # the CLI's exit 2 with the message


def test_tokens_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = sha256_hex("from-env")
    monkeypatch.setenv(
        "REBALANCER_API__TOKENS",
        f'[{{"name": "ci", "role": "viewer", "sha256": "{digest.upper()}"}}]',
    )
    settings = load_settings()
    (token,) = settings.api.tokens
    assert (token.name, token.role, token.sha256) == ("ci", "viewer", digest)


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (
            '[{"name": "a", "role": "viewer", "sha256": "the-raw-token-by-mistake"}]',
            "config: api.tokens.0.sha256: String should match pattern",
        ),
        (
            '[{"name": "a", "role": "root", "sha256": "' + "0" * 64 + '"}]',
            "config: api.tokens.0.role: Input should be 'viewer', 'operator', 'approver' or "
            "'admin'",
        ),
        (
            '[{"name": "a", "role": "viewer", "sha256": "'
            + "0" * 64
            + '"}, {"name": "a", "role": "admin", "sha256": "'
            + "1" * 64
            + '"}]',
            "config: api: tokens: the names a are used more than once",
        ),
    ],
)
def test_bad_tokens_are_refused_without_showing_them(
    monkeypatch: pytest.MonkeyPatch, tokens: str, expected: str
) -> None:
    monkeypatch.setenv("REBALANCER_API__TOKENS", tokens)
    with pytest.raises(InputError) as caught:
        load_settings()
    assert expected in str(caught.value)
    assert "the-raw-token-by-mistake" not in str(caught.value)


def test_every_route_and_dependency_runs_on_the_event_loop() -> None:
    # FastAPI runs plain functions in a thread pool; the read model is changed by the
    # service's event loop, so reading it from another thread could see it mid-change
    from typing import cast

    from fastapi.routing import APIRoute

    from service.api.routes import Backend, build_app

    app = build_app(cast(Backend, object()), Authenticator(ApiSettings()))
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 12
    for route in routes:
        assert inspect.iscoroutinefunction(route.endpoint), route.path
        for dependency in route.dependant.dependencies:
            assert inspect.iscoroutinefunction(dependency.call), (route.path, dependency.call)
