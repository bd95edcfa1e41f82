"""The MQTT bridge: the messages devices publish to the broker (Mosquitto), written to Kafka as
readings through the same validation and the same coalescing writer as the receiver's, each
acknowledged to the broker only once Kafka has its readings."""
