"""The registry: the fleet's devices (DevicesService), stored in PostgreSQL and published on the
compacted Kafka topic "devices"."""
