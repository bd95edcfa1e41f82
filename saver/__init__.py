"""The saver: writes readings and events from Kafka to PostgreSQL, idempotently."""
