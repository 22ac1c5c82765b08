//! Writing and streaming Parquet files: round trips, folders, projections, errors.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use burnish_data::{
    Content, DataError, ListwiseRow, ListwiseSchema, ListwiseWriter, Message, PairSchema,
    PairWriter, PreferencePair, PromptCompletion, PromptCompletionWriter, Ranking, ReaderBuilder,
};

fn text_pair(i: usize) -> PreferencePair {
    let mut p = PreferencePair::new(
        format!("prompt {i}"),
        format!("good {i}"),
        format!("bad {i}"),
    );
    p.id = Some(format!("id-{i}"));
    p
}

fn chat_pair(i: usize) -> PreferencePair {
    PreferencePair::new(
        vec![
            Message::new("system", "sys"),
            Message::new("user", format!("q{i}")),
        ],
        vec![Message::new("assistant", format!("yes {i}"))],
        vec![Message::new("assistant", format!("no {i}"))],
    )
}

#[test]
fn text_pairs_round_trip_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.parquet");
    let rows: Vec<_> = (0..2500).map(text_pair).collect();
    let mut w = PairWriter::create(&path, PairSchema::of(&rows[0])).unwrap();
    for r in &rows {
        w.write(r.clone()).unwrap();
    }
    assert_eq!(w.finish().unwrap(), 2500);
    let b = ReaderBuilder::new().path(&path).batch_size(300);
    assert_eq!(b.num_rows().unwrap(), 2500);
    let back: Vec<_> = b.pairs().unwrap().map(Result::unwrap).collect();
    assert_eq!(back, rows);
}

#[test]
fn conversational_pairs_with_cached_reference_logps_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.parquet");
    let mut rows: Vec<_> = (0..10).map(chat_pair).collect();
    for (i, r) in rows.iter_mut().enumerate() {
        r.ref_chosen_logp = Some(-(i as f32));
        r.ref_rejected_logp = Some(-2.0 * i as f32);
        r.margin = Some(0.5);
    }
    let schema = PairSchema {
        messages: true,
        id: false,
        margin: true,
        ref_logps: true,
    };
    let mut w = PairWriter::create(&path, schema).unwrap();
    rows.iter().for_each(|r| w.write(r.clone()).unwrap());
    w.finish().unwrap();
    let back: Vec<_> = ReaderBuilder::new()
        .path(&path)
        .pairs()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(back, rows);
    // Reading only some optional columns leaves the others unset.
    let light: Vec<_> = ReaderBuilder::new()
        .path(&path)
        .columns(&["margin"])
        .pairs()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(light[3].ref_chosen_logp, None);
    assert_eq!(light[3].margin, Some(0.5));
}

#[test]
fn writer_refuses_a_row_of_the_other_kind() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = PairWriter::create(dir.path().join("x.parquet"), PairSchema::default()).unwrap();
    let err = w.write(chat_pair(0)).unwrap_err();
    assert!(err.to_string().contains("message list"), "{err}");
}

#[test]
fn a_folder_reads_as_one_data_set_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    for (name, range) in [("b.parquet", 5..10), ("a.parquet", 0..5)] {
        let mut w = PairWriter::create(
            dir.path().join(name),
            PairSchema {
                id: true,
                ..Default::default()
            },
        )
        .unwrap();
        range.for_each(|i| w.write(text_pair(i)).unwrap());
        w.finish().unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), "not parquet").unwrap();
    let mut reader = ReaderBuilder::new().path(dir.path()).pairs().unwrap();
    let ids: Vec<_> = reader.by_ref().map(|r| r.unwrap().id.unwrap()).collect();
    assert_eq!(ids, (0..10).map(|i| format!("id-{i}")).collect::<Vec<_>>());
    let pos = reader.position().unwrap();
    assert!(pos.file.ends_with("b.parquet") && pos.row == 4);
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        ReaderBuilder::new().path(empty.path()).files(),
        Err(DataError::NoFiles(_))
    ));
}

#[test]
fn missing_column_and_null_values_name_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("prompt", DataType::Utf8, true),
        Field::new("chosen", DataType::Utf8, true),
        Field::new("rejected", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![Some("p0"), Some("p1")])),
            Arc::new(StringArray::from(vec![Some("c0"), None])),
            Arc::new(StringArray::from(vec![Some("r0"), Some("r1")])),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let rows: Vec<_> = ReaderBuilder::new().path(&path).pairs().unwrap().collect();
    assert!(rows[0].is_ok());
    let msg = rows[1].as_ref().unwrap_err().to_string();
    assert!(
        msg.contains("bad.parquet") && msg.contains("row 1") && msg.contains("`chosen`"),
        "{msg}"
    );
    // The same file lacks `responses`, so it is not listwise.
    let err = ReaderBuilder::new()
        .path(&path)
        .listwise()
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string().contains("missing column `responses`"),
        "{err}"
    );
}

#[test]
fn listwise_and_supervised_rows_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let lpath = dir.path().join("list.parquet");
    let rows = vec![
        ListwiseRow {
            id: None,
            prompt: Content::Text("p".into()),
            responses: vec!["a".into(), "b".into(), "c".into()],
            ranking: Ranking::Ranks(vec![1, 0, 1]),
            ref_logps: None,
        },
        ListwiseRow {
            id: None,
            prompt: Content::Text("q".into()),
            responses: vec!["x".into(), "y".into()],
            ranking: Ranking::Ranks(vec![0, 1]),
            ref_logps: None,
        },
    ];
    let mut w = ListwiseWriter::create(&lpath, ListwiseSchema::of(&rows[0])).unwrap();
    rows.iter().for_each(|r| w.write(r.clone()).unwrap());
    w.finish().unwrap();
    let back: Vec<_> = ReaderBuilder::new()
        .path(&lpath)
        .listwise()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(back, rows);

    let spath = dir.path().join("sft.parquet");
    let sft = vec![
        PromptCompletion::new("2+2=", "4"),
        PromptCompletion::new("3+3=", "6"),
    ];
    let mut w = PromptCompletionWriter::create(&spath, false, false).unwrap();
    sft.iter().for_each(|r| w.write(r.clone()).unwrap());
    w.finish().unwrap();
    let back: Vec<_> = ReaderBuilder::new()
        .path(&spath)
        .prompt_completions()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(back, sft);
}

/// The error and its `source()` chain as `anyhow` prints them with `{:#}` (`a: b: c`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

#[test]
fn an_error_prints_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    // I/O: a tokenizer file that is not there.
    let missing = dir.path().join("tokenizer.json");
    let err = burnish_data::load_tokenizer(&missing).unwrap_err();
    let text = chain(&err);
    assert!(text.contains("tokenizer.json"), "{text}");
    assert_eq!(text.matches("No such file").count(), 1, "{text}");
    // Parquet: a file that ends in the magic bytes but holds no footer.
    let bad = dir.path().join("bad.parquet");
    std::fs::write(&bad, b"PAR1 not really parquet PAR1").unwrap();
    let err = ReaderBuilder::new()
        .path(&bad)
        .pairs()
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    let text = chain(&err);
    assert!(text.contains("bad.parquet: Parquet: "), "{text}");
    let cause = text.split("bad.parquet: Parquet: ").nth(1).unwrap();
    assert_eq!(text.matches(cause).count(), 1, "{text}");
}
