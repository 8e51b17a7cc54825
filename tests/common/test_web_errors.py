"""The one error middleware and the error tree's wire forms, called directly (no sockets)."""

from __future__ import annotations

import asyncio
import errno

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from mydfs.common.errors import (
    LengthRequired,
    MydfsError,
    NotFound,
    NotLeader,
    Redirect,
    SliceMoved,
    StorageIOError,
    SyncFailed,
    Unavailable,
    error_from_dict,
)
from mydfs.common.metrics import http_metrics
from mydfs.common.web import error_middleware


def run(exc: BaseException | None, *, group_id: int | None = 2) -> web.StreamResponse:
    requests, latency = http_metrics("test", CollectorRegistry())
    middleware = error_middleware(
        requests, latency, max_body=100, group_id=group_id, context={"node": "n1"}
    )

    async def handler(request: web.Request) -> web.StreamResponse:
        if exc is not None:
            raise exc
        return web.Response(text="ok")

    request = make_mocked_request("GET", "/slices/5?gen=3")
    return asyncio.run(middleware(request, handler))


def body(response: web.StreamResponse) -> object:
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    return orjson.loads(response.body)


def test_a_typed_error_becomes_its_wire_form() -> None:
    response = run(NotFound("no such slot", slot=5))
    assert response.status == 404
    assert body(response) == {
        "error": "not_found",
        "message": "no such slot",
        "context": {"slot": 5},
    }
    assert "Retry-After" not in response.headers


def test_a_retryable_error_says_when_to_retry() -> None:
    response = run(Unavailable("busy"))
    assert response.status == 503 and response.headers["Retry-After"] == "1"


def test_a_missing_length_is_a_411() -> None:
    response = run(LengthRequired("Content-Length is required for slice bodies"))
    assert response.status == 411
    assert body(response) == {
        "error": "length_required",
        "message": "Content-Length is required for slice bodies",
        "context": {},
    }


@pytest.mark.parametrize(
    "exc", [Redirect("http://n2:1"), NotLeader("writes go to the leader", leader="http://n2:1")]
)
def test_redirects_keep_path_and_query(exc: MydfsError) -> None:
    with pytest.raises(web.HTTPTemporaryRedirect) as got:
        run(exc)
    assert got.value.location == "http://n2:1/slices/5?gen=3"


def test_not_leader_without_a_leader_is_a_503() -> None:
    assert run(NotLeader("no leader")).status == 503


def test_a_moved_slice_is_a_301_with_its_target() -> None:
    here = run(SliceMoved("moved", target=(2, 9)))
    assert here.status == 301
    assert here.headers["X-Mydfs-Target"] == "2:9" and here.headers["Location"] == "/slices/9"
    elsewhere = run(SliceMoved("moved", target=(3, 9)))
    assert elsewhere.headers["X-Mydfs-Target"] == "3:9" and "Location" not in elsewhere.headers


def test_an_oversized_body_is_a_json_413() -> None:
    response = run(web.HTTPRequestEntityTooLarge(max_size=100, actual_size=200))
    assert response.status == 413
    assert body(response) == {
        "error": "payload_too_large",
        "message": "request body larger than 100 bytes",
        "context": {"limit": 100},
    }


def test_an_unexpected_exception_is_a_500_naming_the_server() -> None:
    response = run(RuntimeError("boom"))
    assert response.status == 500
    assert body(response) == {
        "error": "error",
        "message": "internal error",
        "context": {"node": "n1"},
    }


def test_a_plain_response_passes() -> None:
    assert run(None).status == 200


def test_wire_forms_round_trip() -> None:
    redirect = error_from_dict(Redirect("http://n2:1").to_dict())
    assert isinstance(redirect, Redirect) and redirect.url == "http://n2:1"
    failed = error_from_dict(SyncFailed("fdatasync failed", errno=errno.EIO).to_dict())
    assert isinstance(failed, SyncFailed) and isinstance(failed, StorageIOError)
    assert failed.errno == errno.EIO
    assert isinstance(error_from_dict(LengthRequired("x").to_dict()), LengthRequired)
