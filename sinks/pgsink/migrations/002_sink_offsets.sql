-- The sink's position in each partition it consumes, written in the same
-- transaction as the rows those records produced: the database, not the
-- group's commits in Kafka, says what it holds. A standby promoted without
-- the old primary's last transactions lacks their offsets too, so the sink
-- reads those records again. next_offset is the offset of the next record
-- to read.
CREATE TABLE sink_offsets (
    sink_group  text NOT NULL,
    topic       text NOT NULL,
    partition   int NOT NULL CHECK (partition >= 0),
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (sink_group, topic, partition)
);

---- create above / drop below ----

DROP TABLE sink_offsets;
