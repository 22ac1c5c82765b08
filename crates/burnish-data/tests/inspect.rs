//! `inspect`: every bad row is counted (null values, rows that fail validation, every row of a
//! file whose column cannot be read), and none of them enters the length percentiles.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use burnish_data::inspect::inspect;
use parquet::arrow::ArrowWriter;

fn write_parquet(path: &Path, batches: &[RecordBatch]) {
    let mut w =
        ArrowWriter::try_new(File::create(path).unwrap(), batches[0].schema(), None).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

/// A pairwise batch of nullable text columns.
fn pairs(prompt: &[&str], chosen: &[Option<&str>], rejected: &[&str]) -> RecordBatch {
    let text = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as ArrayRef;
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("prompt", DataType::Utf8, true),
            Field::new("chosen", DataType::Utf8, true),
            Field::new("rejected", DataType::Utf8, true),
        ])),
        vec![
            text(prompt.iter().map(|s| Some(*s)).collect()),
            text(chosen.to_vec()),
            text(rejected.iter().map(|s| Some(*s)).collect()),
        ],
    )
    .unwrap()
}

#[test]
fn every_row_that_fails_to_decode_or_validate_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.parquet");
    // Row 1: null `chosen`; row 3: chosen == rejected; row 5: empty `rejected`; two batches.
    write_parquet(
        &path,
        &[
            pairs(
                &["p0", "p1", "p2", "p3"],
                &[Some("good"), None, Some("good"), Some("same")],
                &["bad", "bad", "bad", "same"],
            ),
            pairs(&["p4", "p5"], &[Some("good"), Some("good")], &["bad", ""]),
        ],
    );
    let report = inspect(std::slice::from_ref(&path), None, 10).unwrap();
    assert_eq!(report.rows, 6);
    assert_eq!(report.bad_rows, 3, "{report}");
    // Only the three good rows are sampled and measured.
    assert_eq!(report.samples.len(), 3, "{report}");
    let rejected = &report.lengths[2].1;
    assert_eq!((rejected.p50, rejected.max), (3, 3), "{report}");
}

#[test]
fn every_row_of_a_file_whose_column_cannot_be_read_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("data");
    std::fs::create_dir(&folder).unwrap();
    write_parquet(
        &folder.join("a.parquet"),
        &[pairs(
            &["p0", "p1"],
            &[Some("good"), Some("good")],
            &["bad", "bad"],
        )],
    );
    // `chosen` holds numbers: none of the 5 rows (two batches) can be read.
    let numbers = |v: Vec<i64>| {
        let n = v.len();
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("prompt", DataType::Utf8, false),
                Field::new("chosen", DataType::Int64, false),
                Field::new("rejected", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["p"; n])) as ArrayRef,
                Arc::new(Int64Array::from(v)) as ArrayRef,
                Arc::new(StringArray::from(vec!["r"; n])) as ArrayRef,
            ],
        )
        .unwrap()
    };
    write_parquet(
        &folder.join("b.parquet"),
        &[numbers(vec![1, 2, 3]), numbers(vec![4, 5])],
    );
    let report = inspect(std::slice::from_ref(&folder), None, 10).unwrap();
    assert_eq!(report.rows, 7);
    assert_eq!(report.bad_rows, 5, "{report}");
    let text = report.to_string();
    assert!(
        text.contains("b.parquet") && text.contains("`chosen`"),
        "the first bad row's reason is shown: {text}"
    );
}
