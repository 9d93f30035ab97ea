-- People who sign in: a unique name, a role (admin: everything, users included; operator:
-- services and proxies; viewer: read only) and an argon2id password hash (PHC string).
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Signed-in browsers: the SHA-256 of the session cookie and the CSRF token that cookie-
-- authenticated writes must echo. No user: signed in with the bootstrap admin token.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- Personal API tokens: only their SHA-256 is stored. Revoked ones are kept, so that a
-- revoked token is told apart from a wrong one.
CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

-- Who changed what, when and from where; before and after are JSON objects (no secrets).
CREATE TABLE audit (
    id     BIGSERIAL PRIMARY KEY,
    at     BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    kind   TEXT NOT NULL,
    object TEXT NOT NULL,
    before TEXT,
    after  TEXT
);
CREATE INDEX audit_by_time ON audit (at, id);
