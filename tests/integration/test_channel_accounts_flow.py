"""A WeChat official account created through the API carries a real worker's messages to the local WeChat
peer, with the secret set through the API; unauthorised or switched off, it carries nothing, and the
receipt says why."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from localparts.peers.server import PeerServer
from localparts.peers.wechat import PEER, create_app
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.apps import AppRegistry
from state.channel_accounts import ChannelAccounts
from state.users import User, UserDirectory
from tests.integration.test_api_channel_accounts import leaks, operator_console
from tests.integration.test_flow import produce, wait_caught_up

APPID = "wx5f3a1c9e2b7d4086"
APP_SECRET = "Pn4Rc8Vx2Lm6Qz9Wt3Hk7Bd"  # set through the API only
TEMPLATE = "Qm3lXfNqP7dT1ZcH6oVb0rK9sYw2uEjA8gLiMnBxC4e"  # templates/fee_due.yaml's wechat-oa id
OPENID = "oia2TjuEGTNoeX76QEjQNrcURxG8"
BY_WECHAT = """
ruleset: wechat-accounts
rules:
  - id: by-wechat
    description: Every event to the recipient's WeChat official account.
    then: {channels: [wechat_oa]}
"""
# The accounts' caches (grants and routes, 2 s each) and the worker's timer that reads them (1 s).
PICKED_UP = 5.0


def fee(event_id: str, app: str) -> bytes:
    return json.dumps({
        "event_id": event_id, "app": app, "type": "fee.due", "template": "fee_due",
        "category": "transactional", "priority": "high", "audience": {"user_ids": ["xi"]},
        "data": {"amount": "¥5,000", "due_date": "2026-12-01", "term": "2026秋"},
    }).encode()


async def receipts_of(settings: Settings, event_ids: set[str], within: float = 30.0) -> dict[str, Any]:
    """The last receipt of each event, read from topic `receipts`, once each event has a final one."""
    consumer = AIOKafkaConsumer(settings.topic("receipts"), bootstrap_servers=settings.kafka.removeprefix(
        "kafka://"), auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    last: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    value = json.loads(record.value)
                    for receipt in value if isinstance(value, list) else [value]:
                        if receipt["status"] != "decided":
                            last[receipt["event_id"]] = receipt
            if event_ids <= set(last):
                return last
    finally:
        await consumer.stop()
    raise AssertionError(f"no final receipt for {sorted(event_ids - set(last))}: {last}")


async def test_an_account_made_through_the_api_carries_the_workers_messages(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(BY_WECHAT)
    flow = settings.model_copy(update={"rules": rules, "providers": tmp_path / "no-providers.yaml",
                                       "clickhouse": f"chdb://{tmp_path / 'worker-ch'}"})
    await UserDirectory(redis).upsert([User(user_id="xi", bindings={"wechat_oa": OPENID})])
    registry = AppRegistry(redis)
    await registry.register("bursar", ["email"])        # WeChat only through the account's authorisation
    await registry.register("library", ["wechat_oa"])   # the channel, but no account authorises it
    peer = create_app(APPID, APP_SECRET)
    peer[PEER].templates.add(TEMPLATE)
    accounts = ChannelAccounts(redis, flow.secret_box())  # the worker's key: the same var_dir
    async with PeerServer(peer) as server, operator_console(redis, accounts) as console:
        created = await console.call("root", "POST", "/v1/channel-accounts", {
            "code": "finance-oa", "name": "财务处服务号", "type": "wechat_oa", "platform": "wechat-oa",
            "settings": {"appid": APPID, "base_url": server.url, "stable_token": False},
            "secrets": {"secret": APP_SECRET}, "enabled": True,
        })
        assert created.status_code == 201, created.text
        authorised = await console.call("root", "PUT", "/v1/channel-accounts/finance-oa/apps/bursar")
        assert authorised.status_code == 200
        with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
            await produce(flow, [fee("sent-1", "bursar"), fee("refused-1", "library")])
            await wait_caught_up(redis, 2, worker)
            first = await receipts_of(flow, {"sent-1", "refused-1"})
            # Unauthorised, then switched off: nothing more reaches the peer.
            await console.call("root", "DELETE", "/v1/channel-accounts/finance-oa/apps/bursar")
            await asyncio.sleep(PICKED_UP)
            await produce(flow, [fee("unauthorised-1", "bursar")])
            await wait_caught_up(redis, 3, worker)
            await console.call("root", "PUT", "/v1/channel-accounts/finance-oa/apps/bursar")
            await console.call("root", "POST", "/v1/channel-accounts/finance-oa/disable")
            await asyncio.sleep(PICKED_UP)
            await produce(flow, [fee("off-1", "bursar")])
            await wait_caught_up(redis, 4, worker)
            later = await receipts_of(flow, {"unauthorised-1", "off-1"})
            assert worker.stop() == 0, worker.log_tail()
            log = worker.log_tail(10_000)
    state = peer[PEER]
    # The peer gave a token only for this appid with the secret set through the API, and took it.
    tokens = [r for r in state.received if r["path"] == "/cgi-bin/token"]
    sends = [r for r in state.received if "body" in r]
    assert tokens and all(r["appid"] == APPID for r in tokens)
    assert [(s["body"]["touser"], s["body"]["template_id"], s["token_ok"]) for s in sends] == [
        (OPENID, TEMPLATE, True)]  # sent-1 only
    assert (first["sent-1"]["status"], first["sent-1"]["provider"]) == ("sent", "finance-oa")
    refused = first["refused-1"]
    assert refused["status"] == "failed"
    assert "finance-oa not authorised for app 'library'" in refused["reason"]
    for event_id in ("unauthorised-1", "off-1"):
        assert later[event_id]["status"] not in ("sent", "delivered"), later[event_id]
        assert "wechat_oa" in later[event_id]["reason"], later[event_id]
    assert leaks(log + json.dumps([first, later]), APP_SECRET) == []
