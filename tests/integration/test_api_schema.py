"""The API keeps to its OpenAPI: a bounded, derandomized schemathesis run of every operation with all
checks, against the ASGI app on the real Redis and broker of the test run."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import schemathesis
import schemathesis.engine
from fastapi import FastAPI
from redis.asyncio import Redis
from schemathesis.engine import events

from analytics.connection import open_clickhouse
from analytics.migrate import apply_migrations
from api import ApiDeps, KafkaPublisher, create_api
from api.analytics_reader import LazyReader
from api.campaign_service import CampaignDesk
from api.deps import Analytics, BodyLimits, UploadSettings
from api.template_service import Templates
from api.trace import Tracer
from channels.links import LinkSigner
from channels.templates import TemplateCatalog
from localparts import LocalParts
from rules.loader import load_ruleset
from rules.watch import RulesWatcher
from settings import ROOT
from state.apps import AppRegistry
from state.budgets import BudgetStore
from state.campaigns import CampaignStore
from state.consent import ConsentStore
from state.inbox import Inbox
from state.provider_messages import ProviderMessages
from state.segments import SegmentStore
from state.template_store import TemplateStore
from state.uploads import UploadStore
from state.users import UserDirectory

from .test_api_support import LINK_SECRET, PUBLIC_URL

# Bounded: a fixed number of examples per operation and a fixed seed, so a run takes well under a
# minute on a shared 2-core machine and finds the same cases every time.
MAX_EXAMPLES = 25
SEED = 20261123
# schemathesis's own default for "valid data was accepted".
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


async def _register(redis_url: str) -> str:
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushdb()
        await UserDirectory(redis).save_segment("cs-year-1", ["s1"])
        return await AppRegistry(redis).register("lms", {"email", "inbox", "sms"}, "Learning management")
    finally:
        await redis.aclose()


def _api(local_parts: LocalParts, clickhouse_dsn: str) -> FastAPI:
    """The production wiring on the test parts; its Redis client is only used on schemathesis's loop.
    ClickHouse is the test run's chdb folder, opened by the first report as open_reader would be."""
    unique = uuid.uuid4().hex[:10]
    redis = Redis.from_url(local_parts.redis_url)

    def open_reader() -> Any:
        client = open_clickhouse(clickhouse_dsn)
        apply_migrations(client)
        return client

    reader = LazyReader(open_reader)
    deps = ApiDeps(
        apps=AppRegistry(redis),
        inbox=Inbox(redis),
        publisher=KafkaPublisher(
            local_parts.kafka_url,
            events_topic=f"t{unique}-events",
            receipts_topic=f"t{unique}-receipts",
            conversions_topic=f"t{unique}-conversions",
        ),
        redis=redis,
        templates=TemplateCatalog(ROOT / "templates"),
        segments=SegmentStore(redis),
        limits=BodyLimits(),
        links=LinkSigner(LINK_SECRET, PUBLIC_URL),
        consent=ConsentStore(redis, opt_in=()),
        provider_messages=ProviderMessages(redis),
        analytics=Analytics(reader, Tracer(reader, redis)),
        budgets=BudgetStore(redis),
        template_versions=Templates(TemplateStore(redis), TemplateCatalog(ROOT / "templates")),
        rules=RulesWatcher(ROOT / "rules", current=load_ruleset(ROOT / "rules")),
        uploads=UploadSettings(UploadStore(redis)),
        campaigns=CampaignDesk(CampaignStore(redis), Inbox(redis), redis),
        people=UserDirectory(redis),
    )
    return create_api(deps, {})


def test_the_api_keeps_to_its_openapi(local_parts: LocalParts, clickhouse_dsn: str) -> None:
    key = asyncio.run(_register(local_parts.redis_url))
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {key}"},
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "suppress-health-check": ["all"],
            "operations": [
                {
                    # Whether an address is valid for its channel (a real phone number, a deliverable
                    # email) is beyond a schema; the operation documents its 422 for it.
                    "include-path": "/v1/consent/blacklist",
                    "include-method": "POST",
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
                },
                *(
                    {
                        # A link token of the right shape is still refused unless Switchboard signed it
                        # for that user, and a conversion cannot have happened in the future: both
                        # documented 422s that a schema cannot express.
                        "include-path": path,
                        "include-method": "POST",
                        "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
                    }
                    for path in ("/v1/conversions", "/v1/conversions:batch")
                ),
                {
                    # A period or dimension list can be well formed and still name nothing (`by=chanel`,
                    # an until before since); the operation documents its 422 naming the parameter.
                    "include-path": "/v1/reports/funnel",
                    "include-method": "GET",
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
                },
            ],
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", _api(local_parts, clickhouse_dsn), config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    failures: list[str] = []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.FatalError):
            raise event.exception
        if isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: error {event.value!r}")
        if isinstance(event, events.ScenarioFinished):
            failures += [
                f"{event.recorder.label}: {node.name}: {node.failure_info.failure.title}\n"
                f"{node.failure_info.failure.message}\n{node.failure_info.code_sample}"
                for nodes in event.recorder.checks.values()
                for node in nodes
                if node.failure_info is not None
            ]
    # 19, the two conversions operations, the two report operations, opt-ins (2), the whitelist (3), test
    # mode (2), the 8 the access part adds for an app key's deps (sessions, me, apps, user tokens...),
    # the audit log and the 4 budget operations; issue 13: stored templates (8), segments (6), strategies (1),
    # uploads (5), campaigns (8), people (6: list, create, show, addresses, change, remove)
    assert len(operations) == 77
    ids = [operation.definition.raw.get("operationId") for operation in operations]
    assert len(set(ids)) == len(ids), f"operationIds shared: {ids}"
    assert not failures, f"{len(set(failures))} distinct failures:\n" + "\n\n".join(sorted(set(failures)))
