-- Governance (issue 12): a message under an approval policy is held (`pending_approval`) until it is
-- `approved` or `rejected` (or `expired`, already known); a delivery a budget stopped is `over_budget`
-- with the rule's reason; `erased` marks where a person's rows were anonymised on request.
ALTER TABLE message_events DROP CONSTRAINT IF EXISTS known_status;
ALTER TABLE message_events ADD CONSTRAINT known_status CHECK status IN (
    'decided', 'suppressed', 'capped', 'deferred', 'sent', 'delivered', 'failed',
    'opened', 'clicked', 'read', 'converted', 'dead_lettered', 'expired', 'held_out',
    'pending_approval', 'approved', 'rejected', 'over_budget', 'erased'
);
