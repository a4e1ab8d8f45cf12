-- Budget ledger. Money in integer nano-dollars (1e-9 USD); times as UTC text YYYY-MM-DDTHH:MM:SS.ffffffZ.

CREATE TABLE budget_buckets (
    scope          TEXT    NOT NULL,
    win            TEXT    NOT NULL,
    win_key        TEXT    NOT NULL,
    spent_nanos    INTEGER NOT NULL DEFAULT 0,
    reserved_nanos INTEGER NOT NULL DEFAULT 0 CHECK (reserved_nanos >= 0),
    PRIMARY KEY (scope, win, win_key)
);

CREATE TABLE budget_reservations (
    id                 TEXT    PRIMARY KEY,
    state              TEXT    NOT NULL CHECK (state IN ('reserved', 'settled', 'released', 'expired')),
    amount_nanos       INTEGER NOT NULL CHECK (amount_nanos >= 0),
    cost_nanos         INTEGER,
    buckets            TEXT    NOT NULL,
    day_key            TEXT    NOT NULL,
    week_key           TEXT    NOT NULL,
    month_key          TEXT    NOT NULL,
    created_at         TEXT    NOT NULL,
    expires_at         TEXT    NOT NULL,
    finished_at        TEXT,
    component          TEXT,
    task_type          TEXT,
    model              TEXT,
    provider           TEXT,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    extra              TEXT    NOT NULL DEFAULT '{}'
);

CREATE INDEX budget_reservations_live ON budget_reservations (expires_at) WHERE state = 'reserved';
CREATE INDEX budget_reservations_day ON budget_reservations (day_key) WHERE state = 'settled';
CREATE INDEX budget_reservations_week ON budget_reservations (week_key) WHERE state = 'settled';
CREATE INDEX budget_reservations_month ON budget_reservations (month_key) WHERE state = 'settled';

CREATE TABLE budget_thresholds (
    scope         TEXT    NOT NULL,
    win           TEXT    NOT NULL,
    win_key       TEXT    NOT NULL,
    threshold_ppm INTEGER NOT NULL,
    fired_at      TEXT    NOT NULL,
    PRIMARY KEY (scope, win, win_key, threshold_ppm)
);
