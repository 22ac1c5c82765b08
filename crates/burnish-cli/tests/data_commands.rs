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
    assert!(
        t.contains("read 3, written 1") && t.contains("rejected 2"),
        "{t}"
    );
    assert!(t.contains("--allow-rejects"), "{t}");
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
