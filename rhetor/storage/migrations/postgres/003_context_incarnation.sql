-- A random token per context, set when its row is created and never changed: a context deleted and created
-- again under the same id gets a new one, so cached history (sql_contexts.py) can tell the two apart even when
-- their sequence numbers and times coincide. Contexts stored before this migration get one now.

ALTER TABLE contexts ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';

UPDATE contexts SET incarnation = md5(random()::text || clock_timestamp()::text || id)
