"""The processor's data path: readings from the metrics topic, the rules applied to them with their
counters and active alarms in Redis (the processor's own state), the events they raise produced to
the events topic; effectively once under crashes (rounds.py says how)."""
