-- Conversations, prompt templates and system prompts. Times as TIMESTAMPTZ, JSON as JSONB.

CREATE TABLE contexts (
    id            TEXT        PRIMARY KEY,
    component     TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    last_activity TIMESTAMPTZ NOT NULL,
    last_seq      BIGINT      NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
);

CREATE INDEX contexts_activity ON contexts (last_activity);
CREATE INDEX contexts_component_activity ON contexts (component, last_activity);

CREATE TABLE context_messages (
    context_id TEXT        NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
    seq        BIGINT      NOT NULL CHECK (seq >= 1),
    role       TEXT        NOT NULL,
    content    TEXT        NOT NULL,
    tokens     BIGINT      NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (context_id, seq)
);

CREATE TABLE context_summaries (
    context_id TEXT        PRIMARY KEY REFERENCES contexts (id) ON DELETE CASCADE,
    upto_seq   BIGINT      NOT NULL CHECK (upto_seq >= 0),
    text       TEXT        NOT NULL,
    tokens     BIGINT      NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE templates (
    name        TEXT        PRIMARY KEY,
    content     TEXT        NOT NULL,
    required    JSONB       NOT NULL DEFAULT '[]',
    optional    JSONB       NOT NULL DEFAULT '{}',
    description TEXT        NOT NULL DEFAULT '',
    metadata    JSONB       NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE prompts (
    id          TEXT        PRIMARY KEY,
    component   TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    content     TEXT        NOT NULL,
    description TEXT        NOT NULL DEFAULT '',
    tags        JSONB       NOT NULL DEFAULT '[]',
    is_default  BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX prompts_component ON prompts (component, name);
CREATE UNIQUE INDEX prompts_one_default ON prompts (component) WHERE is_default;
