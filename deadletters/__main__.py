"""python -m deadletters list|replay: look at the dead-letter topic, and send chosen records back.

A consumer dead-letters a record it cannot use with headers saying why (dead-letter-reason), where
it came from (dead-letter-source, "topic[partition]@offset") and who gave up on it
(dead-letter-consumer). Once the cause is fixed (a consumer that now takes such records, or a
record repaired by hand), `replay` produces the chosen records again to the partition they came
from, with their key, value and original headers: every consumer of that topic reads them anew.
A record that several consumers dead-lettered is replayed once.

  python -m deadletters list [--reason TEXT] [--consumer NAME] [--limit N]
  python -m deadletters replay (--offsets 3,7-9 | --all) [--reason TEXT] [--consumer NAME] [--dry-run]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace

from aiokafka import AIOKafkaConsumer, TopicPartition

from runtime import cli, kafka
from runtime.settings import load

SOURCE = re.compile(r"(?P<topic>.+)\[(?P<partition>\d+)\]@(?P<offset>\d+)")
DEAD_LETTER_HEADERS = {
    kafka.DEAD_LETTER_REASON_HEADER,
    kafka.DEAD_LETTER_SOURCE_HEADER,
    kafka.DEAD_LETTER_CONSUMER_HEADER,
}


@dataclass(frozen=True)
class DeadLetter:
    offset: int  # in the dead-letter topic
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]  # the original ones, without the dead-letter headers
    reason: str
    source: str
    consumer: str

    @property
    def source_partition(self) -> tuple[str, int]:
        match = SOURCE.fullmatch(self.source)
        if match is None:
            raise ValueError(
                f"dead letter @{self.offset}: source {self.source!r} is not topic[partition]@offset"
            )
        return match["topic"], int(match["partition"])


def parse_offsets(text: str) -> set[int]:
    """ "3,7-9" → {3, 7, 8, 9}."""
    offsets: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("-")
        try:
            offsets.update(range(int(first), int(last or first) + 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not an offset or a range such as 7-9") from None
    return offsets


async def read_all(settings: kafka.KafkaSettings) -> list[DeadLetter]:
    """Every record now in the dead-letter topic (one partition), oldest first."""
    consumer = AIOKafkaConsumer(**kafka.client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.dead_letter_topic) or set()
        if not partitions:  # not in the metadata yet: aiokafka has no public call that loads it
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(settings.dead_letter_topic) or set()
        tps = [TopicPartition(settings.dead_letter_topic, p) for p in sorted(partitions)]
        if not tps:
            raise SystemExit(f"no topic {settings.dead_letter_topic} on {settings.kafka_bootstrap_servers}")
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        letters: list[DeadLetter] = []
        remaining = {tp for tp in tps if end[tp] > 0}
        idle = 0
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000)
            idle = 0 if fetched else idle + 1
            if idle == 30:
                raise SystemExit(f"{settings.dead_letter_topic}: no records came for 30 s; is Kafka up?")
            for tp, records in fetched.items():
                for r in records:
                    if r.offset < end[tp]:
                        letters.append(_letter(r.offset, r.key, r.value or b"", list(r.headers or ())))
                if not records or records[-1].offset >= end[tp] - 1:
                    remaining.discard(tp)
        return letters
    finally:
        await consumer.stop()


def _letter(offset: int, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> DeadLetter:
    named = dict(headers)
    return DeadLetter(
        offset=offset,
        key=key,
        value=value,
        headers=[(k, v) for k, v in headers if k not in DEAD_LETTER_HEADERS],
        reason=named.get(kafka.DEAD_LETTER_REASON_HEADER, b"").decode(errors="replace"),
        source=named.get(kafka.DEAD_LETTER_SOURCE_HEADER, b"").decode(errors="replace"),
        consumer=named.get(kafka.DEAD_LETTER_CONSUMER_HEADER, b"").decode(errors="replace"),
    )


def chosen(letters: list[DeadLetter], args: argparse.Namespace) -> Iterator[DeadLetter]:
    offsets: set[int] | None = getattr(args, "offsets", None)
    for letter in letters:
        if offsets is not None and letter.offset not in offsets:
            continue
        if args.reason and args.reason not in letter.reason:
            continue
        if args.consumer and args.consumer != letter.consumer:
            continue
        yield letter


async def replay(settings: kafka.KafkaSettings, letters: list[DeadLetter], dry_run: bool) -> int:
    """Produces each source record once, to its source partition; returns how many."""
    once: dict[str, DeadLetter] = {}
    for letter in letters:
        once.setdefault(letter.source, letter)
    producer = None if dry_run else kafka.make_producer(settings, "deadletters-replay")
    if producer is not None:
        await producer.start()
    try:
        for letter in once.values():
            topic, partition = letter.source_partition
            verb = "would replay" if dry_run else "replaying"
            print(f"{verb} @{letter.offset} to {topic}[{partition}] (was {letter.source}): {letter.reason}")
            if producer is not None:
                await producer.send_and_wait(
                    topic, letter.value, key=letter.key, partition=partition, headers=letter.headers
                )
    finally:
        if producer is not None:
            await producer.stop()
    return len(once)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deadletters", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("list", "replay"):
        command = commands.add_parser(name)
        command.add_argument("--reason", default="", help="only dead letters whose reason contains this")
        command.add_argument("--consumer", default="", help="only those of this consumer (processor, saver)")
        if name == "list":
            command.add_argument("--limit", type=int, default=100, help="at most this many, newest last")
        else:
            which = command.add_mutually_exclusive_group(required=True)
            which.add_argument("--offsets", type=parse_offsets, help="dead-letter offsets, e.g. 3,7-9")
            which.add_argument("--all", action="store_true", help="every dead letter that matches")
            command.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    args = parser.parse_args(argv)
    settings = load(kafka.KafkaSettings, "deadletters")
    if not settings.kafka_username:  # by default, the local stack's admin
        from stack import access  # noqa: PLC0415
        from stack import settings as stack_settings  # noqa: PLC0415

        admin = access.kafka(stack_settings.load())
        settings = replace(settings, kafka_username=admin.kafka_username, kafka_password=admin.kafka_password)
    letters = list(chosen(asyncio.run(read_all(settings)), args))
    if args.command == "list":
        shown = letters[-args.limit :]
        for letter in shown:
            key = letter.key.decode(errors="replace") if letter.key is not None else "-"
            print(f"@{letter.offset}  {letter.source}  {letter.consumer}  key={key[:60]}  {letter.reason}")
        cut = f"; the last {len(shown)} shown" if len(shown) < len(letters) else ""
        print(f"{len(letters)} dead letter(s) match in {settings.dead_letter_topic}{cut}", file=sys.stderr)
        return 0
    if not letters:
        print("no dead letter matches; nothing replayed", file=sys.stderr)
        return 1
    count = asyncio.run(replay(settings, letters, args.dry_run))
    print(f"{'would replay' if args.dry_run else 'replayed'} {count} record(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main)
