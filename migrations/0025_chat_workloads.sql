-- Workloads researchers bring: chat conversations sent to the engine as they are, and a
-- completion budget per query.

ALTER TABLE workloads DROP CONSTRAINT workloads_format_check;
ALTER TABLE workloads ADD CONSTRAINT workloads_format_check CHECK (format IN ('mmlu-pro', 'generic', 'chat'));

-- A chat query's conversation, [{role, content}, ...] ending with a user message, sent to
-- the engine exactly as imported; NULL for queries rendered from `prompt`. `prompt` then
-- holds the last user message, for display and export.
ALTER TABLE queries ADD COLUMN messages jsonb
    CHECK (messages IS NULL OR (jsonb_typeof(messages) = 'array' AND jsonb_array_length(messages) > 0));

-- The query's own completion budget; NULL: the run's.
ALTER TABLE queries ADD COLUMN max_tokens integer CHECK (max_tokens > 0);
