-- Audiences and content (issue 13): a receipt names the template version it was rendered from (0: a
-- template file, or no template); an operator can cancel a campaign (what was not sent is `cancelled`)
-- and recall its inbox messages (`recalled`).
ALTER TABLE message_events ADD COLUMN IF NOT EXISTS template_version UInt32 DEFAULT 0 AFTER template;
ALTER TABLE message_events DROP CONSTRAINT IF EXISTS known_status;
ALTER TABLE message_events ADD CONSTRAINT known_status CHECK status IN (
    'decided', 'suppressed', 'capped', 'deferred', 'sent', 'delivered', 'failed',
    'opened', 'clicked', 'read', 'converted', 'dead_lettered', 'expired', 'held_out',
    'pending_approval', 'approved', 'rejected', 'over_budget', 'erased', 'cancelled', 'recalled'
);
