-- Rules split recipients into variants and run fallback steps (issue 3): each receipt records which
-- variant and which step (0 = the decision's own send) it belongs to, so analysts can compare
-- variants' conversion and see how much fallback sends add. `expired` is a message kept for an
-- unreachable recipient (离线保存) whose keep time ran out.
-- `step` joins the sort key in the same ALTER that adds it (ClickHouse allows only new columns there):
-- a fallback step's `sent` on a channel must not collapse into the first send's row.
ALTER TABLE message_events ADD COLUMN IF NOT EXISTS variant LowCardinality(String) DEFAULT '' AFTER cost;
ALTER TABLE message_events
    ADD COLUMN IF NOT EXISTS step UInt8 AFTER variant,
    MODIFY ORDER BY (channel, status, message_id, attempt, step);
ALTER TABLE message_events DROP CONSTRAINT IF EXISTS known_status;
ALTER TABLE message_events ADD CONSTRAINT known_status CHECK status IN (
    'decided', 'suppressed', 'capped', 'deferred', 'sent', 'delivered', 'failed',
    'opened', 'clicked', 'read', 'converted', 'dead_lettered', 'expired'
);
