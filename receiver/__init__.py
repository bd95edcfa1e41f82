"""The receiver: validates sensor readings and writes them durably to Kafka."""
