-- The audit log (issue 12): one row per operator or administrative action, from topic `audit`
-- (records/audit.py AuditRecord). Append-only: the analytics service is its only writer and never
-- updates or deletes a row; the API and `switchboard audit` only read it.
--
-- ReplacingMergeTree on (actor, at, audit_id): a record the service reads twice (redelivery after a
-- crash before its offsets were committed) is one row after merge; readers use FINAL. Ordered by actor
-- and time for "what did X do"; skip indexes on target and app for "what happened to Y". `before` and
-- `after` are JSON strings, secrets already masked by the publisher (a record with an unmasked secret
-- cannot be built). Kept three years (TTL on the action's time), longer than any other table: an audit
-- trail must outlive the messages it explains.
CREATE TABLE IF NOT EXISTS audit_log
(
    at           DateTime64(3, 'UTC'),
    audit_id     String,
    actor        String,
    actor_kind   LowCardinality(String),
    source       String,
    action       LowCardinality(String),
    target_kind  LowCardinality(String),
    target       String,
    app          LowCardinality(String),
    outcome      LowCardinality(String),
    reason       String,
    before       String,
    after        String,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX target_index target TYPE bloom_filter GRANULARITY 4,
    INDEX app_index app TYPE set(1000) GRANULARITY 4,
    INDEX action_index action TYPE set(1000) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(at)
ORDER BY (actor, at, audit_id)
TTL toDateTime(at) + INTERVAL 3 YEAR;
