-- Silence rules (metrics.v1.Rule.silence): a registered device that sent no reading for a while
-- raises an alarm. The Silence message, serialized; NULL for a threshold rule.
ALTER TABLE rules ADD COLUMN silence bytea;
