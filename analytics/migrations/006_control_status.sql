-- A rule's variants may include a control share that receives nothing (issue 9): each of its
-- recipients gets one `held_out` row (channel '', the rule, its version and the control variant),
-- so the variant report counts them and measures lift against doing nothing.
-- ClickHouse cannot alter a CHECK in place: drop it and add it again with the new status.
ALTER TABLE message_events DROP CONSTRAINT IF EXISTS known_status;
ALTER TABLE message_events ADD CONSTRAINT known_status CHECK status IN (
    'decided', 'suppressed', 'capped', 'deferred', 'sent', 'delivered', 'failed',
    'opened', 'clicked', 'read', 'converted', 'dead_lettered', 'expired', 'held_out'
);
