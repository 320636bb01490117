-- One version per profile field: a snapshot (a webhook, the Backend API, token claims) sets
-- only the fields it carries, each only where it is at least as new as that field's version,
-- so a token that carries only `email` cannot make an older webhook's names lose.
-- `clerk_updated_at` stays the newest version applied to the row. Existing rows start with
-- each known field versioned as the row was.
ALTER TABLE users
    ADD COLUMN IF NOT EXISTS email_version      timestamptz,
    ADD COLUMN IF NOT EXISTS first_name_version timestamptz,
    ADD COLUMN IF NOT EXISTS last_name_version  timestamptz,
    ADD COLUMN IF NOT EXISTS username_version   timestamptz,
    ADD COLUMN IF NOT EXISTS image_url_version  timestamptz;

UPDATE users SET
    email_version      = CASE WHEN email      IS NOT NULL THEN clerk_updated_at END,
    first_name_version = CASE WHEN first_name IS NOT NULL THEN clerk_updated_at END,
    last_name_version  = CASE WHEN last_name  IS NOT NULL THEN clerk_updated_at END,
    username_version   = CASE WHEN username   IS NOT NULL THEN clerk_updated_at END,
    image_url_version  = CASE WHEN image_url  IS NOT NULL THEN clerk_updated_at END
WHERE clerk_updated_at IS NOT NULL;
