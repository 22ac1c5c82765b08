//! `burnish convert` and `burnish inspect` end to end: counts, rejects and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data_fixture(name: &str) -> PathBuf {
    // The data crate's fixtures, in this repository; never ../shared.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../burnish-data/tests/fixtures")
        .join(name)
}

fn burnish(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_burnish"))
        .args(args)
        .output()
        .expect("burnish runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn convert_llamafactory_sample_then_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dpo.parquet");
    let input = data_fixture("llamafactory_dpo_en_demo.json");
    let o = burnish(&[
        "convert",
        "--from",
        "sharegpt",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("read 300, written 300 (300 rows in"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("rejected 0"), "{}", text(&o));

    let o = burnish(&["inspect", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("rows: 300"), "{t}");
    assert!(
        t.contains("lengths (chars)") && t.contains("chosen") && t.contains("[2]"),
        "{t}"
    );

    // Token lengths with the GPT-2 tokenizer and a chat template beside it.
    let tok_dir = dir.path().join("tok");
    std::fs::create_dir(&tok_dir).unwrap();
    std::fs::copy(
        data_fixture("gpt2_tokenizer.json.gz"),
        tok_dir.join("tokenizer.json.gz"),
    )
    .unwrap();
    std::fs::copy(
        data_fixture("qwen3_tokenizer_config.json"),
        tok_dir.join("tokenizer_config.json"),
    )
    .unwrap();
    let o = burnish(&[
        "inspect",
        out.to_str().unwrap(),
        "--tokenizer",
        tok_dir.join("tokenizer.json.gz").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("lengths (tokens)"), "{}", text(&o));
}

#[test]
fn rejects_make_the_command_fail_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\", \"chosen\": \"b\"}\n{\"prompt\": \"x\", \"chosen\": \"y\", \"rejected\": \"y\"}\n",
    )
    .unwrap();
    let out = dir.path().join("out.parquet");
    let args = [
        "convert",
        "--from",
        "trl",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    let o = burnish(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("read 3, valid 1, rejected 2"), "{t}");
    assert!(t.contains("--allow-rejects"), "{t}");
    // The command failed, so it leaves no output behind; the rejects file says why.
    assert!(!out.exists(), "{t}");
    let rejects = std::fs::read_to_string(dir.path().join("out.rejects.jsonl")).unwrap();
    assert_eq!(rejects.lines().count(), 2);
    assert!(
        rejects.contains("\"line\":2") && rejects.contains("missing field `rejected`"),
        "{rejects}"
    );

    let mut allowed = args.to_vec();
    allowed.push("--allow-rejects");
    let o = burnish(&allowed);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("read 3, written 1") && text(&o).contains("rejected 2"),
        "{}",
        text(&o)
    );
    assert!(out.exists());

    // The rejects file may be neither the output nor an input.
    for rejects in [&out, &input] {
        let mut refused = allowed.clone();
        refused.extend(["--rejects", rejects.to_str().unwrap()]);
        let o = burnish(&refused);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            text(&o).contains("rejects file is also the"),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn empty_input_and_unknown_format_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("empty.json");
    std::fs::write(&input, "").unwrap();
    let out = dir.path().join("out.parquet");
    let o = burnish(&[
        "convert",
        "--from",
        "trl",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("empty.json: the file is empty"),
        "{}",
        text(&o)
    );
    let o = burnish(&["convert", "--from", "csv", "--input", "x", "--output", "y"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("unknown format"), "{}", text(&o));
}

#[test]
fn tokenizer_check_rejects_rows_with_nothing_left_of_the_completion() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"short\", \"chosen\": \" yes\", \"rejected\": \" no\"}\n{\"prompt\": \"a much longer prompt that fills the whole budget\", \"chosen\": \" yes\", \"rejected\": \" no\"}\n",
    )
    .unwrap();
    let tok = data_fixture("gpt2_tokenizer.json.gz");
    let out = dir.path().join("out.parquet");
    let o = burnish(&[
        "convert",
        "--from",
        "trl",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "--max-length",
        "5",
        "--allow-rejects",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("read 2, written 1"), "{}", text(&o));
    let rejects = std::fs::read_to_string(dir.path().join("out.rejects.jsonl")).unwrap();
    assert!(rejects.contains("nothing left of `chosen`"), "{rejects}");
}

/// `burnish inspect FILE | head -1`: the reader closes the pipe early; burnish stops quietly
/// instead of panicking.
#[test]
fn a_closed_stdout_is_not_a_crash() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    let rows: Vec<burnish::data::PreferencePair> = (0..50)
        .map(|i| burnish::data::PreferencePair::new(format!("prompt {i}").as_str(), " yes", " no"))
        .collect();
    let mut w =
        burnish::data::PairWriter::create(&data, burnish::data::PairSchema::of(&rows[0])).unwrap();
    for r in rows {
        w.write(r).unwrap();
    }
    w.finish().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_burnish"))
        .args(["inspect", data.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    assert!(status.success(), "{status:?}: {err}");
}

#[test]
fn convert_csv_with_column_mapping_then_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("se.csv");
    std::fs::write(
        &input,
        "question,response_j,response_k\n\"Why, exactly?\",Because.,No idea.\nHow?,Carefully.,Badly.\n",
    )
    .unwrap();
    let out = dir.path().join("pairs.parquet");
    let o = burnish(&[
        "convert",
        "--from",
        "trl",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--column",
        "prompt=question",
        "--column",
        "chosen=response_j",
        "--column",
        "rejected=response_k",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("read 2, written 2 (2 rows in") && text(&o).contains("rejected 0"),
        "{}",
        text(&o)
    );
    let o = burnish(&["inspect", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("rows: 2"), "{}", text(&o));
    assert!(text(&o).contains("Why, exactly?"), "{}", text(&o));

    // A mapped column the file lacks: one line naming both names and the file's columns.
    let o = burnish(&[
        "convert",
        "--from",
        "trl",
        "--input",
        input.to_str().unwrap(),
        "--output",
        dir.path().join("x.parquet").to_str().unwrap(),
        "--column",
        "prompt=title",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("`title` (mapped to `prompt`)")
            && t.contains("found: question, response_j, response_k"),
        "{t}"
    );
    assert_eq!(t.trim().lines().count(), 1, "{t}");
    // A malformed mapping is refused by the argument parser.
    let o = burnish(&[
        "convert", "--from", "trl", "--input", "x", "--output", "y", "--column", "prompt",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("is not TRL=FILE"), "{}", text(&o));
}

/// A Hub-style folder: data/train-0000N-of-00002.parquet and data/test-00000-of-00001.parquet.
fn hub_folder(root: &Path) -> PathBuf {
    let data = root.join("hub/data");
    std::fs::create_dir_all(&data).unwrap();
    let shards = [
        ("train-00000-of-00002.parquet", 0..3),
        ("train-00001-of-00002.parquet", 3..5),
        ("test-00000-of-00001.parquet", 10..12),
    ];
    for (name, range) in shards {
        let rows: Vec<burnish::data::PreferencePair> = range
            .map(|i| {
                burnish::data::PreferencePair::new(format!("prompt {i}").as_str(), " yes", " no")
            })
            .collect();
        let mut w = burnish::data::PairWriter::create(
            data.join(name),
            burnish::data::PairSchema::of(&rows[0]),
        )
        .unwrap();
        for r in rows {
            w.write(r).unwrap();
        }
        w.finish().unwrap();
    }
    root.join("hub")
}

#[test]
fn convert_a_hub_folder_by_split_and_refuse_to_overwrite_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_folder(dir.path());
    let out = dir.path().join("out.parquet");
    let convert = |extra: &[&str]| {
        let mut args = vec![
            "convert",
            "--from",
            "trl",
            "--input",
            hub.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        burnish(&args)
    };
    let o = convert(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("read 5, written 5"), "{}", text(&o));
    let o = convert(&["--split", "test"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("read 2, written 2"), "{}", text(&o));
    let o = convert(&["--split", "validation"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("no split `validation` here (splits: test, train)"),
        "{}",
        text(&o)
    );

    // --output equal to an input shard is refused with one line, and the shard is untouched.
    let shard = hub.join("data/test-00000-of-00001.parquet");
    let before = std::fs::read(&shard).unwrap();
    let o = burnish(&[
        "convert",
        "--from",
        "trl",
        "--input",
        shard.to_str().unwrap(),
        "--output",
        shard.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("is also the input"), "{}", text(&o));
    assert_eq!(text(&o).trim().lines().count(), 1, "{}", text(&o));
    assert_eq!(std::fs::read(&shard).unwrap(), before);
}

#[test]
fn convert_kto_records_and_pairs_to_unpaired_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("kto.jsonl");
    std::fs::write(
        &input,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}], \"label\": true}\n\
         {\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}, {\"from\": \"gpt\", \"value\": \"go away\"}], \"kto_tag\": false}\n\
         {\"prompt\": \"The sky is\", \"completion\": \" blue.\", \"label\": \"maybe\"}\n",
    )
    .unwrap();
    let out = dir.path().join("kto.parquet");
    let args = [
        "convert",
        "--from",
        "kto",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    let o = burnish(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // A failed conversion writes no output (only its rejects, with their reasons).
    assert!(
        text(&o).contains("read 3, valid 2, rejected 1; nothing written"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    let rejects = std::fs::read_to_string(dir.path().join("kto.rejects.jsonl")).unwrap();
    assert!(
        rejects.contains("\"line\":3") && rejects.contains("field `label` is a string"),
        "{rejects}"
    );
    let mut pairs_to = args.to_vec();
    pairs_to.extend_from_slice(&["--to", "pairs"]);
    let o = burnish(&pairs_to);
    assert!(!o.status.success());
    assert!(text(&o).contains("unpaired rows only"), "{}", text(&o));

    // Pairs, written as a desirable and an undesirable row each.
    let pairs = dir.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"d\", \"chosen\": \"e\", \"rejected\": \"f\"}\n",
    )
    .unwrap();
    let out = dir.path().join("unpaired.parquet");
    let o = burnish(&[
        "convert",
        "--from",
        "trl",
        "--to",
        "unpaired",
        "--input",
        pairs.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("read 2, written 2 (4 rows in"),
        "{}",
        text(&o)
    );
    let labels: Vec<bool> = burnish::data::ReaderBuilder::new()
        .path(&out)
        .unpaired()
        .unwrap()
        .map(|r| r.unwrap().label)
        .collect();
    assert_eq!(labels, vec![true, false, true, false]);
}
