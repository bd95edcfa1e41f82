from receiver.settings import ReceiverSettings
from runtime import settings, workers
from runtime.lifecycle import run
from runtime.logging import setup_logging

config = settings.load(ReceiverSettings, "receiver")
count = config.workers or workers.default_count()
if count > 1 and workers.worker_index() is None:
    # The parent only supervises: it does not import the service (gRPC, Kafka), and stays small.
    setup_logging("receiver", config.log_level)
    workers.supervise(
        "receiver", count, config.shutdown_grace_s + 5, metrics=(config.grpc_host, config.metrics_port)
    )
else:
    if workers.worker_index() is not None:
        workers.die_with_parent()
    from receiver.service import main

    run(main)
