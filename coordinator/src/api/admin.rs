//! Calls from the `ipw` CLI. The admin credential is checked by the gate (see
//! [`super::auth::AdminAdmission`]) before any of these run; each action that changes
//! something is recorded in `admin_audit` with the credential's name and the peer.

use super::auth::{Operator, operator};
use super::error::prefixed;
use super::research as parse;
use super::{State, parse_uuid};
use crate::domain::Invalid;
use crate::domain::pricing;
use crate::domain::scoring::judge::{Judge, JudgeConfig};
use crate::domain::settings::Settings;
use crate::domain::sweep::Definition;
use crate::domain::workload::{FieldMap, Parser, Unit};
use crate::infra::auth::{hash_secret, new_secret};
use crate::jobs::rescore;
use crate::store::{
    self, admin, agents, exports, pricing as prices, reports, research, run_list, runs, sweeps, tokens, unix_us,
    viewers, workloads,
};
use ipw_proto::kinds::{RunStatus as RunStatusKind, Strictness, SweepStatus};
use ipw_proto::v1::admin_server::Admin;
use ipw_proto::v1::{
    AdminTokenInfo, AgentInfo, AnalysisRequest, AnalysisTable, ApproveAgentRequest, CancelRunRequest,
    CancelRunResponse, CreateAdminTokenRequest, CreateAdminTokenResponse, CreateRunRequest, CreateTokenRequest,
    CreateTokenResponse, ElectricityPriceSpec, ExportChunk, ExportRequest, ImportPricesRequest, ImportWeightsRequest,
    ImportWeightsResponse, ImportWorkloadResponse, ListAdminTokensRequest, ListAdminTokensResponse, ListAgentsRequest,
    ListAgentsResponse, ListPricesRequest, ListRunsRequest, ListRunsResponse, ListSweepsRequest, ListSweepsResponse,
    ListTokensRequest, ListTokensResponse, ListWorkloadsRequest, ListWorkloadsResponse, PriceList, PriceSpec, Report,
    ReportRequest, RevokeAdminTokenRequest, RevokeRequest, RunInfo, RunStatus, RunStatusRequest, ScoreRunRequest,
    ScoreRunResponse, SweepInfo, SweepRequest, SweepSpec, SweepStatusRequest, TokenInfo, WorkloadChunk,
    analysis_request,
};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

/// Default token lifetime.
const DEFAULT_TOKEN_TTL_SECS: u64 = 24 * 3600;
/// The longest life a token may have.
const MAX_TOKEN_TTL_SECS: i64 = 10 * 365 * 24 * 3600;

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

    /// A join token: agents enroll with it.
    async fn create_join_token(
        &self,
        op: &Operator,
        req: &CreateTokenRequest,
        token: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<CreateTokenResponse, Status> {
        let max_uses = if req.max_uses == 0 { 1 } else { req.max_uses };
        let max_uses = i32::try_from(max_uses).map_err(|_| Status::invalid_argument("too many uses"))?;
        let new = tokens::NewToken {
            hash: hash_secret(token),
            description: &req.description,
            expires_at,
            max_uses,
            auto_approve: req.auto_approve,
        };
        let id = tokens::create(&self.state.pool, &new).await?;
        self.audit(op, "CreateToken", &id.to_string()).await?;
        Ok(CreateTokenResponse {
            token_id: id.to_string(),
            max_uses: max_uses as u32,
            auto_approve: req.auto_approve,
            join_url: self.state.advertise_url.clone(),
            ca_cert_hash: self.state.authority.as_ref().map(|a| a.fingerprint()).unwrap_or_default(),
            ..CreateTokenResponse::default()
        })
    }

    /// A viewer token: it logs in to the dashboard, and nothing else.
    async fn create_viewer_token(
        &self,
        op: &Operator,
        req: &CreateTokenRequest,
        token: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<CreateTokenResponse, Status> {
        if req.max_uses != 0 || req.auto_approve {
            return Err(Status::invalid_argument(
                "a viewer token enrolls no agents: drop --uses and --auto-approve (or drop --viewer)",
            ));
        }
        let new = viewers::NewViewer {
            hash: hash_secret(token),
            description: &req.description,
            expires_at,
            created_by: &op.name,
        };
        let id = viewers::create(&self.state.pool, &new).await?;
        self.audit(op, "CreateViewerToken", &id.to_string()).await?;
        Ok(CreateTokenResponse {
            token_id: id.to_string(),
            viewer: true,
            dashboard_login_url: self.state.dashboard_login_url.clone(),
            ..CreateTokenResponse::default()
        })
    }

    /// Records an action that succeeded: who (the credential's name), from where, on what.
    async fn audit(&self, op: &Operator, action: &str, target: &str) -> Result<(), Status> {
        let peer = op.peer.map(|p| p.to_string());
        admin::record(&self.state.pool, &op.name, action, target, peer.as_deref()).await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let op = operator(&request)?;
        let req = request.into_inner();
        let ttl = if req.ttl_seconds == 0 { DEFAULT_TOKEN_TTL_SECS } else { req.ttl_seconds };
        // A token that outlives ten years is a mistake, and a huge one overflowed the clock.
        let expires_at = i64::try_from(ttl)
            .ok()
            .filter(|s| *s <= MAX_TOKEN_TTL_SECS)
            .and_then(chrono::Duration::try_seconds)
            .and_then(|ttl| chrono::Utc::now().checked_add_signed(ttl))
            .ok_or_else(|| {
                Status::invalid_argument(format!("the ttl must be at most {MAX_TOKEN_TTL_SECS} s (10 years)"))
            })?;
        let token = new_secret();
        let response = if req.viewer {
            self.create_viewer_token(&op, &req, &token, expires_at).await?
        } else {
            self.create_join_token(&op, &req, &token, expires_at).await?
        };
        Ok(Response::new(CreateTokenResponse { token, expires_unix_us: unix_us(expires_at), ..response }))
    }

    async fn list_tokens(&self, _: Request<ListTokensRequest>) -> Result<Response<ListTokensResponse>, Status> {
        let mut listed = tokens::list(&self.state.pool).await?;
        listed.extend(viewers::list(&self.state.pool).await?);
        listed.sort_by_key(|t| t.created_unix_us);
        Ok(Response::new(ListTokensResponse { tokens: listed }))
    }

    async fn revoke_token(&self, request: Request<RevokeRequest>) -> Result<Response<TokenInfo>, Status> {
        let op = operator(&request)?;
        let req = request.into_inner();
        let id = parse_uuid("token", req.id.trim())?;
        let reason = reason_or_default(&req.reason)?;
        let token = match viewers::revoke(&self.state.pool, id, &reason).await? {
            Some(viewer) => viewer,
            None => tokens::revoke(&self.state.pool, id, &reason).await?,
        };
        let kind = if token.viewer { "viewer" } else { "join" };
        tracing::info!(token = %id, kind, by = %op.name, "token revoked");
        self.audit(&op, "RevokeToken", &id.to_string()).await?;
        Ok(Response::new(token))
    }

    async fn revoke_agent(&self, request: Request<RevokeRequest>) -> Result<Response<AgentInfo>, Status> {
        let op = operator(&request)?;
        let req = request.into_inner();
        let agent = agents::revoke(&self.state.pool, &req.id, &reason_or_default(&req.reason)?).await?;
        self.audit(&op, "RevokeAgent", &agent.id).await?;
        Ok(Response::new(agent))
    }

    async fn list_agents(&self, _: Request<ListAgentsRequest>) -> Result<Response<ListAgentsResponse>, Status> {
        Ok(Response::new(ListAgentsResponse { agents: agents::list(&self.state.pool).await? }))
    }

    async fn approve_agent(&self, request: Request<ApproveAgentRequest>) -> Result<Response<AgentInfo>, Status> {
        let op = operator(&request)?;
        let agent = agents::approve(&self.state.pool, &request.into_inner().agent_id).await?;
        self.audit(&op, "ApproveAgent", &agent.id).await?;
        Ok(Response::new(agent))
    }

    async fn import_workload(
        &self,
        request: Request<Streaming<WorkloadChunk>>,
    ) -> Result<Response<ImportWorkloadResponse>, Status> {
        let op = operator(&request)?;
        let imported = import(&self.state.pool, request.into_inner()).await?;
        self.audit(&op, "ImportWorkload", &imported.workload_id).await?;
        Ok(Response::new(imported))
    }

    async fn list_workloads(
        &self,
        _: Request<ListWorkloadsRequest>,
    ) -> Result<Response<ListWorkloadsResponse>, Status> {
        Ok(Response::new(ListWorkloadsResponse { workloads: workloads::list(&self.state.pool).await? }))
    }

    async fn create_run(&self, request: Request<CreateRunRequest>) -> Result<Response<RunInfo>, Status> {
        let op = operator(&request)?;
        let req = request.into_inner();
        let settings = Settings::from_request(req.concurrency, req.shard_size, req.repetitions, 0, req.params, 0)?
            .with_load(req.load.clone(), req.slo_ttft_s, req.slo_tpot_s)?
            .with_repeats(req.repeat_until_cv, req.max_repeats)?;
        let mut tx = self.state.pool.begin().await.map_err(store::Error::from)?;
        let workload = workloads::find(&mut tx, &req.workload).await?;
        let sample = runs::sample(&mut tx, &workload, req.sample, req.seed, false).await?;
        let placement = runs::Placement::default();
        let run = runs::create(&mut tx, &workload, &req.model, req.seed, &settings, &sample, &placement).await?;
        tx.commit().await.map_err(store::Error::from)?;
        self.audit(&op, "CreateRun", &run.run_id).await?;
        Ok(Response::new(run))
    }

    async fn get_run_status(&self, request: Request<RunStatusRequest>) -> Result<Response<RunStatus>, Status> {
        let run_id = parse_uuid("run", &request.get_ref().run_id)?;
        Ok(Response::new(runs::status(&self.state.pool, run_id).await?))
    }

    async fn list_runs(&self, request: Request<ListRunsRequest>) -> Result<Response<ListRunsResponse>, Status> {
        let req = request.into_inner();
        let statuses = req
            .statuses
            .iter()
            .map(|s| s.parse().map_err(|e| Status::invalid_argument(format!("status: {e}"))))
            .collect::<Result<Vec<RunStatusKind>, _>>()?;
        let some = |s: String| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let filter = run_list::RunFilter {
            statuses,
            workload: some(req.workload),
            model: some(req.model),
            sweep: some(req.sweep_id).map(|s| parse_uuid("sweep", &s)).transpose()?,
            limit: if req.limit == 0 { 50 } else { i64::from(req.limit.min(10_000)) },
        };
        Ok(Response::new(ListRunsResponse { runs: run_list::list(&self.state.pool, &filter).await? }))
    }

    async fn cancel_run(&self, request: Request<CancelRunRequest>) -> Result<Response<CancelRunResponse>, Status> {
        let op = operator(&request)?;
        let run_id = parse_uuid("run", &request.get_ref().run_id)?;
        let mut tx = self.state.pool.begin().await.map_err(store::Error::from)?;
        let cancelled = run_list::cancel(&mut tx, run_id).await?;
        tx.commit().await.map_err(store::Error::from)?;
        self.audit(&op, "CancelRun", &run_id.to_string()).await?;
        tracing::info!(run = %run_id, leases_released = cancelled.leases_released, "run cancelled");
        Ok(Response::new(CancelRunResponse {
            previous_status: cancelled.previous.as_str().into(),
            leases_released: cancelled.leases_released as u32,
            status: Some(runs::status(&self.state.pool, run_id).await?),
        }))
    }

    async fn get_report(&self, request: Request<ReportRequest>) -> Result<Response<Report>, Status> {
        let req = request.into_inner();
        let run_ids = run_ids(&req.run_ids)?;
        let scoring = parse_scoring(&req.scoring_id)?;
        let report = reports::report(&self.state.pool, &run_ids, scoring, req.with_points).await?;
        Ok(Response::new(report.to_wire()))
    }

    type ExportResultsStream = ExportStream;

    async fn export_results(&self, request: Request<ExportRequest>) -> Result<Response<ExportStream>, Status> {
        let req = request.into_inner();
        if req.run_ids.is_empty() {
            return Err(Status::invalid_argument("name at least one run to export"));
        }
        let run_ids = run_ids(&req.run_ids)?;
        let scoring = parse_scoring(&req.scoring_id)?;
        reports::check_exist(&self.state.pool, &run_ids, scoring).await?;
        let total = exports::count(&self.state.pool, &run_ids).await? as u64;
        Ok(Response::new(export_stream(self.state.pool.clone(), run_ids, scoring, total)))
    }

    async fn create_sweep(&self, request: Request<SweepSpec>) -> Result<Response<SweepInfo>, Status> {
        let op = operator(&request)?;
        let spec = request.into_inner();
        let definition = Definition::from_spec(&spec, chrono::Utc::now())?;
        let sweep = sweeps::create(&self.state.pool, &definition).await?;
        self.audit(&op, "CreateSweep", &sweep.definition_id).await?;
        Ok(Response::new(sweep))
    }

    async fn list_sweeps(&self, _: Request<ListSweepsRequest>) -> Result<Response<ListSweepsResponse>, Status> {
        let mut conn = self.state.pool.acquire().await.map_err(store::Error::from)?;
        Ok(Response::new(ListSweepsResponse { sweeps: sweeps::list(&mut conn).await? }))
    }

    async fn get_sweep(&self, request: Request<SweepRequest>) -> Result<Response<SweepInfo>, Status> {
        let id = parse_uuid("sweep", &request.get_ref().sweep_id)?;
        let mut conn = self.state.pool.acquire().await.map_err(store::Error::from)?;
        Ok(Response::new(sweeps::info(&mut conn, id).await?))
    }

    async fn set_sweep_status(&self, request: Request<SweepStatusRequest>) -> Result<Response<SweepInfo>, Status> {
        let op = operator(&request)?;
        let req = request.into_inner();
        let id = parse_uuid("sweep", &req.sweep_id)?;
        let status: SweepStatus = req.status.parse().map_err(|e| Invalid(format!("{e}")))?;
        let mut tx = self.state.pool.begin().await.map_err(store::Error::from)?;
        sweeps::set_status(&mut tx, id, status).await?;
        let info = sweeps::info(&mut tx, id).await?;
        tx.commit().await.map_err(store::Error::from)?;
        self.audit(&op, &format!("SetSweepStatus {status}"), &id.to_string()).await?;
        Ok(Response::new(info))
    }

    async fn score_run(&self, request: Request<ScoreRunRequest>) -> Result<Response<ScoreRunResponse>, Status> {
        let op = operator(&request)?;
        let req = request.into_inner();
        let run_id = parse_uuid("run", &req.run_id)?;
        let judge = judge(&req)?;
        if req.judge_all && judge.is_none() {
            return Err(Status::invalid_argument("judging every query needs a judge (an endpoint URL and a model)"));
        }
        let s = rescore::score_run(&self.state.pool, run_id, judge.as_ref(), req.judge_all).await?;
        tracing::info!(run = %run_id, scoring = %s.scoring_id, scored = s.scored, failed = s.failed, "run scored");
        self.audit(&op, "ScoreRun", &run_id.to_string()).await?;
        Ok(Response::new(ScoreRunResponse {
            scoring_id: s.scoring_id.to_string(),
            scored: s.scored,
            correct: s.correct,
            failed: s.failed,
            judge_version: s.judge_version.unwrap_or_default(),
            failures: s.failures,
        }))
    }

    async fn create_admin_token(
        &self,
        request: Request<CreateAdminTokenRequest>,
    ) -> Result<Response<CreateAdminTokenResponse>, Status> {
        let op = operator(&request)?;
        let name = request.into_inner().name.trim().to_owned();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(Status::invalid_argument("an admin credential needs a name of 1 to 100 printable bytes"));
        }
        let token = new_secret();
        admin::create(&self.state.pool, &name, &hash_secret(&token), &op.name).await?;
        self.audit(&op, "CreateAdminToken", &name).await?;
        Ok(Response::new(CreateAdminTokenResponse { name, token }))
    }

    async fn list_admin_tokens(
        &self,
        _: Request<ListAdminTokensRequest>,
    ) -> Result<Response<ListAdminTokensResponse>, Status> {
        let tokens = admin::list(&self.state.pool).await?.into_iter().map(admin_token_info).collect();
        Ok(Response::new(ListAdminTokensResponse { tokens }))
    }

    async fn revoke_admin_token(
        &self,
        request: Request<RevokeAdminTokenRequest>,
    ) -> Result<Response<AdminTokenInfo>, Status> {
        let op = operator(&request)?;
        let req = request.into_inner();
        let row = admin::revoke(&self.state.pool, req.name.trim(), &reason_or_default(&req.reason)?).await?;
        self.audit(&op, "RevokeAdminToken", &row.name).await?;
        Ok(Response::new(admin_token_info(row)))
    }

    async fn set_price(&self, request: Request<PriceSpec>) -> Result<Response<PriceList>, Status> {
        let op = operator(&request)?;
        let price = parse::price(request.into_inner())?;
        let mut tx = self.state.pool.begin().await.map_err(store::Error::from)?;
        prices::set_price(&mut tx, &price).await?;
        tx.commit().await.map_err(store::Error::from)?;
        self.audit(&op, "SetPrice", &price.model).await?;
        Ok(Response::new(parse::price_list(prices::list(&self.state.pool).await?)))
    }

    async fn import_prices(&self, request: Request<ImportPricesRequest>) -> Result<Response<PriceList>, Status> {
        let op = operator(&request)?;
        let rows = parse::prices_csv(&request.into_inner().csv)?;
        let mut tx = self.state.pool.begin().await.map_err(store::Error::from)?;
        for (line, price) in &rows {
            prices::set_price(&mut tx, price).await.map_err(|e| prefixed(&format!("line {line}"), e.into()))?;
        }
        tx.commit().await.map_err(store::Error::from)?;
        self.audit(&op, "ImportPrices", &format!("{} prices", rows.len())).await?;
        Ok(Response::new(parse::price_list(prices::list(&self.state.pool).await?)))
    }

    async fn list_prices(&self, _: Request<ListPricesRequest>) -> Result<Response<PriceList>, Status> {
        Ok(Response::new(parse::price_list(prices::list(&self.state.pool).await?)))
    }

    async fn set_electricity_price(
        &self,
        request: Request<ElectricityPriceSpec>,
    ) -> Result<Response<PriceList>, Status> {
        let op = operator(&request)?;
        let price = parse::electricity(request.into_inner())?;
        let mut tx = self.state.pool.begin().await.map_err(store::Error::from)?;
        prices::set_electricity_price(&mut tx, &price).await?;
        tx.commit().await.map_err(store::Error::from)?;
        self.audit(&op, "SetElectricityPrice", &format!("{} {}/kWh", price.per_kwh, price.currency)).await?;
        Ok(Response::new(parse::price_list(prices::list(&self.state.pool).await?)))
    }

    async fn import_weights(
        &self,
        request: Request<ImportWeightsRequest>,
    ) -> Result<Response<ImportWeightsResponse>, Status> {
        let op = operator(&request)?;
        let req = request.into_inner();
        let weights = pricing::parse_weights_csv(&req.csv)?;
        let mut tx = self.state.pool.begin().await.map_err(store::Error::from)?;
        prices::import_weights(&mut tx, &req.name, &req.source, &weights).await?;
        tx.commit().await.map_err(store::Error::from)?;
        self.audit(&op, "ImportWeights", &req.name).await?;
        Ok(Response::new(ImportWeightsResponse { categories: weights.len() as u32 }))
    }

    async fn analyze(&self, request: Request<AnalysisRequest>) -> Result<Response<AnalysisTable>, Status> {
        use analysis_request::Kind;
        let pool = &self.state.pool;
        let table = match request.into_inner().kind {
            Some(Kind::Leaderboard(q)) => research::leaderboard(pool, &run_ids(&q.run_ids)?).await?,
            Some(Kind::Sources(q)) => research::sources(pool, &run_ids(&q.run_ids)?).await?,
            Some(Kind::Routing(q)) => research::routing(pool, &parse::routing(q)?).await?,
            Some(Kind::Weighted(q)) => research::weighted(pool, &q.weights).await?,
            Some(Kind::Capacity(_)) => research::capacity(pool).await?,
            None => {
                return Err(Status::invalid_argument(
                    "say which analysis: leaderboard, routing, weighted, capacity or sources",
                ));
            }
        };
        Ok(Response::new(table.to_wire()))
    }
}

fn admin_token_info(r: admin::CredentialRow) -> AdminTokenInfo {
    AdminTokenInfo {
        name: r.name,
        created_unix_us: unix_us(r.created_at),
        created_by: r.created_by.unwrap_or_default(),
        revoked_unix_us: r.revoked_at.map(unix_us).unwrap_or(0),
        revoked_reason: r.revoked_reason.unwrap_or_default(),
    }
}

/// The judge a scoring request names, if any.
fn judge(req: &ScoreRunRequest) -> Result<Option<Judge>, Status> {
    let (url, model) = match (req.judge_url.trim(), req.judge_model.trim()) {
        ("", "") => return Ok(None),
        ("", _) | (_, "") => return Err(Status::invalid_argument("a judge needs both an endpoint URL and a model")),
        (url, model) => (url, model),
    };
    let strictness = match req.strictness.as_str() {
        "" => Strictness::Strict,
        s => s.parse().map_err(|e| Invalid(format!("{e}")))?,
    };
    let config = JudgeConfig {
        url: url.to_owned(),
        model: model.to_owned(),
        strictness,
        concurrency: req.judge_concurrency.clamp(1, 64) as usize,
        max_attempts: 3,
        timeout: std::time::Duration::from_secs(120),
    };
    Judge::new(config).map(Some).map_err(|e| Status::internal(e.to_string()))
}

/// Imports a streamed workload in one transaction: any error drops it, rolling back. A task
/// of its own parses the stream while this one loads what it parsed, so PostgreSQL and the
/// parser work at the same time.
async fn import(pool: &sqlx::PgPool, mut stream: Streaming<WorkloadChunk>) -> Result<ImportWorkloadResponse, Status> {
    let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty import stream"))?;
    let name = first.name.trim().to_owned();
    if name.is_empty() || name.len() > 200 {
        return Err(Status::invalid_argument("workload name must be 1 to 200 bytes"));
    }
    let nothing = "; nothing was imported";
    let mut tx = pool.begin().await.map_err(store::Error::from)?;
    let workload_id = workloads::begin_import(&mut tx, &name, &first.source, nothing).await?;
    let mut copy = workloads::QueryCopy::begin(&mut tx).await?;
    let (rows_tx, mut rows) = tokio::sync::mpsc::channel(4);
    let parsing = tokio::spawn(parse_stream(first, stream, workload_id, rows_tx));
    while let Some(encoded) = rows.recv().await {
        if let Err(e) = copy.send(&encoded).await {
            parsing.abort();
            return Err(e.into());
        }
    }
    let parser = match parsing.await {
        Ok(Ok(parser)) => parser,
        Ok(Err(e)) => {
            copy.abort(e.message()).await;
            return Err(e);
        }
        Err(e) => return Err(Status::internal(format!("the import's parser failed: {e}{nothing}"))),
    };
    copy.finish().await?;
    let (Some(format), n @ 1..) = (parser.format(), parser.count()) else {
        return Err(Status::invalid_argument(format!("the file has no queries{nothing}")));
    };
    workloads::finish_import(&mut tx, workload_id, format, n as i32).await?;
    tx.commit().await.map_err(store::Error::from)?;
    tracing::info!(workload = %name, queries = n, format = format.as_str(), "workload imported");
    Ok(ImportWorkloadResponse {
        workload_id: workload_id.to_string(),
        name,
        format: format.as_str().into(),
        queries: n as u64,
    })
}

/// Parses every chunk of the stream, from `first` to the one marked last, into binary `COPY`
/// rows sent on in buffers of about a megabyte; returns the parser, which knows the format and
/// the count.
async fn parse_stream(
    first: WorkloadChunk,
    mut stream: Streaming<WorkloadChunk>,
    workload_id: Uuid,
    rows: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Result<Parser, Status> {
    let nothing = "; nothing was imported";
    let mut parser = import_parser(&first).map_err(|e| Status::invalid_argument(format!("{e}{nothing}")))?;
    let fresh = || Vec::with_capacity(workloads::COPY_CHUNK_BYTES + (64 << 10));
    let mut buf = fresh();
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
            if let Some(q) = parsed {
                workloads::encode_query(&mut buf, workload_id, &q);
            }
        }
        if buf.len() >= workloads::COPY_CHUNK_BYTES && rows.send(std::mem::replace(&mut buf, fresh())).await.is_err() {
            return Err(Status::aborted(format!("the import stopped{nothing}")));
        }
        chunk = stream
            .message()
            .await
            .map_err(|s| Status::aborted(format!("import stream broke off ({}){nothing}", s.message())))?;
    }
    if !saw_last {
        return Err(Status::aborted(format!("import stream ended before its last chunk{nothing}")));
    }
    if !buf.is_empty() {
        let _ = rows.send(buf).await;
    }
    Ok(parser)
}

/// The parser an import's first chunk asks for: its field map, and what its numbers count.
fn import_parser(first: &WorkloadChunk) -> Result<Parser, crate::domain::Invalid> {
    let map = match first.field_map.is_empty() {
        true => None,
        false => Some(FieldMap::from_pairs(first.field_map.iter().map(|(t, f)| (t.clone(), f.clone())))?),
    };
    Ok(Parser::with(map, Unit::parse(&first.unit)?))
}

/// A scoring named in a request; empty means each run's latest.
fn parse_scoring(id: &str) -> Result<Option<Uuid>, Status> {
    match id.trim() {
        "" => Ok(None),
        id => parse_uuid("scoring", id).map(Some),
    }
}

/// The chunks of an export, as they are read.
type ExportStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<ExportChunk, Status>> + Send>>;

/// Reads the rows in a task of their own and passes them on as chunks, the total in the first;
/// a database error ends the stream with that error, so a file is never silently short.
fn export_stream(pool: sqlx::PgPool, run_ids: Vec<Uuid>, scoring: Option<Uuid>, total: u64) -> ExportStream {
    let (out, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let (rows_tx, mut rows) = tokio::sync::mpsc::channel(4);
        let reader = tokio::spawn(async move { exports::rows(&pool, &run_ids, scoring, rows_tx).await });
        let mut sent = false;
        while let Some(rows_json) = rows.recv().await {
            let total_rows = if sent { 0 } else { total };
            if out.send(Ok(ExportChunk { total_rows, rows_json })).await.is_err() {
                return;
            }
            sent = true;
        }
        let outcome = match reader.await {
            Ok(Ok(())) if sent => return,
            Ok(Ok(())) => Ok(ExportChunk { total_rows: total, rows_json: Vec::new() }),
            Ok(Err(e)) => Err(Status::from(e)),
            Err(e) => Err(Status::internal(format!("the export failed: {e}"))),
        };
        let _ = out.send(outcome).await;
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Why something was revoked: what the operator said, or "revoked by an operator".
fn reason_or_default(reason: &str) -> Result<String, Status> {
    let reason = reason.trim();
    let limit = crate::domain::results::MAX_SHORT_TEXT_BYTES;
    if reason.len() > limit {
        return Err(Status::invalid_argument(format!("the reason is longer than {limit} bytes")));
    }
    Ok(if reason.is_empty() { "revoked by an operator".to_owned() } else { reason.to_owned() })
}

/// Run ids as a request gives them, each checked.
fn run_ids(given: &[String]) -> Result<Vec<Uuid>, Status> {
    given.iter().map(|r| parse_uuid("run", r)).collect()
}
