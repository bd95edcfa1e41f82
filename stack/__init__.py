"""The local stack: PostgreSQL, Redis, Kafka, Envoy and the services as processes on this machine.

`python -m stack up|down|status|logs|shell-env` (the Makefile's run, stop, status, logs and shell-env)
prepares what is missing, hands the processes to supervisord and waits until every part answers.
`python -m stack upgrade` (make upgrade) restarts the services of the running stack one instance at
a time on the checkout's code, each drained first (stack/upgrade.py).
`python -m stack test-clients` installs the clients the tests drive that are not Python packages:
Debian's Chromium (the web console's tests) and vmagent, and Telegraf, built from source;
`python -m stack toxiproxy` builds Toxiproxy (make test-network's) and prints where it is.
"""
