-- Conversations, prompt templates and system prompts. Times as UTC text YYYY-MM-DDTHH:MM:SS.ffffffZ,
-- JSON as text, booleans as 0/1. Deleting a context cascades (the connection enables foreign keys).

CREATE TABLE contexts (
    id            TEXT    PRIMARY KEY,
    component     TEXT,
    created_at    TEXT    NOT NULL,
    last_activity TEXT    NOT NULL,
    last_seq      INTEGER NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
);

CREATE INDEX contexts_activity ON contexts (last_activity);
CREATE INDEX contexts_component_activity ON contexts (component, last_activity);

CREATE TABLE context_messages (
    context_id TEXT    NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL CHECK (seq >= 1),
    role       TEXT    NOT NULL,
    content    TEXT    NOT NULL,
    tokens     INTEGER NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    created_at TEXT    NOT NULL,
    PRIMARY KEY (context_id, seq)
);

CREATE TABLE context_summaries (
    context_id TEXT    PRIMARY KEY REFERENCES contexts (id) ON DELETE CASCADE,
    upto_seq   INTEGER NOT NULL CHECK (upto_seq >= 0),
    text       TEXT    NOT NULL,
    tokens     INTEGER NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    created_at TEXT    NOT NULL
);

CREATE TABLE templates (
    name        TEXT PRIMARY KEY,
    content     TEXT NOT NULL,
    required    TEXT NOT NULL DEFAULT '[]',
    optional    TEXT NOT NULL DEFAULT '{}',
    description TEXT NOT NULL DEFAULT '',
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE prompts (
    id          TEXT    PRIMARY KEY,
    component   TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    tags        TEXT    NOT NULL DEFAULT '[]',
    is_default  INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);

CREATE INDEX prompts_component ON prompts (component, name);
CREATE UNIQUE INDEX prompts_one_default ON prompts (component) WHERE is_default = 1;
