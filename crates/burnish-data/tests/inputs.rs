//! Every input kind, written by the test itself: Parquet, CSV, Arrow IPC (file and stream),
//! `datasets.save_to_disk` and `DatasetDict` folders, Hub-style folders of shards; column
//! mapping; rows in order, counts that reconcile, rejects that name the shard and its row.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use burnish_data::convert::{ConvertOptions, ConvertReport, convert};
use burnish_data::formats::InputFormat;
use burnish_data::{
    Content, DataError, Message, PairSchema, PairWriter, PreferencePair, ReaderBuilder,
};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

/// A batch of nullable text columns.
fn text_batch(columns: &[(&str, Vec<Option<&str>>)]) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, _)| Field::new(*n, DataType::Utf8, true))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|(_, v)| Arc::new(StringArray::from(v.clone())) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

/// Pairs `start..end` as a batch with TRL's names (text), `chosen` null where `bad` says.
fn pair_batch(range: std::ops::Range<usize>, bad: Option<usize>) -> RecordBatch {
    let p: Vec<String> = range.clone().map(|i| format!("prompt {i}")).collect();
    let c: Vec<String> = range.clone().map(|i| format!("good {i}")).collect();
    let r: Vec<String> = range.clone().map(|i| format!("bad {i}")).collect();
    let chosen: Vec<Option<&str>> = c
        .iter()
        .zip(range.clone())
        .map(|(s, i)| (Some(i) != bad).then_some(s.as_str()))
        .collect();
    text_batch(&[
        ("prompt", p.iter().map(|s| Some(s.as_str())).collect()),
        ("chosen", chosen),
        ("rejected", r.iter().map(|s| Some(s.as_str())).collect()),
    ])
}

fn write_parquet(path: &Path, batches: &[RecordBatch]) {
    let mut w =
        ArrowWriter::try_new(File::create(path).unwrap(), batches[0].schema(), None).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

fn write_ipc(path: &Path, batches: &[RecordBatch], stream: bool) {
    let file = File::create(path).unwrap();
    let schema = batches[0].schema();
    if stream {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(file, &schema).unwrap();
        batches.iter().for_each(|b| w.write(b).unwrap());
        w.finish().unwrap();
    } else {
        let mut w = arrow::ipc::writer::FileWriter::try_new(file, &schema).unwrap();
        batches.iter().for_each(|b| w.write(b).unwrap());
        w.finish().unwrap();
    }
}

/// The batches of a Parquet file (to re-write burnish's own message-list columns as IPC).
fn parquet_batches(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn text_pair(i: usize) -> PreferencePair {
    PreferencePair::new(
        format!("prompt {i}"),
        format!("good {i}"),
        format!("bad {i}"),
    )
}

fn read_pairs(b: ReaderBuilder) -> Vec<PreferencePair> {
    b.pairs().unwrap().map(Result::unwrap).collect()
}

fn prompts(rows: &[PreferencePair]) -> Vec<String> {
    rows.iter().map(|p| p.prompt.to_display_text()).collect()
}

fn expected_prompts(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("prompt {i}")).collect()
}

fn run(inputs: &[PathBuf], out: &Path, setup: impl FnOnce(&mut ConvertOptions)) -> ConvertReport {
    let mut opts = ConvertOptions::new(InputFormat::Trl, out);
    setup(&mut opts);
    let report = convert(inputs, out, &opts).unwrap();
    assert_eq!(report.read, report.written + report.rejected);
    report
}

fn rejects(report: &ConvertReport) -> Vec<Value> {
    let Some(p) = &report.rejects_path else {
        return Vec::new();
    };
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn columns(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn parquet_converts_with_a_column_mapping_and_reads_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("se.parquet");
    // StackExchange-style names: question / response_j (better) / response_k.
    let batch = text_batch(&[
        ("question", vec![Some("q0"), Some("q1"), Some("q2")]),
        ("response_j", vec![Some("j0"), Some("j1"), Some("same")]),
        ("response_k", vec![Some("k0"), Some("k1"), Some("same")]),
        (
            "prompt",
            vec![Some("ignored"), Some("ignored"), Some("ignored")],
        ),
    ]);
    write_parquet(&input, &[batch]);
    let map = columns(&[
        ("prompt", "question"),
        ("chosen", "response_j"),
        ("rejected", "response_k"),
    ]);

    // The trainers' reader, with the mapping: the file's own `prompt` is hidden by it.
    let rows: Vec<_> = ReaderBuilder::new()
        .path(&input)
        .rename("question", "prompt")
        .column_map(std::collections::BTreeMap::from([
            ("chosen".to_string(), "response_j".to_string()),
            ("rejected".to_string(), "response_k".to_string()),
        ]))
        .pairs()
        .unwrap()
        .collect::<Vec<_>>();
    assert_eq!(rows.len(), 3);
    let first = rows[0].as_ref().unwrap();
    assert_eq!(
        (&first.prompt, &first.chosen, &first.rejected),
        (&"q0".into(), &"j0".into(), &"k0".into())
    );

    // convert: the third row has chosen == rejected and is rejected with its row number.
    let out = dir.path().join("out.parquet");
    let report = run(std::slice::from_ref(&input), &out, |o| {
        o.columns = map.clone()
    });
    assert_eq!((report.read, report.written, report.rejected), (3, 2, 1));
    let back = read_pairs(ReaderBuilder::new().path(&out));
    assert_eq!(prompts(&back), vec!["q0", "q1"]);
    assert_eq!(back[1].chosen, Content::from("j1"));
    let rej = rejects(&report);
    assert_eq!(rej.len(), 1);
    assert_eq!(rej[0]["row"], 2);
    assert_eq!(rej[0]["source"], input.display().to_string());
    assert!(
        rej[0]["reason"].as_str().unwrap().contains("identical"),
        "{rej:?}"
    );
}

#[test]
fn a_missing_mapped_column_is_one_error_naming_both_names() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("se.parquet");
    write_parquet(
        &input,
        &[text_batch(&[
            ("question", vec![Some("q")]),
            ("response_j", vec![Some("j")]),
        ])],
    );
    let err = ReaderBuilder::new()
        .path(&input)
        .column_map([("prompt", "question"), ("rejected", "response_k")])
        .pairs()
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, DataError::MappedColumn { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("`response_k` (mapped to `rejected`)")
            && msg.contains("found: question, response_j")
            && msg.contains("se.parquet"),
        "{msg}"
    );

    // convert refuses before writing anything, for tabular and JSON inputs alike.
    let out = dir.path().join("out.parquet");
    let mut opts = ConvertOptions::new(InputFormat::Trl, &out);
    opts.columns = columns(&[("rejected", "response_k")]);
    let err = convert(std::slice::from_ref(&input), &out, &opts).unwrap_err();
    assert!(err.to_string().contains("(mapped to `rejected`)"), "{err}");
    assert!(!out.exists());
    let json = dir.path().join("se.jsonl");
    std::fs::write(&json, "{\"question\": \"q\", \"response_j\": \"j\"}\n").unwrap();
    let err = convert(&[json], &out, &opts).unwrap_err().to_string();
    assert!(
        err.contains("`response_k` (mapped to `rejected`)")
            && err.contains("found: question, response_j"),
        "{err}"
    );
}

#[test]
fn csv_converts_with_typed_cells_and_rejects_bad_rows_by_row_number() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.csv");
    let chat = r#"[{"role": "user", "content": "hi, there"}]"#.replace('"', "\"\"");
    let answer = r#"[{"role": "assistant", "content": "hello"}]"#.replace('"', "\"\"");
    let other = r#"[{"role": "assistant", "content": "go away"}]"#.replace('"', "\"\"");
    std::fs::write(
        &input,
        format!(
            "id,question,good,bad,margin\n\
             007,\"What is 2+2, roughly?\",\"4\nor so\",5,1.5\n\
             008,42,yes,no,high\n\
             009,only,two\n\
             010,\"{chat}\",\"{answer}\",\"{other}\",\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out.parquet");
    let report = run(std::slice::from_ref(&input), &out, |o| {
        o.columns = columns(&[
            ("prompt", "question"),
            ("chosen", "good"),
            ("rejected", "bad"),
        ]);
        o.pairing = None;
    });
    // Row 1: margin `high` is not a number; row 2 has three fields; row 3 is conversational
    // after a plain-text first row, so it does not fit the file.
    assert_eq!((report.read, report.written, report.rejected), (4, 1, 3));
    let back = read_pairs(ReaderBuilder::new().path(&out));
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].id.as_deref(), Some("007"));
    assert_eq!(back[0].prompt, Content::from("What is 2+2, roughly?"));
    assert_eq!(back[0].chosen, Content::from("4\nor so"));
    assert_eq!(back[0].rejected, Content::from("5"));
    assert_eq!(back[0].margin, Some(1.5));
    let rej = rejects(&report);
    let rows: Vec<u64> = rej.iter().map(|r| r["row"].as_u64().unwrap()).collect();
    assert_eq!(rows, vec![1, 2, 3]);
    let reasons: Vec<&str> = rej.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].contains("`margin` is a string"), "{reasons:?}");
    assert!(reasons[1].contains("3 fields, the header 5"), "{reasons:?}");
    assert!(reasons[2].contains("message list"), "{reasons:?}");

    // A CSV of message lists alone converts to a conversational file.
    let chat_csv = dir.path().join("chat.csv");
    std::fs::write(
        &chat_csv,
        format!("prompt,chosen,rejected\n\"{chat}\",\"{answer}\",\"{other}\"\n"),
    )
    .unwrap();
    let out2 = dir.path().join("chat.parquet");
    let report = run(std::slice::from_ref(&chat_csv), &out2, |_| {});
    assert_eq!((report.written, report.rejected), (1, 0));
    let back = read_pairs(ReaderBuilder::new().path(&out2));
    assert_eq!(
        back[0].prompt,
        Content::Messages(vec![Message::new("user", "hi, there")])
    );
    assert_eq!(
        back[0].rejected,
        Content::Messages(vec![Message::new("assistant", "go away")])
    );
}

#[test]
fn the_reader_reads_csv_text_columns_and_refuses_message_lists() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.csv");
    std::fs::write(
        &input,
        "q,chosen,rejected,margin\n\"a, b\",c,d,0.5\ne,f,g,\n",
    )
    .unwrap();
    let b = ReaderBuilder::new().path(&input).rename("q", "prompt");
    assert_eq!(b.num_rows().unwrap(), 2);
    let rows = read_pairs(b);
    assert_eq!(prompts(&rows), vec!["a, b", "e"]);
    assert_eq!(rows[0].margin, Some(0.5));
    assert_eq!(rows[1].margin, None);

    let chat = dir.path().join("chat.csv");
    std::fs::write(
        &chat,
        "prompt,chosen,rejected\n\"[{\"\"role\"\": \"\"user\"\", \"\"content\"\": \"\"hi\"\"}]\",a,b\n",
    )
    .unwrap();
    let err = ReaderBuilder::new()
        .path(&chat)
        .pairs()
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("chat.csv") && err.contains("`prompt`") && err.contains("burnish convert"),
        "{err}"
    );
}

#[test]
fn arrow_ipc_file_and_stream_formats_read_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // Conversational rows with a float column, as burnish writes them, re-written as IPC.
    let parquet = dir.path().join("chat.parquet");
    let rows: Vec<PreferencePair> = (0..5)
        .map(|i| {
            let mut p = PreferencePair::new(
                vec![Message::new("user", format!("q{i}"))],
                vec![Message::new("assistant", format!("yes {i}"))],
                vec![Message::new("assistant", format!("no {i}"))],
            );
            p.margin = Some(i as f32);
            p
        })
        .collect();
    let mut w = PairWriter::create(&parquet, PairSchema::of(&rows[0])).unwrap();
    rows.iter().for_each(|r| w.write(r.clone()).unwrap());
    w.finish().unwrap();
    let batches = parquet_batches(&parquet);
    let file = dir.path().join("a.arrow");
    let stream = dir.path().join("b.arrow");
    write_ipc(&file, &batches, false);
    write_ipc(&stream, &batches, true);

    for path in [&file, &stream] {
        let b = ReaderBuilder::new().path(path).batch_size(2);
        assert_eq!(b.num_rows().unwrap(), 5);
        assert_eq!(read_pairs(b), rows, "{}", path.display());
    }
    // Both files at once, as one data set; convert gives the same rows, 10 in all.
    let out = dir.path().join("out.parquet");
    let report = run(&[file.clone(), stream.clone()], &out, |_| {});
    assert_eq!((report.read, report.written), (10, 10));
    let back = read_pairs(ReaderBuilder::new().path(&out));
    assert_eq!(&back[5..], &rows[..]);
}

fn save_to_disk(dir: &Path, split: &str, shards: &[Vec<RecordBatch>]) {
    std::fs::create_dir_all(dir).unwrap();
    let n = shards.len();
    let names: Vec<String> = (0..n)
        .map(|i| format!("data-{i:05}-of-{n:05}.arrow"))
        .collect();
    for (name, batches) in names.iter().zip(shards) {
        write_ipc(&dir.join(name), batches, true);
    }
    // state.json lists the shards in reverse name order: the reader must follow the list.
    let files: Vec<Value> = names
        .iter()
        .rev()
        .map(|n| serde_json::json!({ "filename": n }))
        .collect();
    let state = serde_json::json!({
        "_data_files": files,
        "_fingerprint": "0123456789abcdef",
        "_format_columns": null,
        "_format_kwargs": {},
        "_format_type": null,
        "_output_all_columns": false,
        "_split": split,
    });
    std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
    std::fs::write(
        dir.join("dataset_info.json"),
        r#"{"citation": "", "description": "", "features": {"prompt": {"dtype": "string", "_type": "Value"}}}"#,
    )
    .unwrap();
}

#[test]
fn a_save_to_disk_folder_reads_its_shards_in_state_json_order() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    // Shard 00000 holds rows 3..6 with a null `chosen` at row 4; shard 00001 holds rows 0..3.
    save_to_disk(
        &ds,
        "train",
        &[
            vec![pair_batch(3..6, Some(4))],
            vec![pair_batch(0..3, None)],
        ],
    );
    let mut reader = ReaderBuilder::new().path(&ds).pairs().unwrap();
    assert!(reader.files()[0].ends_with("data-00001-of-00002.arrow"));
    let mut got = Vec::new();
    let mut errors = Vec::new();
    while let Some(r) = reader.next() {
        match r {
            Ok(p) => got.push(p.prompt.to_display_text()),
            Err(e) => errors.push((e.to_string(), reader.position().unwrap())),
        }
    }
    assert_eq!(
        got,
        vec!["prompt 0", "prompt 1", "prompt 2", "prompt 3", "prompt 5"]
    );
    assert_eq!(errors.len(), 1);
    let (msg, pos) = &errors[0];
    assert!(
        pos.file.ends_with("data-00000-of-00002.arrow") && pos.row == 1,
        "{pos:?}"
    );
    assert!(
        msg.contains("data-00000-of-00002.arrow, row 1, column `chosen`: is null"),
        "{msg}"
    );
    // The folder knows its split: another name is refused.
    let err = ReaderBuilder::new()
        .path(&ds)
        .split("test")
        .files()
        .unwrap_err();
    assert!(
        err.to_string().contains("holds split `train` only"),
        "{err}"
    );

    // convert: read = written + rejected, the reject names the shard and its own row.
    let out = dir.path().join("out.parquet");
    let report = run(std::slice::from_ref(&ds), &out, |_| {});
    assert_eq!((report.read, report.written, report.rejected), (6, 5, 1));
    let rej = rejects(&report);
    assert!(
        rej[0]["source"]
            .as_str()
            .unwrap()
            .ends_with("data-00000-of-00002.arrow")
    );
    assert_eq!(rej[0]["row"], 1);
    assert_eq!(rej[0]["reason"], "missing field `chosen`");
}

#[test]
fn a_dataset_dict_folder_reads_the_chosen_split() {
    let dir = tempfile::tempdir().unwrap();
    let dd = dir.path().join("dd");
    save_to_disk(&dd.join("train"), "train", &[vec![pair_batch(0..4, None)]]);
    save_to_disk(&dd.join("test"), "test", &[vec![pair_batch(10..12, None)]]);
    std::fs::write(
        dd.join("dataset_dict.json"),
        r#"{"splits": ["train", "test"]}"#,
    )
    .unwrap();

    assert_eq!(
        prompts(&read_pairs(ReaderBuilder::new().path(&dd))),
        expected_prompts(0..4)
    );
    assert_eq!(
        prompts(&read_pairs(ReaderBuilder::new().path(&dd).split("test"))),
        expected_prompts(10..12)
    );
    let err = ReaderBuilder::new()
        .path(&dd)
        .split("validation")
        .files()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no split `validation` here (splits: train, test)"),
        "{err}"
    );
    assert_eq!(
        burnish_data::layout::splits(&dd).unwrap(),
        vec!["train", "test"]
    );
}

#[test]
fn a_hub_folder_of_parquet_shards_reads_one_split_with_rejects_per_shard() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let data = hub.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Train: three shards of 4 rows, a null `chosen` at row 2 of the second; test: one shard.
    for s in 0..3 {
        let start = s * 4;
        let bad = (s == 1).then_some(start + 2);
        write_parquet(
            &data.join(format!("train-{s:05}-of-00003.parquet")),
            &[pair_batch(start..start + 4, bad)],
        );
    }
    write_parquet(
        &data.join("test-00000-of-00001.parquet"),
        &[pair_batch(100..103, None)],
    );
    std::fs::write(hub.join("README.md"), "---\nlicense: mit\n---\n").unwrap();

    let b = ReaderBuilder::new().path(&hub).batch_size(3);
    assert_eq!(b.files().unwrap().len(), 3);
    assert_eq!(b.num_rows().unwrap(), 12);
    let mut reader = b.pairs().unwrap();
    let mut got = Vec::new();
    while let Some(r) = reader.next() {
        match r {
            Ok(p) => got.push(p.prompt.to_display_text()),
            Err(e) => {
                let pos = reader.position().unwrap();
                assert!(
                    pos.file.ends_with("train-00001-of-00003.parquet"),
                    "{pos:?}"
                );
                assert_eq!(pos.row, 2);
                assert!(e.to_string().contains("row 2, column `chosen`"), "{e}");
            }
        }
    }
    let mut want = expected_prompts(0..12);
    want.remove(6);
    assert_eq!(got, want);
    assert_eq!(
        prompts(&read_pairs(ReaderBuilder::new().path(&hub).split("test"))),
        expected_prompts(100..103)
    );

    let out = dir.path().join("out.parquet");
    let report = run(std::slice::from_ref(&hub), &out, |_| {});
    assert_eq!((report.read, report.written, report.rejected), (12, 11, 1));
    assert_eq!(report.output_rows, 11);
    let rej = rejects(&report);
    assert_eq!(rej.len(), 1);
    assert!(
        rej[0]["source"]
            .as_str()
            .unwrap()
            .ends_with("data/train-00001-of-00003.parquet"),
        "{rej:?}"
    );
    assert_eq!(rej[0]["row"], 2);
    assert_eq!(prompts(&read_pairs(ReaderBuilder::new().path(&out))), want);

    let report = run(std::slice::from_ref(&hub), &out, |o| {
        o.split = Some("test".into())
    });
    assert_eq!((report.read, report.written), (3, 3));

    // Without a `train` split, the error lists the splits there are.
    std::fs::remove_file(data.join("train-00000-of-00003.parquet")).unwrap();
    for s in 1..3 {
        std::fs::rename(
            data.join(format!("train-{s:05}-of-00003.parquet")),
            data.join(format!("validation-{s:05}-of-00003.parquet")),
        )
        .unwrap();
    }
    let err = ReaderBuilder::new()
        .path(&hub)
        .files()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no split `train` here (splits: test, validation)"),
        "{err}"
    );
}

/// Rejects and row errors past the first record batch of a later file still name that file and
/// the row's own number in it, for the trainers' reader and for `convert`.
#[test]
fn rows_past_the_first_batch_of_a_later_shard_keep_their_own_row_number() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("shards");
    std::fs::create_dir(&folder).unwrap();
    // Two files of 1500 rows (two of convert's 1024-row batches), a null `chosen` at row 1300 of
    // the second and at row 2 of the first, each file written as three row groups.
    for (name, start, bad) in [("a.parquet", 0, 2), ("b.parquet", 1500, 2800)] {
        let batches: Vec<RecordBatch> = (0..3)
            .map(|k| {
                let from = start + k * 500;
                pair_batch(from..from + 500, Some(bad))
            })
            .collect();
        write_parquet(&folder.join(name), &batches);
    }
    let mut reader = ReaderBuilder::new()
        .path(&folder)
        .batch_size(200)
        .pairs()
        .unwrap();
    let mut errors = Vec::new();
    while let Some(r) = reader.next() {
        if let Err(e) = r {
            let pos = reader.position().unwrap();
            errors.push((
                pos.file.file_name().unwrap().to_owned(),
                pos.row,
                e.to_string(),
            ));
        }
    }
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        (errors[0].0.to_str().unwrap(), errors[0].1),
        ("a.parquet", 2)
    );
    assert_eq!(
        (errors[1].0.to_str().unwrap(), errors[1].1),
        ("b.parquet", 1300)
    );
    assert!(
        errors[1].2.contains("b.parquet, row 1300, column `chosen`"),
        "{}",
        errors[1].2
    );

    let out = dir.path().join("out.parquet");
    let report = run(std::slice::from_ref(&folder), &out, |_| {});
    assert_eq!((report.read, report.rejected), (3000, 2));
    let rej = rejects(&report);
    let at: Vec<(String, u64)> = rej
        .iter()
        .map(|r| {
            let source = Path::new(r["source"].as_str().unwrap());
            (
                source.file_name().unwrap().to_string_lossy().into_owned(),
                r["row"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(at, [("a.parquet".into(), 2), ("b.parquet".into(), 1300)]);
}

#[test]
fn top_level_shards_and_jsonl_shards_are_hub_style_too() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    let line = |i: usize| {
        format!(
            "{{\"prompt\": \"prompt {i}\", \"chosen\": \"good {i}\", \"rejected\": \"bad {i}\"}}\n"
        )
    };
    std::fs::write(
        hub.join("train-00000-of-00002.jsonl"),
        (0..2).map(line).collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        hub.join("train-00001-of-00002.jsonl"),
        (2..5).map(line).collect::<String>() + "{\"prompt\": \"x\"}\n",
    )
    .unwrap();
    std::fs::write(hub.join("test-00000-of-00001.jsonl"), line(9)).unwrap();
    let out = dir.path().join("out.parquet");
    let report = run(std::slice::from_ref(&hub), &out, |_| {});
    assert_eq!((report.read, report.written, report.rejected), (6, 5, 1));
    let rej = rejects(&report);
    assert!(
        rej[0]["source"]
            .as_str()
            .unwrap()
            .ends_with("train-00001-of-00002.jsonl")
    );
    assert_eq!(rej[0]["line"], 4);
    assert_eq!(
        prompts(&read_pairs(ReaderBuilder::new().path(&out))),
        expected_prompts(0..5)
    );
}

#[test]
fn a_plain_folder_mixes_kinds_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<_> = (0..3).map(text_pair).collect();
    let mut w = PairWriter::create(dir.path().join("a.parquet"), PairSchema::default()).unwrap();
    rows.iter().for_each(|r| w.write(r.clone()).unwrap());
    w.finish().unwrap();
    write_ipc(
        &dir.path().join("b.arrow"),
        &[pair_batch(3..5, None)],
        false,
    );
    std::fs::write(
        dir.path().join("c.csv"),
        "prompt,chosen,rejected\nprompt 5,good 5,bad 5\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.json"), "{}").unwrap();
    let rows = read_pairs(ReaderBuilder::new().path(dir.path()));
    assert_eq!(prompts(&rows), expected_prompts(0..6));
}

#[test]
fn an_output_that_is_an_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.parquet");
    write_parquet(&input, &[pair_batch(0..2, None)]);
    let before = std::fs::read(&input).unwrap();
    let opts = ConvertOptions::new(InputFormat::Trl, &input);
    let err = convert(std::slice::from_ref(&input), &input, &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is also the input"), "{err}");
    assert_eq!(std::fs::read(&input).unwrap(), before);
    // A shard of a folder counts as an input too, however the path is spelled.
    let hub = dir.path().join("hub");
    std::fs::create_dir_all(hub.join("data")).unwrap();
    let shard = hub.join("data/train-00000-of-00001.parquet");
    write_parquet(&shard, &[pair_batch(0..2, None)]);
    let spelled = hub.join("data/../data/train-00000-of-00001.parquet");
    let opts = ConvertOptions::new(InputFormat::Trl, &spelled);
    assert!(convert(std::slice::from_ref(&hub), &spelled, &opts).is_err());
}

#[test]
fn a_rejects_file_that_is_the_output_or_an_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}\n{\"prompt\": \"p\"}\n",
    )
    .unwrap();
    let before = std::fs::read(&input).unwrap();
    let out = dir.path().join("out.parquet");
    let mut opts = ConvertOptions::new(InputFormat::Trl, &out);
    // The same file spelled another way is still the output.
    opts.rejects = dir.path().join(".").join("out.parquet");
    let err = convert(std::slice::from_ref(&input), &out, &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rejects file is also the output"), "{err}");
    assert!(!out.exists());
    opts.rejects = input.clone();
    let err = convert(std::slice::from_ref(&input), &out, &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rejects file is also the input"), "{err}");
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_conversion_that_fails_half_way_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    let line =
        |key: &str| format!("{{\"{key}\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}}\n");
    std::fs::write(&a, line("question").repeat(3)).unwrap();
    // `b` lacks the mapped column, which is found out only once `a` has been written.
    std::fs::write(&b, line("prompt")).unwrap();
    let out = dir.path().join("out.parquet");
    let mut opts = ConvertOptions::new(InputFormat::Trl, &out);
    opts.columns = columns(&[("prompt", "question")]);
    let inputs = [a.clone(), b.clone()];
    let err = convert(&inputs, &out, &opts).unwrap_err().to_string();
    assert!(
        err.contains("b.jsonl") && err.contains("`question`"),
        "{err}"
    );
    assert_eq!(listing(dir.path()), ["a.jsonl", "b.jsonl"]);

    // An earlier output at that path stays as it was.
    run(std::slice::from_ref(&a), &out, |o| {
        o.columns = columns(&[("prompt", "question")])
    });
    let before = std::fs::read(&out).unwrap();
    assert!(convert(&inputs, &out, &opts).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert_eq!(listing(dir.path()), ["a.jsonl", "b.jsonl", "out.parquet"]);
}

#[test]
fn rejects_that_are_not_allowed_fail_the_conversion_and_write_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}\n{\"prompt\": \"p\"}\n",
    )
    .unwrap();
    let out = dir.path().join("out.parquet");
    let mut opts = ConvertOptions::new(InputFormat::Trl, &out);
    opts.allow_rejects = false;
    let err = convert(std::slice::from_ref(&input), &out, &opts).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Rejected {
                read: 2,
                rejected: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("out.rejects.jsonl"), "{err}");
    assert!(!out.exists());
    let rejects = std::fs::read_to_string(dir.path().join("out.rejects.jsonl")).unwrap();
    assert_eq!(rejects.lines().count(), 1, "{rejects}");
    assert_eq!(listing(dir.path()), ["in.jsonl", "out.rejects.jsonl"]);
    // Allowed, the same input gives the valid record.
    opts.allow_rejects = true;
    let report = convert(std::slice::from_ref(&input), &out, &opts).unwrap();
    assert_eq!((report.written, report.rejected), (1, 1));
    assert!(out.exists());
}

#[test]
fn float_columns_of_any_width_and_nulls_read_from_arrow() {
    let dir = tempfile::tempdir().unwrap();
    let base = pair_batch(0..3, None);
    let margin: ArrayRef = Arc::new(Float32Array::from(vec![Some(0.25), None, Some(2.0)]));
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| (**f).clone())
        .collect();
    fields.push(Field::new("margin", DataType::Float32, true));
    let mut arrays = base.columns().to_vec();
    arrays.push(margin);
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
    let path = dir.path().join("m.arrow");
    write_ipc(&path, &[batch], true);
    let rows = read_pairs(ReaderBuilder::new().path(&path));
    let margins: Vec<_> = rows.iter().map(|r| r.margin).collect();
    assert_eq!(margins, vec![Some(0.25), None, Some(2.0)]);
    // convert: the null margin is an absent one, the others are numbers, all rows written.
    let out = dir.path().join("out.parquet");
    let report = run(std::slice::from_ref(&path), &out, |_| {});
    assert_eq!((report.written, report.rejected), (3, 0));
    let back: Vec<_> = read_pairs(ReaderBuilder::new().path(&out))
        .iter()
        .map(|r| r.margin)
        .collect();
    assert_eq!(back, margins);
}
