"""Bench: what stored templates cost the worker. The feed's idle check (one counter read a second), a
full reload of N live versions after a publish, and rendering a stored version against the same
content as a file, on a local Redis.

Run: .venv/bin/python bench/templates.py [--live 200] [--renders 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import yaml

from channels.template_versions import StoredTemplateFeed
from channels.templates import TemplateCatalog
from localparts import LocalParts, free_port
from settings import ROOT
from state.connection import open_redis
from state.template_store import StoredTemplate, TemplateStore, TemplateVersion, Variable

COURSE = {"course": "Linear Algebra", "starts_at": "08:00", "room": "A-101"}


def version_like_course_reminder() -> TemplateVersion:
    """course_reminder.yaml as a stored version: the same parts and variables."""
    spec = yaml.safe_load((ROOT / "templates" / "course_reminder.yaml").read_text(encoding="utf-8"))
    declared = [(n, True) for n in spec.pop("variables", [])] + [(n, False) for n in spec.pop("optional", [])]
    spec.pop("description", None)
    return TemplateVersion(
        author="bench",
        variables=tuple(Variable(name=n, required=r, sample=COURSE.get(n)) for n, r in declared),
        parts=spec,
    )


async def measure(url: str, live: int, renders: int) -> None:
    redis = open_redis(url)
    await redis.flushdb()
    store = TemplateStore(redis)
    version = version_like_course_reminder()
    for i in range(live):
        name = f"bench_{i}"
        await store.create(StoredTemplate(name=name, app="lms"))
        await store.set_live(name, (await store.save(name, version)).number)
    catalog = TemplateCatalog(ROOT / "templates")
    feed = StoredTemplateFeed(store, catalog)

    cpu, wall = time.process_time(), time.perf_counter()
    await feed.refresh()
    print(f"reload of {live} live versions: {(time.process_time() - cpu) * 1e3:.1f} ms CPU, "
          f"{(time.perf_counter() - wall) * 1e3:.1f} ms wall")
    checks = 2000
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(checks):
        await feed.refresh()
    print(f"idle check (nothing published): {(time.process_time() - cpu) / checks * 1e6:.0f} µs CPU, "
          f"{(time.perf_counter() - wall) / checks * 1e6:.0f} µs wall per call (once a second)")
    await store.set_live("bench_0", (await store.save("bench_0", version)).number)
    cpu, wall = time.process_time(), time.perf_counter()
    await feed.refresh()
    print(f"one publish among {live} live: {(time.process_time() - cpu) * 1e3:.1f} ms CPU, "
          f"{(time.perf_counter() - wall) * 1e3:.1f} ms wall (only the new version is compiled)")

    for label, name in (("file course_reminder", "course_reminder"), ("stored bench_0", "bench_0")):
        cpu = time.process_time()
        for _ in range(renders):
            catalog.render(name, "sms", COURSE, None)
        print(f"render sms, {label:<20} {(time.process_time() - cpu) / renders * 1e6:.1f} µs CPU per message")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--live", type=int, default=200)
    parser.add_argument("--renders", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, LocalParts(
        Path(folder), kafka_port=free_port(), redis_port=free_port()
    ) as parts:
        asyncio.run(measure(parts.redis_url, args.live, args.renders))


if __name__ == "__main__":
    main()
