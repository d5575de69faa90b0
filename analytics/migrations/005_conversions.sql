-- Conversions (issue 9): business outcomes reported by apps (payments, enrolments, orders), attributed
-- to the message that led to them (analytics/attribution.py).
--
-- An attributed conversion is a `converted` row in message_events carrying the message's id, channel,
-- provider, rule, variant, template, campaign and app, plus the conversion's id, type, value and
-- currency. `conversion_id` joins the sort key in the same ALTER that adds it (ClickHouse allows only
-- new columns without a DEFAULT there; a String is '' anyway), so two conversions led by one message
-- stay two rows while a replayed conversion collapses into one.
ALTER TABLE message_events
    ADD COLUMN IF NOT EXISTS conversion_id String AFTER step,
    ADD COLUMN IF NOT EXISTS conversion_type LowCardinality(String) DEFAULT '' AFTER conversion_id,
    ADD COLUMN IF NOT EXISTS value Decimal(18, 6) DEFAULT 0 AFTER conversion_type,
    ADD COLUMN IF NOT EXISTS currency LowCardinality(String) DEFAULT '' AFTER value,
    MODIFY ORDER BY (channel, status, message_id, attempt, step, conversion_id);

-- Every conversion, attributed or not (the unattributed ones are the baseline a message is measured
-- against). ReplacingMergeTree on (app, conversion_id): a conversion reported or replayed twice is one
-- row after merge; count with FINAL or uniqExact(app, conversion_id). `message_id` is '' when no
-- message is credited; `touch` is the transition that earned the credit (clicked, read, opened,
-- delivered, or `named` when the app named the message and it reached the person outside the windows).
-- Same retention as message_events (13 months), applied in production with ALTER TABLE ... MODIFY TTL.
CREATE TABLE IF NOT EXISTS conversions
(
    occurred_at    DateTime64(3, 'UTC'),
    app            LowCardinality(String),
    conversion_id  String,
    user_id        String,
    type           LowCardinality(String),
    value          Decimal(18, 6),
    currency       LowCardinality(String),
    message_id     String,
    message_app    LowCardinality(String),
    channel        LowCardinality(String),
    touch          LowCardinality(String),
    touched_at     Nullable(DateTime64(3, 'UTC')),
    model          LowCardinality(String),
    named_message  String,
    attributes     Map(String, String),
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (app, conversion_id);
