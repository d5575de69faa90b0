"""Mail of subscribable categories sent by a real worker carries the one-click unsubscribe headers."""

from __future__ import annotations

import json
from pathlib import Path

from redis.asyncio import Redis

from channels.links import LinkSigner
from localparts import LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.apps import AppRegistry
from state.users import User, UserDirectory
from tests.integration.test_flow import fee_due, notice, produce, wait_caught_up

EVERYTHING_BY_EMAIL = """
ruleset: mail-test
rules:
  - id: by-email
    description: Every event by email, so each category's mail can be looked at.
    then: {channels: [email]}
"""


async def test_a_notice_from_the_worker_has_list_unsubscribe_and_a_receipt_has_none(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(EVERYTHING_BY_EMAIL)
    flow = settings.model_copy(update={"rules": rules, "clickhouse": f"chdb://{tmp_path / 'worker-ch'}"})
    await UserDirectory(redis).upsert([User(user_id="xi", bindings={"email": "xi@uni.example"})])
    registry = AppRegistry(redis)
    await registry.register("campus", {"email"})
    await registry.register("bursar", {"email"})
    with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
        receipt_of_payment = json.dumps(fee_due("fee-1", audience={"user_ids": ["xi"]})).encode()
        await produce(flow, [notice("n1", "xi"), receipt_of_payment])
        await wait_caught_up(redis, 2, worker)
        assert worker.stop() == 0, worker.log_tail()
    by_subject = {str(m.message["Subject"]): m.message for m in smtp.messages}
    assert len(by_subject) == 2, list(by_subject)
    notice_mail = next(m for s, m in by_subject.items() if s.startswith("Campus notice"))
    fee_mail = next(m for s, m in by_subject.items() if s.startswith("Fee due"))

    header = notice_mail["List-Unsubscribe"]
    assert header is not None, "a notice must offer unsubscribing"
    url = str(header).strip().strip("<>")
    prefix = f"{flow.public_url}/u/"
    assert url.startswith(prefix)
    signer = LinkSigner(flow.signing_secret(), flow.public_url)
    claims = signer.verify("unsubscribe", url.removeprefix(prefix))
    assert (claims.user_id, claims.category, claims.event_id) == ("xi", "notice", "n1")
    assert notice_mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # A transactional receipt is not something one subscribes to.
    assert fee_mail["List-Unsubscribe"] is None

