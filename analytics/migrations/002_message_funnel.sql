-- Per message, when it first reached each step of the funnel (NULL if it never did).
-- A plain view: min() and uniqExact are unaffected by unmerged duplicate rows, so no FINAL is needed.
CREATE VIEW IF NOT EXISTS message_funnel AS
SELECT
    message_id,
    any(app)                                       AS app,
    any(event_id)                                  AS event_id,
    any(user_id)                                   AS user_id,
    any(campaign)                                  AS campaign,
    groupUniqArrayIf(channel, channel != '')       AS channels,
    minIfOrNull(event_time, status = 'decided')    AS decided_at,
    minIfOrNull(event_time, status = 'sent')       AS sent_at,
    minIfOrNull(event_time, status = 'delivered')  AS delivered_at,
    minIfOrNull(event_time, status = 'opened')     AS opened_at,
    minIfOrNull(event_time, status = 'read')       AS read_at,
    minIfOrNull(event_time, status = 'clicked')    AS clicked_at,
    minIfOrNull(event_time, status = 'converted')  AS converted_at,
    uniqExactIf(attempt, status = 'failed')        AS failed_attempts
FROM message_events
GROUP BY message_id;
