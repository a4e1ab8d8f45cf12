-- Budget ledger. Money in integer nano-dollars (1e-9 USD); times as TIMESTAMPTZ.

CREATE TABLE budget_buckets (
    scope          TEXT    NOT NULL,
    win            TEXT    NOT NULL,
    win_key        TEXT    NOT NULL,
    spent_nanos    BIGINT  NOT NULL DEFAULT 0,
    reserved_nanos BIGINT  NOT NULL DEFAULT 0 CHECK (reserved_nanos >= 0),
    PRIMARY KEY (scope, win, win_key)
);

CREATE TABLE budget_reservations (
    id                 TEXT    PRIMARY KEY,
    state              TEXT    NOT NULL CHECK (state IN ('reserved', 'settled', 'released', 'expired')),
    amount_nanos       BIGINT  NOT NULL CHECK (amount_nanos >= 0),
    cost_nanos         BIGINT,
    buckets            JSONB   NOT NULL,
    day_key            TEXT    NOT NULL,
    week_key           TEXT    NOT NULL,
    month_key          TEXT    NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ NOT NULL,
    finished_at        TIMESTAMPTZ,
    component          TEXT,
    task_type          TEXT,
    model              TEXT,
    provider           TEXT,
    input_tokens       BIGINT  NOT NULL DEFAULT 0,
    output_tokens      BIGINT  NOT NULL DEFAULT 0,
    cache_read_tokens  BIGINT  NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT  NOT NULL DEFAULT 0,
    extra              JSONB   NOT NULL DEFAULT '{}'
);

CREATE INDEX budget_reservations_live ON budget_reservations (expires_at) WHERE state = 'reserved';
CREATE INDEX budget_reservations_day ON budget_reservations (day_key) WHERE state = 'settled';
CREATE INDEX budget_reservations_week ON budget_reservations (week_key) WHERE state = 'settled';
CREATE INDEX budget_reservations_month ON budget_reservations (month_key) WHERE state = 'settled';

CREATE TABLE budget_thresholds (
    scope         TEXT    NOT NULL,
    win           TEXT    NOT NULL,
    win_key       TEXT    NOT NULL,
    threshold_ppm BIGINT  NOT NULL,
    fired_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, win, win_key, threshold_ppm)
);
