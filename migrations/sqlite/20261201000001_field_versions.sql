-- One version per profile field (Unix milliseconds), as in migrations/postgres: a snapshot sets
-- only the fields it carries, each only where it is at least as new as that field's version.
-- Existing rows start with each known field versioned as the row was.
ALTER TABLE users ADD COLUMN email_version INTEGER;
ALTER TABLE users ADD COLUMN first_name_version INTEGER;
ALTER TABLE users ADD COLUMN last_name_version INTEGER;
ALTER TABLE users ADD COLUMN username_version INTEGER;
ALTER TABLE users ADD COLUMN image_url_version INTEGER;

UPDATE users SET
    email_version      = CASE WHEN email      IS NOT NULL THEN clerk_updated_at END,
    first_name_version = CASE WHEN first_name IS NOT NULL THEN clerk_updated_at END,
    last_name_version  = CASE WHEN last_name  IS NOT NULL THEN clerk_updated_at END,
    username_version   = CASE WHEN username   IS NOT NULL THEN clerk_updated_at END,
    image_url_version  = CASE WHEN image_url  IS NOT NULL THEN clerk_updated_at END
WHERE clerk_updated_at IS NOT NULL;
