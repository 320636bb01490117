-- GCRA state of the shared rate limiter: the theoretical arrival time (TAT) per key, and
-- whether the last request was allowed. The foreign key makes "the limiter runs after the user
-- row exists" a database guarantee. Rows whose `tat` has passed carry no information and are
-- deleted in the background.
CREATE TABLE IF NOT EXISTS clerk_rate_limits (
    user_id text PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    tat     timestamptz NOT NULL,
    allowed boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS clerk_rate_limits_ip (
    ip      inet PRIMARY KEY,
    tat     timestamptz NOT NULL,
    allowed boolean NOT NULL
);
