//! `ipw score RUN`: scoring as a separate, re-runnable stage.
//!
//! Each call makes a new scoring of every result of the run and keeps the earlier ones. The
//! scoring becomes visible to the views only when it completes, so a half-done scoring is
//! never what a paper reads.

use crate::domain::prompt;
use crate::domain::scoring::Scorer;
use crate::domain::scoring::judge::{Judge, JudgeError, prompt_hash};
use crate::store::results::{self, NewScoring, ScoreRow, ToScore as Item};
use crate::store::{self, runs};
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

impl Summary {
    /// Counts one scored (or failed) row.
    fn count(&mut self, r: &ScoreRow) {
        match r.correct {
            Some(c) => {
                self.scored += 1;
                self.correct += u64::from(c);
            }
            None => {
                self.failed += 1;
                if self.failures.len() < MAX_REPORTED_FAILURES {
                    self.failures.push(format!("result {}: {}", r.result_id, r.error.clone().unwrap_or_default()));
                }
            }
        }
    }
}

/// Why a scoring could not run.
#[derive(Debug, thiserror::Error)]
pub enum RescoreError {
    /// The judge endpoint did not answer at the start.
    #[error(transparent)]
    Judge(#[from] JudgeError),
    /// No such run, or the database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Scores every result of `run_id` again. With a judge, queries whose scorer is `judge` (or
/// every query, with `judge_all`) are judged; the rest use their builtin scorer.
pub async fn score_run(
    pool: &sqlx::PgPool,
    run_id: Uuid,
    judge: Option<&Judge>,
    judge_all: bool,
) -> Result<Summary, RescoreError> {
    if !runs::exists(&mut *pool.acquire().await.map_err(store::Error::from)?, run_id).await? {
        return Err(store::Error::NotFound(format!("no run {run_id}")).into());
    }
    let judge_version = match judge {
        Some(j) => Some(j.endpoint_version().await?),
        None => None,
    };
    let scoring = NewScoring {
        run_id,
        judge_model: judge.map(|j| j.config().model.clone()),
        judge_endpoint: judge.map(|j| j.config().url.clone()),
        judge_version: judge_version.clone(),
        judge_prompt_hash: judge.map(|_| prompt_hash()),
        judge_strictness: judge.map(|j| j.config().strictness),
        judge_all: judge_all && judge.is_some(),
    };
    let scoring_id = results::new_scoring(pool, &scoring).await?;
    let mut summary = Summary { scoring_id, judge_version, ..Summary::default() };
    let concurrency = judge.map(|j| j.config().concurrency.max(1)).unwrap_or(1);
    let mut after = 0i64;
    loop {
        let page = results::to_score(pool, run_id, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.result_id;
        let rows: Vec<ScoreRow> = futures::stream::iter(page)
            .map(|item| score_one(item, scoring_id, judge, judge_all))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        rows.iter().for_each(|r| summary.count(r));
        results::insert_scores(&mut *pool.acquire().await.map_err(store::Error::from)?, &rows).await?;
    }
    results::finish_scoring(pool, scoring_id, summary.scored, summary.failed).await?;
    Ok(summary)
}

async fn score_one(item: Item, scoring_id: Uuid, judge: Option<&Judge>, judge_all: bool) -> ScoreRow {
    let wants_judge = item.scorer == Scorer::Judge || (judge_all && judge.is_some());
    let mut row = ScoreRow {
        scoring_id,
        result_id: item.result_id,
        scorer: if wants_judge { Scorer::Judge } else { item.scorer },
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
        row.error = Some("this query needs a judge: score the run again with a judge endpoint and model".into());
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
        Err(e) => row.error = Some(e.to_string()),
    }
    row
}
