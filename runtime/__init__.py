"""What every Metrics service shares: settings, logging, Kafka codec, gRPC server, lifecycle."""
