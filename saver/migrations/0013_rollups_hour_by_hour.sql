-- Every sensor's hourly rollup of a metric type in an hour, read at once: the assessor's blocks of a
-- group's statistics (assessor/hour_blocks.py). A rollup's update leaves these columns as they are.
SET LOCAL lock_timeout = '10s';
CREATE INDEX rollups_hour_by_hour ON rollups_hour (metric_type, hour);
