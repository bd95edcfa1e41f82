"""`make shell-env`: `export` lines that let the operators' own tools into the local stack's servers.

  eval "$(make -s shell-env)"; psql; redis-cli -p PORT --user admin; kcat -L

psql logs in as the schema's owner, redis-cli and kcat as the admins; kcat reads its properties from
the file named by KCAT_CONFIG, which this writes next to the passwords (readable by its owner only).
redis-cli takes the password from REDISCLI_AUTH but the user only from --user (Redis's `default`
user, which it logs in as otherwise, is off); the lines end with a comment that says so.
"""

from __future__ import annotations

import shlex

from stack import access, credentials, prepare
from stack.settings import StackSettings


def lines(settings: StackSettings) -> list[str]:
    owner, redis_admin, kafka_admin = (
        credentials.POSTGRES_OWNER,
        credentials.REDIS_ADMIN,
        credentials.KAFKA_ADMIN,
    )
    kcat = settings.secrets_dir / "kcat.properties"
    prepare.private_file(
        kcat,
        f"bootstrap.servers={settings.kafka_bootstrap}\n"
        "security.protocol=SASL_PLAINTEXT\n"
        "sasl.mechanisms=SCRAM-SHA-512\n"
        f"sasl.username={kafka_admin.user}\n"
        f"sasl.password={access.password(settings, kafka_admin)}\n",
    )
    variables = {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(settings.postgres_port),
        "PGUSER": owner.user,
        "PGPASSWORD": access.password(settings, owner),
        "PGDATABASE": "metrics",
        "REDISCLI_AUTH": access.password(settings, redis_admin),
        "KCAT_CONFIG": str(kcat),
    }
    # -c: a Redis Cluster node answers MOVED for another's keys, which redis-cli then follows.
    redis_cli = (
        f"redis-cli{' -c' if settings.cluster else ''} -p {settings.redis_port} --user {redis_admin.user}"
    )
    return [
        *(f"export {name}={shlex.quote(value)}" for name, value in variables.items()),
        f"# psql; {redis_cli}; kcat -L",
    ]
