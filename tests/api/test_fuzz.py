"""Property-based fuzzing of every customer endpoint with schemathesis, over HTTP.

Every answer must be documented: no 5xx, and status, content type, headers and body as the
OpenAPI document says. `scripts/fuzz-api` runs the same test with many more examples.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest
import schemathesis
from schemathesis import GenerationMode

from tests.support import fuzz as fuzz_support
from tests.support.api import SIMPLE, full
from tests.support.fuzz import CHECKS
from tests.support.stack import Account, Stack

# The stack fixture's server settings for this module (scripts/fuzz-api uses the same).
SERVER_ENV = fuzz_support.SERVER_ENV

# Per operation and mode (positive, negative); the long run sets more.
EXAMPLES = int(os.environ.get("EDGEPCAP_FUZZ_EXAMPLES", "10"))
# Unset: derandomized, the same cases every run. The long run sets a seed and prints it.
SEED = os.environ.get("EDGEPCAP_FUZZ_SEED")
AUTH_HEADERS = ("authorization", "x-auth-email", "x-auth-key")
FULL_ONLY = ("byte_limit", "colo", "colo_name", "destination_conf")


@dataclass
class World:
    """One account's things on the server, which the fuzzer is steered towards."""

    account: Account
    other: Account
    bucket: str
    pcaps: list[str]
    disposable_buckets: list[str]
    triggers: list[str]


def make_world(stack: Stack) -> World:
    account, other = stack.account(), stack.account()
    bucket = stack.validated_bucket(account)
    with stack.client(account) as c:
        pcaps = [
            c.post("/pcaps", json=body).json()["result"]["id"] for body in (SIMPLE, full(bucket))
        ]
        disposable = []
        for name in ("a", "b"):
            directory = stack.server.data_dir / "buckets" / account.id / name
            directory.mkdir()
            r = c.post("/pcaps/ownership", json={"destination_conf": f"file://{directory}"})
            disposable.append(r.json()["result"]["id"])
        # Several: the fuzzer deletes some.
        triggers = [
            c.post(
                "/pcaps/triggers", json={"threshold_pps": 10**6, "capture": full(bucket)}
            ).json()["result"]["id"]
            for _ in range(3)
        ]
    return World(account, other, bucket, pcaps, disposable, triggers)


def steer(world: World, body: dict[str, Any]) -> dict[str, Any]:
    """A generated body made likelier to be accepted, keeping what it does not contradict."""
    body = dict(body)
    if "destination_conf" in body:  # ownership bodies, and full captures
        body["destination_conf"] = world.bucket
    if body.get("type") == "simple":
        for name in (*FULL_ONLY, "offset_time"):
            body.pop(name, None)
        for name, high in (("time_limit", 300), ("packet_limit", 10_000)):
            value = body.get(name)
            if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
                body[name] = 1 + (int(value) - 1) % high
        if body.get("packet_limit") is None:
            body["packet_limit"] = 100
    elif body.get("type") == "full":
        body.pop("colo", None)
        body.pop("offset_time", None)
        body.update(colo_name="ORD", destination_conf=world.bucket)
    if "threshold_pps" in body and isinstance(body.get("capture") or {}, dict):
        # A trigger: bounds the generator cannot know together.
        given = body.get("capture")
        body["capture"] = steer(world, {**full(world.bucket), **(given or {})})
        body["capture"]["type"] = "full"
        for name, low, high in (
            ("threshold_pps", 1, 10**9),
            ("window", 10, 300),
            ("cooldown", 0, 604_800),
        ):
            value = body.get(name)
            if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
                body[name] = low + (int(value) - low) % (high - low + 1)
        body.pop("expires", None)
    if isinstance(body.get("filter_v1"), dict):
        # Random text is no address, and a random address is outside the account's
        # prefixes; ports need a protocol that has them.
        flt = {**body["filter_v1"], "destination_address": world.account.host()}
        flt.pop("source_address", None)
        has_ports = flt.get("source_port") is not None or flt.get("destination_port") is not None
        if has_ports and flt.get("protocol") is not None:
            flt["protocol"] = 17
        body["filter_v1"] = flt
    return body


def fuzz_schema(stack: Stack, world: World) -> Any:
    """The server's own OpenAPI document, with the account's credentials and our steering."""
    config = schemathesis.Config.from_dict(
        {
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "request-timeout": 30,
        }
    )
    schema = schemathesis.openapi.from_url(stack.api + "/openapi.json", config=config)

    @schema.hook
    def flatmap_headers(context: Any, headers: dict[str, Any] | None) -> st.SearchStrategy:
        # Each case authenticates one of the two ways, or keeps the generated (wrong) headers.
        generated = headers or {}
        rest = {k: v for k, v in generated.items() if k.lower() not in AUTH_HEADERS}
        styles = (world.account.bearer, world.account.key_headers)
        return st.sampled_from([{**rest, **s} for s in styles] * 3 + [generated])

    @schema.hook
    def flatmap_path_parameters(context: Any, path: dict[str, Any]) -> st.SearchStrategy:
        # Mostly the caller's own account and ids that exist, so cases get past 403 and
        # 404 into the handlers; now and then another account's or the generated value.
        out: dict[str, st.SearchStrategy] = {}
        if "account_id" in path:
            own = world.account.id
            out["account_id"] = st.sampled_from([own] * 6 + [world.other.id, path["account_id"]])
        pcaps = world.pcaps
        operation = context.operation
        if operation is not None and operation.path.endswith("/stop"):
            # Only the full capture can be stopped, and only once: offer it more often, so
            # that a case with good credentials reaches it whatever the draws.
            pcaps = [*world.pcaps, *world.pcaps[1:] * 4]
        for name, known in (
            ("pcap_id", pcaps),
            ("ownership_id", world.disposable_buckets),
            ("trigger_id", world.triggers),
        ):
            if name in path:
                out[name] = st.sampled_from([*known, path[name]])
        return st.fixed_dictionaries(out).map(lambda chosen: {**path, **chosen})

    @schema.hook
    def flatmap_body(context: Any, body: Any) -> st.SearchStrategy:
        if isinstance(body, dict):
            return st.sampled_from([steer(world, body), body])
        return st.just(body)

    return schema


def style_of(headers: dict[str, Any]) -> str:
    names = {name.lower() for name in headers}
    return "bearer" if "authorization" in names else "email+key" if "x-auth-key" in names else "-"


def fuzz(operation: Any, mode: GenerationMode, statuses: Counter[int], styles: Counter[str]):
    """Up to EXAMPLES cases of one operation in one mode; raises on the first failure."""

    @hypothesis.settings(
        max_examples=EXAMPLES,
        derandomize=SEED is None,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call_and_validate()
        statuses[response.status_code] += 1
        if response.status_code == 200:
            styles[style_of(case.headers or {})] += 1

    if SEED is not None:
        run = hypothesis.seed(int(SEED))(run)
    run()


STREAMS = {"GET /client/v4/accounts/{account_id}/pcaps/{pcap_id}/stream"}


def test_every_answer_is_documented(stack: Stack, subtests: pytest.Subtests) -> None:
    world = make_world(stack)
    reached: dict[str, Counter[int]] = {}
    styles: Counter[str] = Counter()
    for result in fuzz_schema(stack, world).get_all_operations():
        operation = result.ok()
        statuses = reached.setdefault(operation.label, Counter())
        for mode in GenerationMode:
            with subtests.test(msg=f"{mode.value} {operation.label}"):
                fuzz(operation, mode, statuses, styles)
    print("\n".join(f"{label}: {dict(s)}" for label, s in reached.items()), dict(styles))
    if SEED is None:
        # The suite's fixed cases are worth their time: every operation got past
        # authentication into its handler, both ways to authenticate got there.
        # (A seeded run with few examples may miss some; it prints what it reached.)
        # A stream's 200 lasts as long as a running capture: the world's captures have
        # ended, and its 409 (past authentication, to the capture) stands for it here
        # (the lab tests read streams).
        past = {label: 409 if label in STREAMS else 200 for label in reached}
        assert {label: s for label, s in reached.items() if not s[past[label]]} == {}
        assert styles["bearer"] and styles["email+key"]
