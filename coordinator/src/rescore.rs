//! `ipw score RUN`: scoring as a separate, re-runnable stage.
//!
//! Each call makes a new scoring of every result of the run and keeps the earlier ones. The
//! scoring becomes visible to the views only when it completes, so a half-done scoring is
//! never what a paper reads.

use crate::prompt;
use crate::scores::{self, ScoreRow};
use crate::scoring::Scorer;
use crate::scoring::judge::{Judge, prompt_hash};
use futures::StreamExt;
use uuid::Uuid;

/// Results scored per page.
const PAGE: i64 = 1000;
/// Failures listed back to the operator.
const MAX_REPORTED_FAILURES: usize = 10;

/// What a scoring did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The new scoring.
    pub scoring_id: Uuid,
    /// Results given a verdict.
    pub scored: u64,
    /// Of those, correct.
    pub correct: u64,
    /// Results left unscored because judging failed.
    pub failed: u64,
    /// What the judge endpoint reported about itself.
    pub judge_version: Option<String>,
    /// The first failures.
    pub failures: Vec<String>,
}

/// Why a scoring could not run.
#[derive(Debug, thiserror::Error)]
pub enum RescoreError {
    /// No such run.
    #[error("no run {0}")]
    NoRun(Uuid),
    /// The judge endpoint did not answer at the start.
    #[error("{0}")]
    Judge(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

struct Item {
    result_id: i64,
    response: String,
    prompt: String,
    choices: Option<Vec<String>>,
    category: Option<String>,
    scorer: Scorer,
    answer: String,
    tolerance: Option<f64>,
}

/// Scores every result of `run_id` again. With a judge, queries whose scorer is `judge` (or
/// every query, with `judge_all`) are judged; the rest use their builtin scorer.
pub async fn score_run(
    pool: &sqlx::PgPool,
    run_id: Uuid,
    judge: Option<&Judge>,
    judge_all: bool,
) -> Result<Summary, RescoreError> {
    let exists = sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM runs WHERE id = $1) AS "e!""#, run_id)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Err(RescoreError::NoRun(run_id));
    }
    let judge_version = match judge {
        Some(j) => Some(j.endpoint_version().await.map_err(RescoreError::Judge)?),
        None => None,
    };
    let scoring_id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO scorings (id, run_id, kind, judge_model, judge_endpoint, judge_version, judge_prompt_hash,
                               judge_strictness, judge_all)
         VALUES ($1, $2, 'rescore', $3, $4, $5, $6, $7, $8)",
        scoring_id,
        run_id,
        judge.map(|j| j.config().model.clone()),
        judge.map(|j| j.config().url.clone()),
        judge_version,
        judge.map(|_| prompt_hash()),
        judge.map(|j| j.config().strictness.as_str()),
        judge_all && judge.is_some(),
    )
    .execute(pool)
    .await?;

    let mut summary = Summary { scoring_id, judge_version: judge_version.clone(), ..Summary::default() };
    let mut after = 0i64;
    loop {
        let page: Vec<Item> = sqlx::query!(
            "SELECT r.id, r.response, q.prompt, q.choices, q.category, q.scorer, q.answer, q.tolerance
             FROM results r JOIN queries q ON q.id = r.query_id
             WHERE r.run_id = $1 AND r.id > $2 AND r.error IS NULL
             ORDER BY r.id LIMIT $3",
            run_id,
            after,
            PAGE
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| Item {
            result_id: r.id,
            response: r.response,
            prompt: r.prompt,
            choices: r.choices.and_then(|c| serde_json::from_value(c).ok()),
            category: r.category,
            scorer: Scorer::parse(&r.scorer).expect("queries.scorer is constrained to known scorers"),
            answer: r.answer,
            tolerance: r.tolerance,
        })
        .collect();
        let Some(last) = page.last() else { break };
        after = last.result_id;
        let concurrency = judge.map(|j| j.config().concurrency.max(1)).unwrap_or(1);
        let rows: Vec<ScoreRow> = futures::stream::iter(page)
            .map(|item| score_one(item, scoring_id, judge, judge_all))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for r in &rows {
            match (r.correct, &r.error) {
                (Some(c), _) => {
                    summary.scored += 1;
                    summary.correct += u64::from(c);
                }
                (None, error) => {
                    summary.failed += 1;
                    if summary.failures.len() < MAX_REPORTED_FAILURES {
                        summary.failures.push(format!("result {}: {}", r.result_id, error.clone().unwrap_or_default()));
                    }
                }
            }
        }
        scores::insert(&mut *pool.acquire().await?, &rows).await?;
    }
    sqlx::query!(
        "UPDATE scorings SET completed_at = now(), scored = $2, failed = $3 WHERE id = $1",
        scoring_id,
        summary.scored as i32,
        summary.failed as i32
    )
    .execute(pool)
    .await?;
    Ok(summary)
}

async fn score_one(item: Item, scoring_id: Uuid, judge: Option<&Judge>, judge_all: bool) -> ScoreRow {
    let wants_judge = item.scorer == Scorer::Judge || (judge_all && judge.is_some());
    let mut row = ScoreRow {
        scoring_id,
        result_id: item.result_id,
        scorer: if wants_judge { Scorer::Judge.as_str() } else { item.scorer.as_str() },
        extracted: None,
        correct: None,
        verdict: None,
        error: None,
    };
    if !wants_judge {
        let score =
            item.scorer.score(&item.response, &item.answer, item.tolerance).expect("builtin scorers always score");
        row.extracted = score.extracted;
        row.correct = Some(score.correct);
        return row;
    }
    let Some(judge) = judge else {
        row.error = Some("this query needs a judge: ipw score RUN --judge-url URL --judge-model MODEL".into());
        return row;
    };
    // The judge sees the question as the model did, and a letter answer with its option text.
    let question = prompt::render(&item.prompt, item.choices.as_deref(), item.category.as_deref())
        .pop()
        .map(|m| m.content)
        .unwrap_or_default();
    let reference = match (&item.choices, item.answer.as_bytes()) {
        (Some(choices), [letter]) => prompt::CHOICE_LETTERS
            .iter()
            .position(|l| l == letter)
            .and_then(|i| choices.get(i))
            .map(|text| format!("({}) {text}", item.answer))
            .unwrap_or_else(|| item.answer.clone()),
        _ => item.answer.clone(),
    };
    match judge.judge(&question, &reference, &item.response).await {
        Ok(v) => {
            row.correct = Some(v.correct);
            row.verdict = Some(v.raw);
        }
        Err(e) => row.error = Some(e),
    }
    row
}
