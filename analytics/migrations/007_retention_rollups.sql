-- Retention, stated in the schema (issue 9): raw transitions and accepted events are kept 13 months (a
-- year plus the month being compared); a daily rollup of message_events is kept 5 years, so a
-- year-on-year funnel still works after the raw rows are gone.
--
-- A TTL drops expired rows when they are written, too: a replay or a fixture older than 13 months is
-- not stored. Tests take their times relative to now and stay well inside the window.
-- ttl_only_drop_parts: parts are monthly partitions, so expiry drops whole parts instead of rewriting them.
ALTER TABLE message_events MODIFY TTL toDateTime(event_time) + INTERVAL 13 MONTH;
ALTER TABLE message_events MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE event_log MODIFY TTL toDateTime(event_time) + INTERVAL 13 MONTH;
ALTER TABLE event_log MODIFY SETTING ttl_only_drop_parts = 1;

-- Per day (UTC), app, channel, provider, template, rule, campaign, variant and status: distinct
-- messages (a uniqCombined64 state: merged across days and groups it counts each message once, within
-- about 1 % above 100k messages, exactly below) and their cost. A redelivered receipt adds its message
-- id again (no change) but its cost twice: the raw table, deduplicated by its key, stays the exact one.
CREATE TABLE IF NOT EXISTS message_rollup_daily
(
    day          Date,
    app          LowCardinality(String),
    channel      LowCardinality(String),
    provider     LowCardinality(String),
    template     LowCardinality(String),
    rule_id      LowCardinality(String),
    campaign     LowCardinality(String),
    variant      LowCardinality(String),
    status       LowCardinality(String),
    messages     AggregateFunction(uniqCombined64, String),
    cost         SimpleAggregateFunction(sum, Decimal(38, 6))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYear(day)
ORDER BY (day, app, channel, status, provider, template, rule_id, campaign, variant)
TTL day + INTERVAL 5 YEAR;

CREATE MATERIALIZED VIEW IF NOT EXISTS message_rollup_daily_mv TO message_rollup_daily AS
SELECT
    toDate(event_time) AS day, app, channel, provider, template, rule_id, campaign, variant, status,
    uniqCombined64State(message_id) AS messages,
    sum(toDecimal128(cost, 6)) AS cost
FROM message_events
GROUP BY day, app, channel, provider, template, rule_id, campaign, variant, status;

-- The rows stored before the view existed (rows written meanwhile may be counted twice in `cost`).
INSERT INTO message_rollup_daily
SELECT
    toDate(event_time) AS day, app, channel, provider, template, rule_id, campaign, variant, status,
    uniqCombined64State(message_id) AS messages,
    sum(toDecimal128(cost, 6)) AS cost
FROM message_events
GROUP BY day, app, channel, provider, template, rule_id, campaign, variant, status;
