"""`make deadletters`: listing the dead-letter topic, and replaying chosen records to their source."""

from __future__ import annotations

import asyncio
import os
import sys

from aiokafka import AIOKafkaProducer

from runtime import kafka
from runtime.kafka import client_options
from stack import credentials
from tests.helpers import read_topic
from tests.services import ROOT, Topics, private_topics
from tests.target import Target


async def deadletters(topics: Topics, target: Target, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_")}
    env |= {
        "METRICS_KAFKA_BOOTSTRAP_SERVERS": target.kafka_bootstrap_servers,
        "METRICS_KAFKA_USERNAME": credentials.KAFKA_ADMIN.user,
        "METRICS_KAFKA_PASSWORD_FILE": str(target.password_file(credentials.KAFKA_ADMIN)),
        "METRICS_DEAD_LETTER_TOPIC": topics.dead_letters,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deadletters", *args, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def dead_letter_headers(source: str, consumer: str, reason: str) -> list[tuple[str, bytes]]:
    return [
        ("message-type", b"metrics.v1.MetricBatch"),
        (kafka.DEAD_LETTER_REASON_HEADER, reason.encode()),
        (kafka.DEAD_LETTER_SOURCE_HEADER, source.encode()),
        (kafka.DEAD_LETTER_CONSUMER_HEADER, consumer.encode()),
    ]


async def test_list_then_replay_chosen_records_once_each_to_their_source_partition(target: Target) -> None:
    async with private_topics(target) as topics:
        producer = AIOKafkaProducer(**client_options(target.kafka()), acks="all")
        await producer.start()
        try:
            # As the processor and the saver write them: the same source record dead-lettered by
            # both, and another one by the saver alone.
            letters = [
                (b"s-1", b"value one", f"{topics.metrics}[1]@40", "processor", "metrics[0].value: must be finite"),
                (b"s-1", b"value one", f"{topics.metrics}[1]@40", "saver", "metrics[0].value: must be finite"),
                (None, b"value two", f"{topics.metrics}[0]@41", "saver", "no message-type header"),
            ]  # fmt: skip
            for key, value, source, consumer, reason in letters:
                await producer.send_and_wait(
                    topics.dead_letters, value, key=key, headers=dead_letter_headers(source, consumer, reason)
                )
        finally:
            await producer.stop()

        code, out, err = await deadletters(topics, target, "list", "--consumer", "saver")
        assert code == 0, err
        assert out.splitlines() == [
            f"@1  {topics.metrics}[1]@40  saver  key=s-1  metrics[0].value: must be finite",
            f"@2  {topics.metrics}[0]@41  saver  key=-  no message-type header",
        ]
        assert "2 dead letter(s) match" in err

        code, out, err = await deadletters(topics, target, "replay", "--offsets", "0-1", "--dry-run")
        assert code == 0, err
        assert out.splitlines() == [
            f"would replay @0 to {topics.metrics}[1] (was {topics.metrics}[1]@40): metrics[0].value: must be finite"
        ]
        assert await read_topic(target.kafka_bootstrap_servers, topics.metrics, {}) == []

        code, out, err = await deadletters(topics, target, "replay", "--all")
        assert code == 0, err
        assert "replayed 2 record(s)" in err
        replayed = await read_topic(target.kafka_bootstrap_servers, topics.metrics, {})
        assert sorted((r.partition, r.key, r.value, r.headers) for r in replayed) == [
            (0, None, b"value two", (("message-type", b"metrics.v1.MetricBatch"),)),
            (1, b"s-1", b"value one", (("message-type", b"metrics.v1.MetricBatch"),)),
        ]

        code, _, err = await deadletters(topics, target, "replay", "--all", "--reason", "no such reason")
        assert code == 1 and "no dead letter matches" in err
