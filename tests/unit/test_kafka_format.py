"""The KRaft cluster id handed to Kafka's storage tool on the command line."""

import base64
import uuid

from stack import prepare


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch):
    # 0xF8 encodes as '-' first: the storage tool took such an id for an option and refused to format.
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().startswith("-")
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(prepare.uuid, "uuid4", lambda: next(drawn))
    cluster_id = prepare.kafka_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(b"\x01" * 16).rstrip(b"=").decode()
    assert len(cluster_id) == 22
