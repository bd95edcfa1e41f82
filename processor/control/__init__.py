"""The processor's control plane: RulesService and AlarmsService (routed by Envoy to the processor),
with what they keep in PostgreSQL (the tables of control/migrations). Rules reach the data path
through the compacted topic `rules` (rule_feed.py), which every processor follows."""
