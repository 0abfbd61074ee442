//! Workload imports are all or nothing, and a bad line is named.

use ipw_e2e::Fleet;
use ipw_proto::v1::{WorkloadChunk, WorkloadLine};

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
