"""The local stack: PostgreSQL, Redis, Kafka, Envoy and the services as processes on this machine.

`python -m stack up|down|status|logs` (the Makefile's run, stop, status and logs) prepares what is
missing, hands the processes to supervisord and waits until every part answers.
"""
