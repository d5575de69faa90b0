"""The dead-letter topic read for people, on the real broker: every letter a batching producer wrote is
listed (the local broker's end offsets fall short of them), newest first, filtered; one letter is fetched
by its id; a record that is no letter is shown with what is wrong, not skipped."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer

from processors.dead_letter_shelf import DeadLetterShelf, LetterFilter
from processors.dead_letters import dead_letter
from settings import Settings

LETTERS = 2_000


async def test_every_letter_is_listed_filtered_and_fetched(settings: Settings) -> None:
    bootstrap = settings.kafka.removeprefix("kafka://")
    topic = settings.topic("events.deadletter")
    raw = json.dumps({"event_id": "e", "app": "campus", "category": "newsletter"}).encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        sent = [
            await producer.send(
                topic,
                dead_letter(
                    raw,
                    settings.topic("events" if i % 3 else "dispatch") + f":0:{i}",
                    "category: Input should be 'notice'" if i % 2 else "unknown app 'bursr'",
                    app="campus" if i % 2 else "bursr",
                    event_id=f"e{i}",
                )
                .model_dump_json()
                .encode(),
                key=str(i).encode(),
            )
            for i in range(LETTERS)
        ]
        for future in sent:
            await future
        await producer.send_and_wait(topic, b"\xff not a letter", partition=0)
    finally:
        await producer.stop()

    shelf = DeadLetterShelf(bootstrap, topic, settings.topic_prefix)
    everything = await shelf.letters()
    campus = await shelf.letters(LetterFilter(app="campus", reason="CATEGORY", stage="ingest"))
    mine_only = await shelf.letters(LetterFilter(apps=frozenset({"bursr"})))
    recent = await shelf.letters(LetterFilter(since=datetime.now(UTC) + timedelta(minutes=1)))
    middle = everything[len(everything) // 2]
    fetched = await shelf.get(middle.letter_id)
    missing = await shelf.get("0-999999")

    assert len(everything) == LETTERS + 1
    times = [s.letter.received_at for s in everything]
    assert times == sorted(times, reverse=True)
    [stranger] = [s for s in everything if s.letter.reason.startswith("not a dead letter")]
    assert stranger.letter.payload_encoding == "base64" and stranger.stage == "other"
    expected = sum(1 for i in range(LETTERS) if i % 2 and i % 3)
    assert len(campus) == expected and {s.stage for s in campus} == {"ingest"}
    assert {s.letter.app for s in mine_only} == {"bursr"} and len(mine_only) == LETTERS // 2
    assert {s.stage for s in everything if s.letter.source.startswith(settings.topic("dispatch"))} == {"send"}
    assert recent == []
    assert fetched == middle and missing is None
