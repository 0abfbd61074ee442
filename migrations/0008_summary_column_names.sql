-- The report's columns are declared once, in the coordinator's `SummaryRow`, and `ipw report`
-- has always printed these three as power_source, power_scope and energy_null_reason. The
-- view now uses the same names, so one declaration serves SQL, gRPC and every output format.
ALTER VIEW ipw_summary RENAME COLUMN power_sources TO power_source;
ALTER VIEW ipw_summary RENAME COLUMN power_scopes TO power_scope;
ALTER VIEW ipw_summary RENAME COLUMN energy_null_reasons TO energy_null_reason;
