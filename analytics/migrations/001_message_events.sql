-- One row per state transition of a message: the analysts' ground truth (ARCHITECTURE.md).
--
-- ReplacingMergeTree on (channel, status, message_id, attempt): a receipt redelivered by Kafka
-- carries the same key and collapses into one row at merge time; queries that must be exact before
-- merges happen count uniqExact(message_id) or read FINAL. Repeated opens/clicks of one message
-- collapse into one row too: the table counts messages reaching a state, not raw hits.
-- dead_lettered rows have channel '' and a message_id derived from the raw payload, so they stay
-- distinct. Channel and status lead the key because the reach report groups by them.
--
-- Retention policy: keep 13 months (a year plus the month being compared). Production applies it
-- with `ALTER TABLE message_events MODIFY TTL toDateTime(event_time) + INTERVAL 13 MONTH`; it is
-- not a TTL clause here because a TTL deletes old-timestamped rows at insert (test fixtures,
-- replays of old events, rule simulation over history).
CREATE TABLE IF NOT EXISTS message_events
(
    event_time   DateTime64(3, 'UTC'),
    message_id   String,
    event_id     String,
    app          LowCardinality(String),
    user_id      String,
    channel      LowCardinality(String),
    provider     LowCardinality(String),
    -- LowCardinality, not Enum: clickhouse-connect writes an unknown Enum name as 0 without an
    -- error; the CHECK below rejects a status outside processors.records.STATUSES instead.
    status       LowCardinality(String),
    reason       String,
    rule_id      LowCardinality(String),
    rule_version LowCardinality(String),
    template     LowCardinality(String),
    campaign     LowCardinality(String),
    attempt      UInt16,
    cost         Decimal(12, 6),
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    CONSTRAINT known_status CHECK status IN (
        'decided', 'suppressed', 'capped', 'deferred', 'sent', 'delivered', 'failed',
        'opened', 'clicked', 'read', 'converted', 'dead_lettered'
    )
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (channel, status, message_id, attempt);
