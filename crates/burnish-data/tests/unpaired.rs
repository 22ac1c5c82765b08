//! Unpaired (KTO) rows: conversion from TRL and LLaMA-Factory records, pairs split into
//! desirable and undesirable rows, the writer and reader round trip; listwise `ref_logps`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use burnish_data::convert::{ConvertOptions, ConvertReport, Pairing, convert};
use burnish_data::formats::InputFormat;
use burnish_data::{
    Collator, Content, Encoder, EncoderConfig, ListwiseRow, ListwiseSchema, ListwiseWriter,
    Message, Ranking, ReaderBuilder, TokenizedList, UnpairedRow, UnpairedSchema, UnpairedWriter,
};
use serde_json::Value;

fn run(
    format: InputFormat,
    input: &Path,
    setup: impl FnOnce(&mut ConvertOptions),
) -> (ConvertReport, PathBuf) {
    let out = input.with_file_name("out.parquet");
    let mut opts = ConvertOptions::new(format, &out);
    setup(&mut opts);
    let report = convert(&[input.to_owned()], &out, &opts).unwrap();
    assert_eq!(report.read, report.written + report.rejected);
    (report, out)
}

fn unpaired(path: &Path) -> Vec<UnpairedRow> {
    ReaderBuilder::new()
        .path(path)
        .unpaired()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn reject_reasons(report: &ConvertReport) -> Vec<(u64, String)> {
    let Some(p) = &report.rejects_path else {
        return Vec::new();
    };
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["line"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn kto_from_trl_records_with_boolean_or_01_labels() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("kto.jsonl");
    std::fs::write(
        &input,
        [
            r#"{"prompt": "The sky is", "completion": " blue.", "label": true, "id": 7}"#,
            r#"{"prompt": "The sky is", "completion": " green.", "label": false}"#,
            r#"{"prompt": "Grass is", "completion": " green.", "label": 1}"#,
            r#"{"prompt": "Grass is", "completion": " red.", "label": "no"}"#,
            r#"{"prompt": "Snow is", "completion": " white.", "label": 2}"#,
            r#"{"prompt": "Snow is", "completion": "", "label": true}"#,
            r#"{"prompt": "Snow is", "completion": " cold."}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let (report, out) = run(InputFormat::Kto, &input, |_| {});
    assert_eq!(
        (
            report.read,
            report.written,
            report.rejected,
            report.output_rows
        ),
        (7, 3, 4, 3)
    );
    let rows = unpaired(&out);
    let got: Vec<(String, bool)> = rows
        .iter()
        .map(|r| (r.completion.to_display_text(), r.label))
        .collect();
    assert_eq!(
        got,
        vec![
            (" blue.".to_string(), true),
            (" green.".to_string(), false),
            (" green.".to_string(), true)
        ]
    );
    assert_eq!(rows[0].id.as_deref(), Some("7"));
    assert_eq!(rows[0].prompt, Content::from("The sky is"));
    assert_eq!(
        reject_reasons(&report),
        vec![
            (
                4,
                "field `label` is a string, expected a boolean (true/false or 0/1)".to_string()
            ),
            (
                5,
                "field `label` is 2, expected a boolean (true/false or 0/1)".to_string()
            ),
            (6, "`completion` is empty".to_string()),
            (7, "missing field `label`".to_string()),
        ]
    );
}

#[test]
fn kto_from_llamafactory_messages_and_sharegpt_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("kto_en_demo.json");
    std::fs::write(
        &input,
        r#"[
  {"messages": [{"role": "user", "content": "Which is the best summary?"},
                {"role": "assistant", "content": "Science/Tech"}], "label": true},
  {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "go away"}],
   "system": "be kind", "kto_tag": false},
  {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                {"role": "user", "content": "and?"}], "label": true},
  {"messages": [{"role": "assistant", "content": "unprompted"}], "label": false},
  {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
   "label": "yes"}
]"#,
    )
    .unwrap();
    let (report, out) = run(InputFormat::Kto, &input, |_| {});
    assert_eq!((report.read, report.written, report.rejected), (5, 2, 3));
    let rows = unpaired(&out);
    assert_eq!(
        rows[0].prompt,
        Content::Messages(vec![Message::new("user", "Which is the best summary?")])
    );
    assert_eq!(
        rows[0].completion,
        Content::Messages(vec![Message::new("assistant", "Science/Tech")])
    );
    assert!(rows[0].label);
    assert_eq!(
        rows[1].prompt,
        Content::Messages(vec![
            Message::new("system", "be kind"),
            Message::new("user", "hi")
        ])
    );
    assert_eq!(
        rows[1].completion,
        Content::Messages(vec![Message::new("assistant", "go away")])
    );
    assert!(!rows[1].label);
    let rejects = std::fs::read_to_string(report.rejects_path.unwrap()).unwrap();
    let reasons: Vec<Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rows_and_reasons: Vec<(u64, &str)> = reasons
        .iter()
        .map(|v| (v["row"].as_u64().unwrap(), v["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rows_and_reasons,
        vec![
            (
                2,
                "the last turn of `messages` is `user`, expected an assistant turn (the completion)"
            ),
            (
                3,
                "`messages` has no user turn before the completion, so there is no prompt"
            ),
            (
                4,
                "field `label` is a string, expected a boolean (true/false or 0/1)"
            ),
        ]
    );
}

#[test]
fn pairs_become_a_desirable_and_an_undesirable_row_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.jsonl");
    std::fs::write(
        &input,
        [
            r#"{"id": "a", "prompt": "p0", "chosen": "good 0", "rejected": "bad 0"}"#,
            r#"{"id": "b", "prompt": "p1", "chosen": "good 1", "rejected": "bad 1"}"#,
            r#"{"id": "c", "prompt": "p2", "chosen": "same", "rejected": "same"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let (report, out) = run(InputFormat::Trl, &input, |o| o.unpaired = true);
    assert_eq!(
        (
            report.read,
            report.written,
            report.rejected,
            report.output_rows
        ),
        (3, 2, 1, 4)
    );
    let rows = unpaired(&out);
    let got: Vec<(&str, String, String, bool)> = rows
        .iter()
        .map(|r| {
            (
                r.id.as_deref().unwrap(),
                r.prompt.to_display_text(),
                r.completion.to_display_text(),
                r.label,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a", "p0".into(), "good 0".into(), true),
            ("a", "p0".into(), "bad 0".into(), false),
            ("b", "p1".into(), "good 1".into(), true),
            ("b", "p1".into(), "bad 1".into(), false),
        ]
    );

    // Listwise inputs: best-vs-random gives one pair, so two rows; all-pairs is refused.
    let list = dir.path().join("ranks.jsonl");
    std::fs::write(
        &list,
        r#"{"prompt": "p", "responses": ["x", "y", "z"], "ranks": [1, 0, 2]}"#,
    )
    .unwrap();
    let (report, out) = run(InputFormat::Ranking, &list, |o| {
        o.unpaired = true;
        o.pairing = Some(Pairing::BestVsRandom);
    });
    assert_eq!((report.written, report.output_rows), (1, 2));
    let rows = unpaired(&out);
    assert_eq!(rows[0].completion, Content::from("y"));
    assert!(rows[0].label && !rows[1].label);
    let mut opts = ConvertOptions::new(InputFormat::Ranking, &out);
    opts.unpaired = true;
    let err = convert(&[list], &out, &opts).unwrap_err().to_string();
    assert!(err.contains("best-vs-random"), "{err}");
}

#[test]
fn unpaired_rows_round_trip_through_writer_and_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kto.parquet");
    let rows: Vec<UnpairedRow> = (0..1500)
        .map(|i| {
            let mut r = UnpairedRow::new(
                vec![Message::new("user", format!("q{i}"))],
                vec![Message::new("assistant", format!("a{i}"))],
                i % 3 == 0,
            );
            r.id = Some(format!("id-{i}"));
            r.ref_logp = Some(-(i as f32));
            r.ref_kl_logp = (i % 2 == 0).then_some(-0.5);
            r
        })
        .collect();
    let mut w = UnpairedWriter::create(&path, UnpairedSchema::of(&rows[0])).unwrap();
    assert_eq!(
        w.schema(),
        UnpairedSchema {
            messages: true,
            id: true,
            ref_logps: true
        }
    );
    rows.iter().for_each(|r| w.write(r.clone()).unwrap());
    assert_eq!(w.finish().unwrap(), 1500);
    assert_eq!(unpaired(&path), rows);
    // A text row does not fit a message-list file.
    let mut w =
        UnpairedWriter::create(dir.path().join("x.parquet"), UnpairedSchema::default()).unwrap();
    assert!(w.write(rows[0].clone()).is_err());
}

#[test]
fn integer_and_text_labels_read_and_a_bad_one_is_a_row_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kto.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("prompt", DataType::Utf8, false),
        Field::new("completion", DataType::Utf8, false),
        Field::new("label", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["p", "p", "p"])) as ArrayRef,
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
            Arc::new(Int64Array::from(vec![1, 0, 2])),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let got: Vec<_> = ReaderBuilder::new()
        .path(&path)
        .unpaired()
        .unwrap()
        .map(|r| r.map(|r| r.label).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(got[0], Ok(true));
    assert_eq!(got[1], Ok(false));
    let err = got[2].clone().unwrap_err();
    assert!(
        err.contains("row 2, column `label`: is 2, expected a boolean"),
        "{err}"
    );

    // CSV labels are text: true/false (any case) and 1/0.
    let csv = dir.path().join("kto.csv");
    std::fs::write(&csv, "question,answer,label\nq,a,True\nq,b,0\nq,c,maybe\n").unwrap();
    let got: Vec<_> = ReaderBuilder::new()
        .path(&csv)
        .rename("question", "prompt")
        .rename("answer", "completion")
        .unpaired()
        .unwrap()
        .map(|r| r.map(|r| r.label).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(&got[..2], &[Ok(true), Ok(false)]);
    assert!(
        got[2].as_ref().unwrap_err().contains("is `maybe`"),
        "{got:?}"
    );
}

fn list(i: usize, ref_logps: Option<Vec<f32>>) -> ListwiseRow {
    ListwiseRow {
        id: None,
        prompt: format!("prompt {i}").into(),
        responses: vec![" yes".into(), " no".into(), " maybe".into()],
        ranking: Ranking::Ranks(vec![0, 2, 1]),
        ref_logps,
    }
}

#[test]
fn listwise_reference_logps_round_trip_and_reach_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lists.parquet");
    let rows = vec![
        list(0, Some(vec![-1.0, -2.0, -3.0])),
        list(1, None),
        list(2, Some(vec![-4.5, -5.5, -6.5])),
    ];
    let schema = ListwiseSchema::of(&rows[0]);
    assert!(schema.ref_logps);
    let mut w = ListwiseWriter::create(&path, schema).unwrap();
    rows.iter().for_each(|r| w.write(r.clone()).unwrap());
    // One reference log-prob per response, or the row does not fit.
    assert!(w.write(list(3, Some(vec![-1.0]))).is_err());
    w.finish().unwrap();
    let back: Vec<ListwiseRow> = ReaderBuilder::new()
        .path(&path)
        .listwise()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(back, rows);
    assert!(list(4, Some(vec![-1.0])).validate().is_err());

    // The encoder carries them; the batch has them flat when every row has them.
    let tok = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tokenizer.json.gz");
    let encoder = Encoder::from_files(tok, EncoderConfig::default()).unwrap();
    let encoded: Vec<TokenizedList> = encoder
        .encode_lists(&back)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(encoded[2].ref_logps, Some(vec![-4.5, -5.5, -6.5]));
    assert_eq!(encoded[1].ref_logps, None);
    let collator = Collator::new(0);
    let batch = collator.collate_lists(&[encoded[0].clone(), encoded[2].clone()]);
    assert_eq!(batch.sequences.rows, 6);
    assert_eq!(
        batch.ref_logps,
        Some(vec![-1.0, -2.0, -3.0, -4.5, -5.5, -6.5])
    );
    assert_eq!(collator.collate_lists(&encoded).ref_logps, None);
}
