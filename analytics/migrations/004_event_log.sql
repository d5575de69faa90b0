-- Every accepted event, as ingest saw it: the input of rule simulation (`switchboard rules simulate`
-- replays a period of it through candidate rules and compares with message_events).
--
-- `payload` is the EventCore as JSON (the event without its audience); `audience` is the audience
-- selector as JSON. ReplacingMergeTree on (app, event_id): an event redelivered by Kafka or logged
-- twice by two workers collapses into one row; readers use FINAL. Same retention as message_events
-- (13 months), applied in production with ALTER TABLE ... MODIFY TTL rather than a TTL clause here,
-- so replayed history is not deleted at insert.
CREATE TABLE IF NOT EXISTS event_log
(
    event_time   DateTime64(3, 'UTC'),
    app          LowCardinality(String),
    event_id     String,
    payload      String,
    audience     String,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (app, event_id);
