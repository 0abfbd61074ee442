//! Workload imports are all or nothing, and a bad line (or Parquet row) is named; chat
//! workloads reach the engine as imported.

use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field};
use ipw_agent::runner;
use ipw_coordinator::cli::workloads::import_workload_mapped;
use ipw_coordinator::domain::workload::FieldMap;
use ipw_e2e::Fleet;
use ipw_proto::v1::{WorkloadChunk, WorkloadLine};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

async fn counts(fleet: &Fleet) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as("SELECT (SELECT count(*) FROM workloads), (SELECT count(*) FROM queries)")
        .fetch_one(&fleet.pool)
        .await?)
}

#[tokio::test]
async fn one_malformed_line_imports_nothing_and_is_named() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    // 2,500 good MMLU-Pro lines (more than one insert batch), then a broken one.
    let text = std::fs::read_to_string(ipw_e2e::mmlu_pro())?;
    let mut lines: Vec<&str> = text.lines().take(2500).collect();
    lines.push(r#"{"question_id": 999999, "question": "Q", "options": ["a", "b"], "answer": "Z"}"#);
    let file = fleet.dir.path().join("bad.jsonl");
    std::fs::write(&file, lines.join("\n"))?;

    let e = format!("{:#}", fleet.import(&file, "bad").await.unwrap_err());
    assert!(e.contains("line 2501"), "{e}");
    assert!(e.contains("answer \"Z\" is not one of the option letters A-B"), "{e}");
    assert!(e.contains("nothing was imported"), "{e}");
    assert_eq!(counts(&fleet).await?, (0, 0));
    Ok(())
}

#[tokio::test]
async fn invalid_utf8_is_named_by_line_and_imports_nothing() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let file = fleet.dir.path().join("latin1.jsonl");
    let mut bytes = b"{\"id\": \"1\", \"prompt\": \"ok\", \"answer\": \"a\"}\n".to_vec();
    bytes.extend_from_slice(b"{\"id\": \"2\", \"prompt\": \"caf\xe9\", \"answer\": \"b\"}\n");
    std::fs::write(&file, bytes)?;
    let e = format!("{:#}", fleet.import(&file, "latin1").await.unwrap_err());
    assert!(e.contains("line 2: not valid UTF-8"), "{e}");
    assert_eq!(counts(&fleet).await?, (0, 0));
    Ok(())
}

#[tokio::test]
async fn a_stream_cut_before_its_last_chunk_commits_nothing() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let chunk = WorkloadChunk {
        name: "cut".into(),
        source: "test".into(),
        lines: vec![WorkloadLine { line_no: 1, text: r#"{"id": "1", "prompt": "p", "answer": "a"}"#.into() }],
        ..Default::default()
    };
    let e = fleet.admin.import_workload(tokio_stream::iter(vec![chunk])).await.unwrap_err();
    assert!(e.message().contains("ended before its last chunk"), "{}", e.message());
    assert_eq!(counts(&fleet).await?, (0, 0));
    Ok(())
}

#[tokio::test]
async fn generic_workloads_import_and_names_are_unique() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let file = fleet.dir.path().join("generic.jsonl");
    std::fs::write(
        &file,
        "{\"id\": \"a\", \"prompt\": \"Capital of France?\", \"answer\": \"Paris\"}\n\n\
         {\"id\": 2, \"prompt\": \"Pick\", \"answer\": \"B\", \"choices\": [\"x\", \"y\"], \"category\": \"toy\"}\n",
    )?;
    assert_eq!(fleet.import(&file, "generic").await?, 2);
    let scorers: Vec<(String, String)> =
        sqlx::query_as("SELECT external_id, scorer FROM queries ORDER BY line_no").fetch_all(&fleet.pool).await?;
    assert_eq!(scorers, [("a".to_owned(), "exact".to_owned()), ("2".to_owned(), "mcq".to_owned())]);

    let e = format!("{:#}", fleet.import(&file, "generic").await.unwrap_err());
    assert!(e.contains("a workload named \"generic\" already exists"), "{e}");
    assert_eq!(counts(&fleet).await?, (1, 2));

    let empty = fleet.dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n\n")?;
    let e = format!("{:#}", fleet.import(&empty, "empty").await.unwrap_err());
    assert!(e.contains("no queries"), "{e}");
    assert_eq!(counts(&fleet).await?, (1, 2));
    Ok(())
}

/// A query as stored: id, prompt, messages, choices, answer, category, scorer, max_tokens.
type Stored = (String, String, Option<Value>, Option<Value>, String, Option<String>, String, Option<i32>);

async fn stored(fleet: &Fleet, workload: &str) -> anyhow::Result<(String, Vec<Stored>)> {
    let format = sqlx::query_scalar("SELECT format FROM workloads WHERE name = $1")
        .bind(workload)
        .fetch_one(&fleet.pool)
        .await?;
    let rows = sqlx::query_as(
        "SELECT q.external_id, q.prompt, q.messages, q.choices, q.answer, q.category, q.scorer, q.max_tokens
         FROM queries q JOIN workloads w ON w.id = q.workload_id WHERE w.name = $1 ORDER BY q.line_no",
    )
    .bind(workload)
    .fetch_all(&fleet.pool)
    .await?;
    Ok((format, rows))
}

/// Imports `file` through the CLI's code path with the field map `map`.
async fn import_mapped(fleet: &mut Fleet, file: &Path, name: &str, map: &str) -> anyhow::Result<u64> {
    Ok(import_workload_mapped(&mut fleet.admin, file, name, &FieldMap::parse(map)?).await?.queries)
}

const MULTI_TURN: &str = r#"[{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Name three colours of the rainbow, please."}, {"role": "assistant", "content": "Red, orange and yellow are three of the colours of the rainbow."}, {"role": "user", "content": "Write a long story about a cat."}]"#;

#[tokio::test]
async fn chat_workloads_keep_their_messages_and_budgets_and_a_bad_line_imports_nothing() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let file = fleet.dir.path().join("chat.jsonl");
    let lines = [
        format!(r#"{{"id": "multi", "messages": {MULTI_TURN}, "answer": "x", "max_tokens": 4, "category": "story"}}"#),
        r#"{"messages": [{"role": "user", "content": "Pick one"}], "answer": "B", "choices": ["x", "y"]}"#.to_owned(),
    ];
    std::fs::write(&file, lines.join("\n"))?;
    assert_eq!(fleet.import(&file, "chat").await?, 2);
    let (format, rows) = stored(&fleet, "chat").await?;
    assert_eq!(format, "chat");
    let multi: Value = serde_json::from_str(MULTI_TURN)?;
    let story = "Write a long story about a cat.".to_owned();
    assert_eq!(
        rows[0],
        ("multi".into(), story, Some(multi), None, "x".into(), Some("story".into()), "exact".into(), Some(4))
    );
    let pick = json!([{"role": "user", "content": "Pick one"}]);
    let choices = Some(json!(["x", "y"]));
    assert_eq!(rows[1], ("2".into(), "Pick one".into(), Some(pick), choices, "B".into(), None, "mcq".into(), None));

    // A budget that is not a positive integer, on line 3 after two good lines.
    let bad = fleet.dir.path().join("bad-chat.jsonl");
    let budget = r#"{"messages": [{"role": "user", "content": "q"}], "answer": "a", "max_tokens": 0}"#;
    std::fs::write(&bad, [lines[0].as_str(), lines[1].as_str(), budget].join("\n"))?;
    let e = format!("{:#}", fleet.import(&bad, "bad-chat").await.unwrap_err());
    assert!(e.contains("line 3: `max_tokens` must be a positive integer"), "{e}");
    assert!(e.contains("nothing was imported"), "{e}");
    // A conversation that ends with the assistant.
    let ends =
        r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "a"}"#;
    std::fs::write(&bad, [lines[0].as_str(), ends].join("\n"))?;
    let e = format!("{:#}", fleet.import(&bad, "bad-chat").await.unwrap_err());
    assert!(e.contains("line 2: the last message is the assistant's"), "{e}");
    assert_eq!(counts(&fleet).await?, (1, 2));
    Ok(())
}

#[tokio::test]
async fn jsonl_of_any_shape_imports_through_a_field_map_and_a_missing_field_is_named() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let file = fleet.dir.path().join("shaped.jsonl");
    let lines = [
        r#"{"qid": 11, "question": "Which?", "gold": "A", "subject": "toy", "options": ["x", "y"], "mt": 16, "note": 1}"#,
        r#"{"qid": 12, "question": "2+2?", "gold": 4, "subject": null, "options": null, "mt": null}"#,
    ];
    std::fs::write(&file, lines.join("\n"))?;
    let map = "prompt=question,answer=gold,category=subject,choices=options,id=qid,max_tokens=mt";
    assert_eq!(import_mapped(&mut fleet, &file, "shaped", map).await?, 2);
    let (format, rows) = stored(&fleet, "shaped").await?;
    assert_eq!(format, "generic");
    let choices = Some(json!(["x", "y"]));
    let toy = Some("toy".to_owned());
    assert_eq!(rows[0], ("11".into(), "Which?".into(), None, choices, "A".into(), toy, "mcq".into(), Some(16)));
    assert_eq!(rows[1], ("12".into(), "2+2?".into(), None, None, "4".into(), None, "exact".into(), None));

    // The third line lacks the field mapped to answer.
    let bad = fleet.dir.path().join("bad-shaped.jsonl");
    let third = r#"{"qid": 13, "question": "Q", "subject": "s", "options": null, "mt": null}"#;
    std::fs::write(&bad, [lines[0], lines[1], third].join("\n"))?;
    let e = format!("{:#}", import_mapped(&mut fleet, &bad, "bad-shaped", map).await.unwrap_err());
    assert!(e.contains("line 3: no field \"gold\" (mapped to answer)"), "{e}");
    assert!(e.contains("nothing was imported"), "{e}");
    let e = format!(
        "{:#}",
        import_mapped(&mut fleet, &file, "bad-shaped", "prompt=question,gold=answer").await.unwrap_err()
    );
    assert!(e.contains("unknown target \"gold\""), "{e}");
    assert_eq!(counts(&fleet).await?, (1, 2));
    Ok(())
}

/// Writes one row group of these columns.
fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) -> anyhow::Result<()> {
    let batch = RecordBatch::try_from_iter(columns)?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path)?, batch.schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

fn string_lists(rows: &[&[&str]]) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for s in *row {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// A list<struct<role, content>> column.
fn conversations(rows: &[&[(&str, &str)]]) -> ArrayRef {
    let fields = vec![Field::new("role", DataType::Utf8, false), Field::new("content", DataType::Utf8, false)];
    let mut b = ListBuilder::new(StructBuilder::from_fields(fields, 0));
    for row in rows {
        for (role, content) in *row {
            let turn = b.values();
            turn.field_builder::<StringBuilder>(0).expect("role").append_value(role);
            turn.field_builder::<StringBuilder>(1).expect("content").append_value(content);
            turn.append(true);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

#[tokio::test]
async fn parquet_files_import_row_by_row_and_a_bad_row_is_named() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let file = fleet.dir.path().join("questions.parquet");
    write_parquet(
        &file,
        vec![
            ("qid", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            ("question", Arc::new(StringArray::from(vec!["Which?", "Pick", "Capital of France?"]))),
            ("gold", Arc::new(StringArray::from(vec!["B", "A", "Paris"]))),
            ("options", string_lists(&[&["x", "y"], &["p", "q", "r"], &[]])),
            ("mt", Arc::new(Int64Array::from(vec![None, Some(8), None]))),
        ],
    )?;
    // An empty list of options is not "no options": the third row maps none.
    let e = format!(
        "{:#}",
        import_mapped(&mut fleet, &file, "pq", "prompt=question,answer=gold,choices=options,id=qid,max_tokens=mt")
            .await
            .unwrap_err()
    );
    assert!(e.contains("row 3: 0 options"), "{e}");
    assert!(e.contains("nothing was imported"), "{e}");
    assert_eq!(counts(&fleet).await?, (0, 0));
    let map = "prompt=question,answer=gold,id=qid,max_tokens=mt";
    assert_eq!(import_mapped(&mut fleet, &file, "pq", map).await?, 3);
    let (format, rows) = stored(&fleet, "pq").await?;
    assert_eq!(format, "generic");
    assert_eq!(rows[1], ("2".into(), "Pick".into(), None, None, "A".into(), None, "exact".into(), Some(8)));
    assert_eq!(rows[2].1, "Capital of France?");

    // Chat rows: a list of {role, content} structs mapped to messages; the second row's
    // conversation ends with the assistant.
    let chat = fleet.dir.path().join("chat.parquet");
    let turns: [&[(&str, &str)]; 2] =
        [&[("system", "Be brief."), ("user", "Hi")], &[("user", "Hi"), ("assistant", "Hello")]];
    let columns = |turns: &[&[(&str, &str)]]| {
        vec![
            ("conversation", conversations(turns)),
            ("reference", Arc::new(StringArray::from(vec!["a"; turns.len()])) as ArrayRef),
        ]
    };
    write_parquet(&chat, columns(&turns))?;
    let map = "messages=conversation,answer=reference";
    let e = format!("{:#}", import_mapped(&mut fleet, &chat, "pq-chat", map).await.unwrap_err());
    assert!(e.contains("row 2: the last message is the assistant's"), "{e}");
    assert_eq!(counts(&fleet).await?, (1, 3));
    write_parquet(&chat, columns(&turns[..1]))?;
    assert_eq!(import_mapped(&mut fleet, &chat, "pq-chat", map).await?, 1);
    let (format, rows) = stored(&fleet, "pq-chat").await?;
    assert_eq!(format, "chat");
    let sent = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]);
    assert_eq!(rows[0], ("1".into(), "Hi".into(), Some(sent), None, "a".into(), None, "exact".into(), None));
    Ok(())
}

/// A chat workload on the real engine: the multi-turn query's whole conversation reaches it
/// (more prompt tokens than the same last message alone) and so does its own budget of 4
/// tokens, while the other query runs under the run's 32.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chat_run_sends_each_querys_messages_and_budget_to_the_engine() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let single = r#"[{"role": "user", "content": "Write a long story about a cat."}]"#;
    let lines = [
        format!(r#"{{"id": "multi", "messages": {MULTI_TURN}, "answer": "x", "max_tokens": 4}}"#),
        format!(r#"{{"id": "single", "messages": {single}, "answer": "x"}}"#),
    ];
    fleet.import_lines("chat", &lines.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "chat").await?;
    let run = fleet.create_run("chat", 2, 2, 1, 32).await?;
    assert_eq!(runner::run(&agent, &fleet.spool("chat"), &fleet.run_options()).await?.committed, 2);

    let rows: Vec<(String, Option<String>, i32, i32, String)> = sqlx::query_as(
        "SELECT q.external_id, r.error, r.tokens_in, r.tokens_out, r.finish_reason
         FROM results r JOIN queries q ON q.id = r.query_id WHERE r.run_id = $1::uuid ORDER BY q.external_id",
    )
    .bind(&run.run_id)
    .fetch_all(&fleet.pool)
    .await?;
    let [(_, multi_error, multi_in, multi_out, multi_finish), (_, single_error, single_in, single_out, _)] = &rows[..]
    else {
        panic!("two results expected: {rows:?}");
    };
    assert_eq!((multi_error, single_error), (&None, &None), "{rows:?}");
    assert!(*multi_out >= 1 && *multi_out <= 4, "the query's budget of 4 reached the engine: {rows:?}");
    assert_eq!(multi_finish, "length", "{rows:?}");
    assert!(*single_out > 4, "the other query ran under the run's budget: {rows:?}");
    // The earlier turns are prompt tokens too (the same last message alone gives the same
    // count: the chat template adds its own system message where none is given).
    assert!(*multi_in >= *single_in + 20, "the whole conversation reached the engine: {rows:?}");
    Ok(())
}
