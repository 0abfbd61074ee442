-- A sweep takes what `ipw run create` takes: a list of concurrency levels (one run per model,
-- hardware class and level, all on one sample), an open-loop load, goodput SLOs and the
-- repeat-until-settled rule. Each of its runs carries them as a run created by hand does.
ALTER TABLE sweep_definitions DROP CONSTRAINT sweep_definitions_concurrency_check;
ALTER TABLE sweep_definitions RENAME COLUMN concurrency TO concurrency_levels;
ALTER TABLE sweep_definitions
    ALTER COLUMN concurrency_levels TYPE integer[] USING ARRAY[concurrency_levels],
    ADD CONSTRAINT sweep_definitions_concurrency_levels_check
        CHECK (cardinality(concurrency_levels) BETWEEN 1 AND 32
               AND 1 <= ALL (concurrency_levels) AND 1024 >= ALL (concurrency_levels)),
    ADD COLUMN load_pattern text NOT NULL DEFAULT 'closed' CHECK (load_pattern IN ('closed', 'poisson', 'constant')),
    ADD COLUMN rate_per_s double precision CHECK (rate_per_s > 0),
    ADD COLUMN arrival_seed bigint NOT NULL DEFAULT 0,
    ADD COLUMN slo_ttft_s double precision CHECK (slo_ttft_s > 0),
    ADD COLUMN slo_tpot_s double precision CHECK (slo_tpot_s > 0),
    ADD COLUMN repeat_until_cv double precision CHECK (repeat_until_cv > 0),
    ADD COLUMN max_repeats integer CHECK (max_repeats BETWEEN 1 AND 100),
    ADD CONSTRAINT sweep_definitions_rate_with_open_loop CHECK ((load_pattern = 'closed') = (rate_per_s IS NULL)),
    ADD CONSTRAINT sweep_definitions_max_repeats_with_cv CHECK ((repeat_until_cv IS NULL) = (max_repeats IS NULL));
