-- Svix message ids of applied webhook deliveries: a redelivery of the same id is a no-op.
-- Rows older than the retention (30 days, far beyond Svix's retry schedule) are deleted as new
-- deliveries arrive.
CREATE TABLE IF NOT EXISTS clerk_webhook_events (
    svix_id     text PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS clerk_webhook_events_received_at ON clerk_webhook_events (received_at);
