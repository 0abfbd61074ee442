//! Calls from the `ipw` CLI. The admin token is checked by the interceptor in
//! [`crate::server`] before any of these run.

use super::{State, db_error, parse_uuid, unix_us};
use crate::auth::{hash_secret, new_secret};
use crate::rescore::{self, RescoreError};
use crate::runs;
use crate::scoring::judge::{Judge, JudgeConfig, Strictness};
use crate::sweeps;
use crate::workload::{NewQuery, Parser};
use ipw_proto::v1::admin_server::Admin;
use ipw_proto::v1::{
    AgentInfo, AgentShare, ApproveAgentRequest, CreateRunRequest, CreateTokenRequest, CreateTokenResponse,
    ImportWorkloadResponse, ListAgentsRequest, ListAgentsResponse, ListSweepsRequest, ListSweepsResponse,
    ListTokensRequest, ListTokensResponse, ListWorkloadsRequest, ListWorkloadsResponse, QueryPoint, Report,
    ReportRequest, ReportRow, RevokeRequest, RunInfo, RunStatus, RunStatusRequest, ScoreRunRequest, ScoreRunResponse,
    SweepInfo, SweepRequest, SweepSpec, SweepStatusRequest, TimePoint, TokenInfo, WorkloadChunk,
};
use std::collections::HashMap;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

/// Default join-token lifetime.
const DEFAULT_TOKEN_TTL_SECS: u64 = 24 * 3600;
/// Queries inserted per statement during an import.
const IMPORT_BATCH: usize = 2000;

/// The admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    state: State,
}

impl AdminService {
    /// Serves admin calls over `state`.
    pub fn new(state: State) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let req = request.into_inner();
        let ttl = if req.ttl_seconds == 0 { DEFAULT_TOKEN_TTL_SECS } else { req.ttl_seconds };
        let ttl = i64::try_from(ttl)
            .ok()
            .and_then(chrono::Duration::try_seconds)
            .ok_or_else(|| Status::invalid_argument("ttl is too long"))?;
        let max_uses = if req.max_uses == 0 { 1 } else { req.max_uses };
        let max_uses = i32::try_from(max_uses).map_err(|_| Status::invalid_argument("too many uses"))?;
        let token = new_secret();
        let id = Uuid::now_v7();
        let expires_at = chrono::Utc::now() + ttl;
        sqlx::query!(
            "INSERT INTO join_tokens (id, token_hash, description, expires_at, max_uses, auto_approve)
             VALUES ($1, $2, $3, $4, $5, $6)",
            id,
            hash_secret(&token),
            req.description,
            expires_at,
            max_uses,
            req.auto_approve
        )
        .execute(&self.state.pool)
        .await
        .map_err(db_error)?;
        Ok(Response::new(CreateTokenResponse {
            token_id: id.to_string(),
            token,
            expires_unix_us: unix_us(expires_at),
            max_uses: max_uses as u32,
            auto_approve: req.auto_approve,
            join_url: self.state.advertise_url.clone(),
            ca_cert_hash: self.state.authority.as_ref().map(|a| a.fingerprint()).unwrap_or_default(),
        }))
    }

    async fn list_tokens(&self, _: Request<ListTokensRequest>) -> Result<Response<ListTokensResponse>, Status> {
        let rows = sqlx::query_as!(
            TokenRow,
            "SELECT id, description, created_at, expires_at, max_uses, uses, auto_approve, revoked_at, revoked_reason
             FROM join_tokens ORDER BY created_at"
        )
        .fetch_all(&self.state.pool)
        .await
        .map_err(db_error)?;
        Ok(Response::new(ListTokensResponse { tokens: rows.into_iter().map(TokenInfo::from).collect() }))
    }

    async fn revoke_token(&self, request: Request<RevokeRequest>) -> Result<Response<TokenInfo>, Status> {
        let req = request.into_inner();
        let id = parse_uuid("token", req.id.trim())?;
        let row = sqlx::query_as!(
            TokenRow,
            "UPDATE join_tokens SET revoked_at = coalesce(revoked_at, now()),
                                    revoked_reason = coalesce(revoked_reason, $2)
             WHERE id = $1
             RETURNING id, description, created_at, expires_at, max_uses, uses, auto_approve, revoked_at, revoked_reason",
            id,
            reason_or_default(&req.reason)?,
        )
        .fetch_optional(&self.state.pool)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Status::not_found(format!("no join token {id}; see `ipw token list`")))?;
        tracing::info!(token = %id, "join token revoked");
        Ok(Response::new(row.into()))
    }

    async fn revoke_agent(&self, request: Request<RevokeRequest>) -> Result<Response<AgentInfo>, Status> {
        let req = request.into_inner();
        let agent = find_agent(&self.state.pool, &req.id).await?;
        let reason = reason_or_default(&req.reason)?;
        let mut tx = self.state.pool.begin().await.map_err(db_error)?;
        let row = sqlx::query_as!(
            AgentRow,
            "UPDATE agents SET status = 'revoked', revoked_at = coalesce(revoked_at, now()),
                               revoked_reason = coalesce(revoked_reason, $2)
             WHERE id = $1
             RETURNING id, name, status, hardware_class, labels, joined_at, last_seen_at, agent_version",
            agent.id,
            reason
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        // Its leases go back to the queue now rather than when they would have run out.
        sqlx::query!(
            "UPDATE shards SET lease_expires_at = now() WHERE lease_owner = $1 AND status = 'leased'",
            agent.id
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        tracing::warn!(agent = %row.id, name = %row.name, reason, "agent revoked");
        Ok(Response::new(row.into()))
    }

    async fn list_agents(&self, _: Request<ListAgentsRequest>) -> Result<Response<ListAgentsResponse>, Status> {
        let rows = sqlx::query_as!(
            AgentRow,
            "SELECT id, name, status, hardware_class, labels, joined_at, last_seen_at, agent_version
             FROM agents ORDER BY joined_at"
        )
        .fetch_all(&self.state.pool)
        .await
        .map_err(db_error)?;
        Ok(Response::new(ListAgentsResponse { agents: rows.into_iter().map(AgentInfo::from).collect() }))
    }

    async fn approve_agent(&self, request: Request<ApproveAgentRequest>) -> Result<Response<AgentInfo>, Status> {
        let agent = find_agent(&self.state.pool, &request.into_inner().agent_id).await?;
        if agent.status == "revoked" {
            return Err(Status::failed_precondition(format!("agent {} was revoked; it must join again", agent.id)));
        }
        let row = sqlx::query_as!(
            AgentRow,
            "UPDATE agents SET status = 'approved', approved_at = coalesce(approved_at, now())
             WHERE id = $1
             RETURNING id, name, status, hardware_class, labels, joined_at, last_seen_at, agent_version",
            agent.id
        )
        .fetch_one(&self.state.pool)
        .await
        .map_err(db_error)?;
        tracing::info!(agent = %row.id, name = %row.name, "agent approved");
        Ok(Response::new(row.into()))
    }

    async fn import_workload(
        &self,
        request: Request<Streaming<WorkloadChunk>>,
    ) -> Result<Response<ImportWorkloadResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty import stream"))?;
        let name = first.name.trim().to_owned();
        if name.is_empty() || name.len() > 200 {
            return Err(Status::invalid_argument("workload name must be 1 to 200 bytes"));
        }
        let nothing = "; nothing was imported";
        // Everything happens in one transaction: any error below drops it, rolling back.
        let mut tx = self.state.pool.begin().await.map_err(db_error)?;
        let workload_id = Uuid::now_v7();
        sqlx::query!(
            "INSERT INTO workloads (id, name, format, source, n_queries) VALUES ($1, $2, 'generic', $3, 0)",
            workload_id,
            name,
            first.source
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                Status::already_exists(format!("a workload named \"{name}\" already exists{nothing}"))
            }
            _ => db_error(e),
        })?;

        let mut parser = Parser::new();
        let mut pending: Vec<NewQuery> = Vec::with_capacity(IMPORT_BATCH);
        let mut chunk = Some(first);
        let mut saw_last = false;
        while let Some(c) = chunk {
            if saw_last {
                return Err(Status::invalid_argument(format!("a chunk followed the one marked last{nothing}")));
            }
            saw_last = c.last;
            for line in &c.lines {
                let parsed = parser
                    .parse_line(line.line_no, &line.text)
                    .map_err(|e| Status::invalid_argument(format!("{e}{nothing}")))?;
                pending.extend(parsed);
                if pending.len() >= IMPORT_BATCH {
                    insert_queries(&mut tx, workload_id, &pending).await?;
                    pending.clear();
                }
            }
            chunk = stream
                .message()
                .await
                .map_err(|s| Status::aborted(format!("import stream broke off ({}){nothing}", s.message())))?;
        }
        if !saw_last {
            return Err(Status::aborted(format!("import stream ended before its last chunk{nothing}")));
        }
        insert_queries(&mut tx, workload_id, &pending).await?;
        let (Some(format), n @ 1..) = (parser.format(), parser.count()) else {
            return Err(Status::invalid_argument(format!("the file has no queries{nothing}")));
        };
        sqlx::query!(
            "UPDATE workloads SET n_queries = $2, format = $3 WHERE id = $1",
            workload_id,
            n as i32,
            format.as_str()
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        tracing::info!(workload = %name, queries = n, format = format.as_str(), "workload imported");
        Ok(Response::new(ImportWorkloadResponse {
            workload_id: workload_id.to_string(),
            name,
            format: format.as_str().into(),
            queries: n as u64,
        }))
    }

    async fn list_workloads(
        &self,
        _: Request<ListWorkloadsRequest>,
    ) -> Result<Response<ListWorkloadsResponse>, Status> {
        let rows = sqlx::query!("SELECT id, name, format, n_queries FROM workloads ORDER BY imported_at")
            .fetch_all(&self.state.pool)
            .await
            .map_err(db_error)?;
        Ok(Response::new(ListWorkloadsResponse {
            workloads: rows
                .into_iter()
                .map(|w| ImportWorkloadResponse {
                    workload_id: w.id.to_string(),
                    name: w.name,
                    format: w.format,
                    queries: w.n_queries as u64,
                })
                .collect(),
        }))
    }

    async fn create_run(&self, request: Request<CreateRunRequest>) -> Result<Response<RunInfo>, Status> {
        let req = request.into_inner();
        let settings =
            runs::Settings::from_request(req.concurrency, req.shard_size, req.repetitions, 0, req.params, 0)?;
        let mut tx = self.state.pool.begin().await.map_err(db_error)?;
        let workload = runs::find_workload(&mut tx, &req.workload).await?;
        let sample = runs::sample(&mut tx, &workload, req.sample, req.seed, false).await?;
        let run =
            runs::create(&mut tx, &workload, &req.model, req.seed, &settings, &sample, &runs::Placement::default())
                .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Response::new(run))
    }

    async fn get_run_status(&self, request: Request<RunStatusRequest>) -> Result<Response<RunStatus>, Status> {
        let run_id = parse_uuid("run", &request.get_ref().run_id)?;
        let run = run_info(&self.state.pool, run_id).await?;
        let s = sqlx::query!(
            r#"SELECT r.status, r.created_at, r.repetitions,
                      (SELECT count(*) FROM shards WHERE run_id = r.id AND status = 'pending') AS "pending!",
                      (SELECT count(*) FROM shards WHERE run_id = r.id AND status = 'leased') AS "leased!",
                      (SELECT count(*) FROM shards WHERE run_id = r.id AND status = 'completed') AS "completed!",
                      (SELECT count(*) FROM shards WHERE run_id = r.id AND status = 'failed') AS "failed!",
                      (SELECT count(*) FROM results WHERE run_id = r.id) AS "results!",
                      (SELECT count(*) FROM results WHERE run_id = r.id AND error IS NOT NULL) AS "errors!",
                      (SELECT count(*) FROM duplicate_attempts WHERE run_id = r.id) AS "duplicate_attempts!"
               FROM runs r WHERE r.id = $1"#,
            run_id
        )
        .fetch_one(&self.state.pool)
        .await
        .map_err(db_error)?;
        let agents = sqlx::query!(
            r#"SELECT a.id, a.name,
                      (SELECT count(*) FROM shards s WHERE s.run_id = $1 AND s.completed_by = a.id) AS "shards!",
                      (SELECT count(*) FROM results r WHERE r.run_id = $1 AND r.agent_id = a.id) AS "results!"
               FROM agents a
               WHERE a.id IN (SELECT agent_id FROM lease_attempts la JOIN shards s ON s.id = la.shard_id
                              WHERE s.run_id = $1)
               ORDER BY a.name, a.id"#,
            run_id
        )
        .fetch_all(&self.state.pool)
        .await
        .map_err(db_error)?;
        let failures = sqlx::query!(
            r#"SELECT shard_index, failure_reason AS "reason!" FROM shards
               WHERE run_id = $1 AND status = 'failed' ORDER BY shard_index"#,
            run_id
        )
        .fetch_all(&self.state.pool)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|f| format!("shard {}: {}", f.shard_index, f.reason))
        .collect();
        Ok(Response::new(RunStatus {
            expected_results: u64::from(run.queries) * s.repetitions as u64,
            run: Some(run),
            status: s.status,
            results: s.results as u64,
            errors: s.errors as u64,
            shards_pending: s.pending as u32,
            shards_leased: s.leased as u32,
            shards_completed: s.completed as u32,
            shards_failed: s.failed as u32,
            agents: agents
                .into_iter()
                .map(|a| AgentShare {
                    agent_name: a.name,
                    agent_id: a.id.to_string(),
                    shards_completed: a.shards as u32,
                    results: a.results as u64,
                })
                .collect(),
            created_unix_us: unix_us(s.created_at),
            failures,
            duplicate_attempts: s.duplicate_attempts as u64,
        }))
    }

    async fn get_report(&self, request: Request<ReportRequest>) -> Result<Response<Report>, Status> {
        let req = request.into_inner();
        let run_ids = req.run_ids.iter().map(|r| parse_uuid("run", r)).collect::<Result<Vec<Uuid>, _>>()?;
        for id in &run_ids {
            run_info(&self.state.pool, *id).await?;
        }
        let scoring = req.scoring_id.trim();
        if !scoring.is_empty() {
            let id = parse_uuid("scoring", scoring)?;
            let known = sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM scorings WHERE id = $1) AS "e!""#, id)
                .fetch_one(&self.state.pool)
                .await
                .map_err(db_error)?;
            if !known {
                return Err(Status::not_found(format!("no scoring {id}")));
            }
        }
        // The views read the chosen scoring from a setting local to this transaction.
        let mut tx = self.state.pool.begin().await.map_err(db_error)?;
        sqlx::query!("SELECT set_config('ipw.scoring', $1, true)", scoring)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let rows = sqlx::query!(
            "SELECT run_id, model, workload, hardware_class, queries, errors, scored, unscored, correct, accuracy,
                    accuracy_ci_low, accuracy_ci_high, latency_mean_s, latency_p50_s, latency_p95_s,
                    ttft_mean_s, ttft_p50_s, ttft_p95_s, output_tokens_per_s, tokens_out,
                    joules_per_query, dynamic_joules_per_query, mean_power_w, mean_dynamic_power_w,
                    tokens_per_joule, ipw, ipj, power_sources, power_scopes, energy_null_reasons, scoring_id
             FROM ipw_summary
             WHERE cardinality($1::uuid[]) = 0 OR run_id = ANY($1)
             ORDER BY model, hardware_class, run_id",
            &run_ids
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let count = |v: Option<i64>| v.unwrap_or(0) as u64;
        let rows = rows
            .into_iter()
            .map(|r| ReportRow {
                run_id: r.run_id.map(|u| u.to_string()).unwrap_or_default(),
                model: r.model.unwrap_or_default(),
                workload: r.workload.unwrap_or_default(),
                hardware_class: r.hardware_class.unwrap_or_default(),
                queries: count(r.queries),
                errors: count(r.errors),
                scored: count(r.scored),
                unscored: count(r.unscored),
                correct: count(r.correct),
                accuracy: r.accuracy,
                accuracy_ci_low: r.accuracy_ci_low,
                accuracy_ci_high: r.accuracy_ci_high,
                latency_mean_s: r.latency_mean_s,
                latency_p50_s: r.latency_p50_s,
                latency_p95_s: r.latency_p95_s,
                ttft_mean_s: r.ttft_mean_s,
                ttft_p50_s: r.ttft_p50_s,
                ttft_p95_s: r.ttft_p95_s,
                output_tokens_per_s: r.output_tokens_per_s,
                tokens_out: count(r.tokens_out),
                joules_per_query: r.joules_per_query,
                dynamic_joules_per_query: r.dynamic_joules_per_query,
                mean_power_w: r.mean_power_w,
                mean_dynamic_power_w: r.mean_dynamic_power_w,
                tokens_per_joule: r.tokens_per_joule,
                ipw: r.ipw,
                ipj: r.ipj,
                power_source: r.power_sources.unwrap_or_default(),
                power_scope: r.power_scopes.unwrap_or_default(),
                energy_null_reason: r.energy_null_reasons.unwrap_or_default(),
                scoring_id: r.scoring_id.map(|u| u.to_string()).unwrap_or_default(),
            })
            .collect();
        let (mut points, mut over_time) = (Vec::new(), Vec::new());
        if req.with_points {
            points = sqlx::query!(
                "SELECT run_id, model, hardware_class, tokens_out, energy_j, latency_s FROM query_results
                 WHERE (cardinality($1::uuid[]) = 0 OR run_id = ANY($1)) AND error IS NULL ORDER BY result_id",
                &run_ids
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|p| QueryPoint {
                run_id: p.run_id.map(|u| u.to_string()).unwrap_or_default(),
                model: p.model.unwrap_or_default(),
                hardware_class: p.hardware_class.unwrap_or_default(),
                tokens_out: p.tokens_out.unwrap_or(0) as u32,
                energy_j: p.energy_j,
                latency_s: p.latency_s,
            })
            .collect();
            over_time = sqlx::query!(
                "SELECT day, model, workload, hardware_class, runs, ipw, accuracy FROM ipw_over_time
                 ORDER BY day, model, hardware_class"
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|t| TimePoint {
                day: t.day.map(|d| d.to_string()).unwrap_or_default(),
                model: t.model.unwrap_or_default(),
                workload: t.workload.unwrap_or_default(),
                hardware_class: t.hardware_class.unwrap_or_default(),
                runs: t.runs.unwrap_or(0) as u64,
                ipw: t.ipw,
                accuracy: t.accuracy,
            })
            .collect();
        }
        tx.commit().await.map_err(db_error)?;
        Ok(Response::new(Report { rows, points, over_time }))
    }

    async fn create_sweep(&self, request: Request<SweepSpec>) -> Result<Response<SweepInfo>, Status> {
        let spec = request.into_inner();
        let mut tx = self.state.pool.begin().await.map_err(db_error)?;
        let definition = sweeps::define(&mut tx, &spec).await?;
        // A scheduled sweep waits for its first firing; a one-off starts now.
        let instance =
            if spec.cron.trim().is_empty() { sweeps::instantiate(&mut tx, definition, None).await? } else { None };
        tx.commit().await.map_err(db_error)?;
        let mut conn = self.state.pool.acquire().await.map_err(db_error)?;
        let info = match instance {
            Some(id) => sweeps::info(&mut conn, id).await?,
            None => sweeps::list(&mut conn)
                .await?
                .into_iter()
                .find(|s| s.definition_id == definition.to_string())
                .unwrap_or_default(),
        };
        Ok(Response::new(info))
    }

    async fn list_sweeps(&self, _: Request<ListSweepsRequest>) -> Result<Response<ListSweepsResponse>, Status> {
        let mut conn = self.state.pool.acquire().await.map_err(db_error)?;
        Ok(Response::new(ListSweepsResponse { sweeps: sweeps::list(&mut conn).await? }))
    }

    async fn get_sweep(&self, request: Request<SweepRequest>) -> Result<Response<SweepInfo>, Status> {
        let id = parse_uuid("sweep", &request.get_ref().sweep_id)?;
        let mut conn = self.state.pool.acquire().await.map_err(db_error)?;
        Ok(Response::new(sweeps::info(&mut conn, id).await?))
    }

    async fn set_sweep_status(&self, request: Request<SweepStatusRequest>) -> Result<Response<SweepInfo>, Status> {
        let req = request.into_inner();
        let mut tx = self.state.pool.begin().await.map_err(db_error)?;
        let id = sweeps::set_status(&mut tx, &req.sweep_id, &req.status).await?;
        let info = sweeps::info(&mut tx, id).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Response::new(info))
    }

    async fn score_run(&self, request: Request<ScoreRunRequest>) -> Result<Response<ScoreRunResponse>, Status> {
        let req = request.into_inner();
        let run_id = parse_uuid("run", &req.run_id)?;
        let judge = match (req.judge_url.trim(), req.judge_model.trim()) {
            ("", "") => None,
            ("", _) | (_, "") => {
                return Err(Status::invalid_argument("a judge needs both --judge-url and --judge-model"));
            }
            (url, model) => Some(
                Judge::new(JudgeConfig {
                    url: url.to_owned(),
                    model: model.to_owned(),
                    strictness: Strictness::parse(if req.strictness.is_empty() { "strict" } else { &req.strictness })
                        .map_err(Status::invalid_argument)?,
                    concurrency: req.judge_concurrency.clamp(1, 64) as usize,
                    max_attempts: 3,
                    timeout: std::time::Duration::from_secs(120),
                })
                .map_err(Status::internal)?,
            ),
        };
        if req.judge_all && judge.is_none() {
            return Err(Status::invalid_argument("--judge-all needs a judge (--judge-url and --judge-model)"));
        }
        let s =
            rescore::score_run(&self.state.pool, run_id, judge.as_ref(), req.judge_all).await.map_err(|e| match e {
                RescoreError::NoRun(_) => Status::not_found(e.to_string()),
                RescoreError::Judge(m) => Status::failed_precondition(m),
                RescoreError::Db(e) => db_error(e),
            })?;
        tracing::info!(run = %run_id, scoring = %s.scoring_id, scored = s.scored, failed = s.failed, "run scored");
        Ok(Response::new(ScoreRunResponse {
            scoring_id: s.scoring_id.to_string(),
            scored: s.scored,
            correct: s.correct,
            failed: s.failed,
            judge_version: s.judge_version.unwrap_or_default(),
            failures: s.failures,
        }))
    }
}

/// Finds an agent by id, or by a name only one agent has.
async fn find_agent(pool: &sqlx::PgPool, key: &str) -> Result<AgentRow, Status> {
    let key = key.trim();
    let mut matches = sqlx::query_as!(
        AgentRow,
        "SELECT id, name, status, hardware_class, labels, joined_at, last_seen_at, agent_version
         FROM agents WHERE id::text = $1 OR name = $1",
        key
    )
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    match matches.len() {
        0 => Err(Status::not_found(format!("no agent with id or name \"{key}\"; see `ipw agents list`"))),
        1 => Ok(matches.remove(0)),
        n => {
            let ids: Vec<String> = matches.iter().map(|a| a.id.to_string()).collect();
            Err(Status::invalid_argument(format!("{n} agents are named \"{key}\"; name one by id: {}", ids.join(", "))))
        }
    }
}

/// Why something was revoked: what the operator said, or "revoked by an operator".
fn reason_or_default(reason: &str) -> Result<String, Status> {
    let reason = reason.trim();
    let limit = crate::ingest::MAX_SHORT_TEXT_BYTES;
    if reason.len() > limit {
        return Err(Status::invalid_argument(format!("the reason is longer than {limit} bytes")));
    }
    Ok(if reason.is_empty() { "revoked by an operator".to_owned() } else { reason.to_owned() })
}

/// A row of `join_tokens` as the CLI sees it (never the hash).
struct TokenRow {
    id: Uuid,
    description: String,
    created_at: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
    max_uses: i32,
    uses: i32,
    auto_approve: bool,
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    revoked_reason: Option<String>,
}

impl From<TokenRow> for TokenInfo {
    fn from(t: TokenRow) -> Self {
        TokenInfo {
            token_id: t.id.to_string(),
            description: t.description,
            created_unix_us: unix_us(t.created_at),
            expires_unix_us: unix_us(t.expires_at),
            max_uses: t.max_uses as u32,
            uses: t.uses as u32,
            auto_approve: t.auto_approve,
            revoked_unix_us: t.revoked_at.map(unix_us).unwrap_or(0),
            revoked_reason: t.revoked_reason.unwrap_or_default(),
        }
    }
}

/// A row of `agents` as the CLI sees it.
struct AgentRow {
    id: Uuid,
    name: String,
    status: String,
    hardware_class: String,
    labels: serde_json::Value,
    joined_at: chrono::DateTime<chrono::Utc>,
    last_seen_at: Option<chrono::DateTime<chrono::Utc>>,
    agent_version: String,
}

impl From<AgentRow> for AgentInfo {
    fn from(a: AgentRow) -> Self {
        AgentInfo {
            id: a.id.to_string(),
            name: a.name,
            status: a.status,
            hardware_class: a.hardware_class,
            labels: serde_json::from_value::<HashMap<String, String>>(a.labels).unwrap_or_default(),
            joined_unix_us: unix_us(a.joined_at),
            last_seen_unix_us: a.last_seen_at.map(unix_us).unwrap_or(0),
            agent_version: a.agent_version,
        }
    }
}

/// The run's identity and size, or NotFound.
async fn run_info(pool: &sqlx::PgPool, run_id: Uuid) -> Result<RunInfo, Status> {
    let r = sqlx::query!(
        r#"SELECT w.name AS workload, m.name AS model,
                  (SELECT count(*) FROM run_queries WHERE run_id = r.id) AS "queries!",
                  (SELECT count(*) FROM shards WHERE run_id = r.id) AS "shards!"
           FROM runs r JOIN workloads w ON w.id = r.workload_id JOIN models m ON m.id = r.model_id
           WHERE r.id = $1"#,
        run_id
    )
    .fetch_optional(pool)
    .await
    .map_err(db_error)?
    .ok_or_else(|| Status::not_found(format!("no run {run_id}")))?;
    Ok(RunInfo {
        run_id: run_id.to_string(),
        workload: r.workload,
        model: r.model,
        queries: r.queries as u32,
        shards: r.shards as u32,
    })
}

/// Inserts parsed queries with one statement.
async fn insert_queries(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    workload_id: Uuid,
    queries: &[NewQuery],
) -> Result<(), Status> {
    if queries.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&NewQuery) -> String| queries.iter().map(f).collect::<Vec<String>>();
    let line_nos: Vec<i32> = queries.iter().map(|q| i32::try_from(q.line_no).unwrap_or(i32::MAX)).collect();
    let choices: Vec<Option<String>> = queries
        .iter()
        .map(|q| q.choices.as_ref().map(|c| serde_json::to_string(c).expect("strings are JSON")))
        .collect();
    let categories: Vec<Option<String>> = queries.iter().map(|q| q.category.clone()).collect();
    sqlx::query(
        "INSERT INTO queries (workload_id, external_id, line_no, prompt, choices, answer, category, scorer, tolerance)
         SELECT $1, u.external_id, u.line_no, u.prompt, u.choices::jsonb, u.answer, u.category, u.scorer, u.tolerance
         FROM UNNEST($2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::float8[])
              AS u(external_id, line_no, prompt, choices, answer, category, scorer, tolerance)",
    )
    .bind(workload_id)
    .bind(col(|q| q.external_id.clone()))
    .bind(line_nos)
    .bind(col(|q| q.prompt.clone()))
    .bind(choices)
    .bind(col(|q| q.answer.clone()))
    .bind(categories)
    .bind(col(|q| q.scorer.as_str().to_owned()))
    .bind(queries.iter().map(|q| q.tolerance).collect::<Vec<Option<f64>>>())
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}
