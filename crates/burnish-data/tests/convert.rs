//! Conversion of every input format, and rejection of broken inputs with reconciling counts.

use std::path::{Path, PathBuf};

use burnish_data::convert::{ConvertOptions, ConvertReport, Pairing, convert};
use burnish_data::formats::{InputFormat, split_hh};
use burnish_data::pairing::{all_pairs, ranks_from_scores};
use burnish_data::{
    Content, DataError, ListwiseRow, Message, PreferencePair, Ranking, ReaderBuilder,
};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run(
    format: InputFormat,
    pairing: Option<Pairing>,
    inputs: &[PathBuf],
    dir: &Path,
) -> (ConvertReport, PathBuf) {
    let out = dir.join("out.parquet");
    let mut opts = ConvertOptions::new(format, &out);
    opts.pairing = pairing;
    opts.seed = 42;
    let report = convert(inputs, &out, &opts).unwrap();
    assert_eq!(report.read, report.written + report.rejected);
    (report, out)
}

fn pairs(path: &Path) -> Vec<PreferencePair> {
    ReaderBuilder::new()
        .path(path)
        .pairs()
        .unwrap()
        .map(Result::unwrap)
        .collect()
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

#[test]
fn llamafactory_sample_converts_300_in_300_out_with_the_same_text() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("llamafactory_dpo_en_demo.json");
    let (report, out) = run(
        InputFormat::ShareGpt,
        None,
        std::slice::from_ref(&input),
        dir.path(),
    );
    assert_eq!(
        (
            report.read,
            report.written,
            report.rejected,
            report.output_rows
        ),
        (300, 300, 0, 300)
    );
    assert!(report.rejects_path.is_none());
    let back = pairs(&out);
    let source: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&input).unwrap()).unwrap();
    assert_eq!(back.len(), 300);
    let role = |from: &str| match from {
        "human" => "user",
        _ => "assistant",
    };
    for (row, src) in back.iter().zip(&source) {
        let turns: Vec<Message> = src["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                Message::new(
                    role(t["from"].as_str().unwrap()),
                    t["value"].as_str().unwrap(),
                )
            })
            .collect();
        let Content::Messages(prompt) = &row.prompt else {
            panic!("conversational")
        };
        // LLaMA-Factory's sample has `system` turns inside `conversations`: kept as system messages.
        let fixed: Vec<Message> = turns
            .into_iter()
            .zip(src["conversations"].as_array().unwrap())
            .map(|(m, t)| {
                if t["from"] == "system" {
                    Message::new("system", m.content)
                } else {
                    m
                }
            })
            .collect();
        assert_eq!(prompt, &fixed);
        let answer = |k: &str| {
            Content::Messages(vec![Message::new(
                "assistant",
                src[k]["value"].as_str().unwrap(),
            )])
        };
        assert_eq!(row.chosen, answer("chosen"));
        assert_eq!(row.rejected, answer("rejected"));
    }
}

#[test]
fn openai_messages_with_typed_parts_split_at_the_shared_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (report, out) = run(
        InputFormat::OpenAi,
        None,
        &[fixture("llamafactory_v1_dpo_demo.jsonl")],
        dir.path(),
    );
    assert_eq!((report.read, report.written, report.rejected), (10, 10, 0));
    let rows = pairs(&out);
    let Content::Messages(p) = &rows[0].prompt else {
        panic!()
    };
    assert_eq!(
        p.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(),
        ["system", "user"]
    );
    let Content::Messages(c) = &rows[0].chosen else {
        panic!()
    };
    assert!(
        c[0].content
            .starts_with("Abdulah Hasanagic is the proud owner")
    );
}

#[test]
fn trl_json_lines_standard_and_implicit_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("trl.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"id": 7, "prompt": "2+2=", "chosen": "4", "rejected": "5", "margin": 1.5}"#,
            "\n",
            "\n",
            r#"{"id": "b", "prompt": "3+3=", "chosen": "6", "rejected": "7", "margin": 0}"#,
            "\n",
        ),
    )
    .unwrap();
    let (report, out) = run(InputFormat::Trl, None, &[input], dir.path());
    assert_eq!((report.read, report.written), (2, 2));
    let rows = pairs(&out);
    assert_eq!(rows[0].id.as_deref(), Some("7"));
    assert_eq!(rows[0].margin, Some(1.5));
    assert_eq!(rows[1].prompt, Content::Text("3+3=".into()));

    let implicit = dir.path().join("implicit.json");
    std::fs::write(
        &implicit,
        r#"[{"chosen": [{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}],
             "rejected": [{"role":"user","content":"hi"},{"role":"assistant","content":"go away"}]}]"#,
    )
    .unwrap();
    let (report, out) = run(InputFormat::Trl, None, &[implicit], dir.path());
    assert_eq!(report.written, 1);
    assert_eq!(
        pairs(&out)[0].prompt,
        Content::Messages(vec![Message::new("user", "hi")])
    );
}

#[test]
fn hh_rlhf_prompt_is_the_shared_prefix_up_to_the_last_assistant_tag() {
    let chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken cross the road?";
    let rejected =
        "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why not.";
    let (p, c, r) = split_hh(chosen, rejected).unwrap();
    // The shared prefix runs into " Why", but the prompt stops right after "Assistant:".
    assert_eq!(
        p,
        "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant:"
    );
    assert_eq!(c, " Why did the chicken cross the road?");
    assert_eq!(r, " Why not.");
    assert!(split_hh("\n\nHuman: a", "\n\nHuman: b").is_err());

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("hh.jsonl");
    let line = serde_json::json!({"chosen": chosen, "rejected": rejected}).to_string();
    std::fs::write(&input, format!("{line}\n{line}\n")).unwrap();
    let (report, out) = run(InputFormat::HhRlhf, None, &[input], dir.path());
    assert_eq!(report.written, 2);
    assert_eq!(pairs(&out)[0].chosen, Content::Text(c));
}

fn list(ranking: Ranking, n: usize) -> ListwiseRow {
    ListwiseRow {
        id: None,
        prompt: "p".into(),
        responses: (0..n).map(|i| Content::Text(format!("r{i}"))).collect(),
        ranking,
        ref_logps: None,
    }
}

fn names(pairs: &[PreferencePair]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|p| (p.chosen.to_display_text(), p.rejected.to_display_text()))
        .collect()
}

#[test]
fn rankings_give_every_pair_with_different_ranks_ties_give_none() {
    // D > C > A = B, as ranks of [A, B, C, D].
    let row = list(Ranking::Ranks(vec![2, 2, 1, 0]), 4);
    let got = names(&all_pairs(&row));
    let want: Vec<(String, String)> = [
        ("r3", "r2"),
        ("r3", "r0"),
        ("r3", "r1"),
        ("r2", "r0"),
        ("r2", "r1"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    // K = 4 without ties gives C(4, 2) = 6 pairs.
    assert_eq!(
        all_pairs(&list(Ranking::Ranks(vec![0, 1, 2, 3]), 4)).len(),
        6
    );
    assert_eq!(ranks_from_scores(&[1.0, 3.0, 3.0, 0.5]), vec![1, 0, 0, 2]);
}

fn ultrafeedback_input(dir: &Path) -> PathBuf {
    let input = dir.join("uf.jsonl");
    let rows = [
        serde_json::json!({"instruction": "q1", "completions": [
            {"response": "a", "overall_score": 3.0}, {"response": "b", "overall_score": 9.0},
            {"response": "c", "overall_score": 5.0}, {"response": "d", "overall_score": 9.0}]}),
        serde_json::json!({"prompt": "q2", "completions": [
            {"response": "x", "overall_score": 4}, {"response": "y", "overall_score": 4}]}),
    ];
    std::fs::write(
        &input,
        rows.iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    input
}

#[test]
fn ultrafeedback_best_vs_random_all_pairs_and_listwise() {
    let dir = tempfile::tempdir().unwrap();
    let input = ultrafeedback_input(dir.path());
    let (report, out) = run(
        InputFormat::UltraFeedback,
        Some(Pairing::BestVsRandom),
        std::slice::from_ref(&input),
        dir.path(),
    );
    // The second prompt's responses tie: rejected, with the reason.
    assert_eq!((report.read, report.written, report.rejected), (2, 1, 1));
    let rej = rejects(&report);
    assert_eq!(rej[0]["line"], 2);
    assert!(rej[0]["reason"].as_str().unwrap().contains("tie"));
    let p = &pairs(&out)[0];
    assert_eq!(p.chosen, Content::Text("b".into()));
    assert!(["a", "c"].contains(&p.rejected.to_display_text().as_str()));
    // Same seed, same pick.
    let (_, out2) = run(
        InputFormat::UltraFeedback,
        Some(Pairing::BestVsRandom),
        std::slice::from_ref(&input),
        dir.path(),
    );
    assert_eq!(pairs(&out2)[0], *p);

    let (report, out) = run(
        InputFormat::UltraFeedback,
        Some(Pairing::AllPairs),
        std::slice::from_ref(&input),
        dir.path(),
    );
    assert_eq!(report.output_rows, 5); // b>c, b>a, d>c, d>a, c>a; b = d tie
    assert_eq!(pairs(&out).len(), 5);

    let (report, out) = run(
        InputFormat::UltraFeedback,
        Some(Pairing::Listwise),
        &[input],
        dir.path(),
    );
    assert_eq!((report.written, report.rejected), (2, 0));
    let rows: Vec<_> = ReaderBuilder::new()
        .path(&out)
        .listwise()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows[0].ranking, Ranking::Scores(vec![3.0, 9.0, 5.0, 9.0]));
}

/// Found by `properties.rs`: with every record rejected, `--pairing listwise` wrote an empty
/// *pairwise* file, which the listwise reader then refused.
#[test]
fn a_listwise_conversion_without_a_valid_record_writes_an_empty_listwise_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ranks.jsonl");
    std::fs::write(&input, "{\"prompt\": \"p\", \"chosen\": \"c\"}\n").unwrap();
    let (report, out) = run(
        InputFormat::Ranking,
        Some(Pairing::Listwise),
        std::slice::from_ref(&input),
        dir.path(),
    );
    assert_eq!(
        (report.read, report.rejected, report.output_rows),
        (1, 1, 0)
    );
    let rows = ReaderBuilder::new().path(&out).listwise().unwrap().count();
    assert_eq!(rows, 0);
}

#[test]
fn scores_and_rankings_formats_into_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("elo.json");
    std::fs::write(
        &input,
        r#"[{"prompt": "p", "responses": ["a", "b", "c"], "scores": [1200, 1350.5, 1100]}]"#,
    )
    .unwrap();
    let (report, out) = run(InputFormat::Scores, None, &[input], dir.path());
    assert_eq!(report.output_rows, 3);
    assert_eq!(names(&pairs(&out))[0], ("b".to_string(), "a".to_string()));
    let input = dir.path().join("rank.json");
    std::fs::write(
        &input,
        r#"[{"prompt": "p", "responses": ["a", "b", "c"], "ranks": [1, 0, 1]}]"#,
    )
    .unwrap();
    let (report, _) = run(InputFormat::Ranking, None, &[input], dir.path());
    assert_eq!(report.output_rows, 2);
}

#[test]
fn sharegpt_answers_from_the_human_side_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sharegpt.jsonl");
    let conv = r#""conversations": [{"from": "human", "value": "Hi?"}]"#;
    let lines = [
        format!(
            r#"{{{conv}, "chosen": {{"from": "gpt", "value": "Hello."}}, "rejected": {{"from": "gpt", "value": "Go."}}}}"#
        ),
        format!(
            r#"{{{conv}, "chosen": {{"from": "human", "value": "Hello."}}, "rejected": {{"from": "gpt", "value": "Go."}}}}"#
        ),
        format!(
            r#"{{{conv}, "chosen": {{"from": "gpt", "value": "Hello."}}, "rejected": {{"from": "user", "value": "Go."}}}}"#
        ),
        format!(
            r#"{{{conv}, "chosen": [{{"from": "gpt", "value": "A"}}, {{"from": "human", "value": "B"}}], "rejected": "Go."}}"#
        ),
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let (report, out) = run(
        InputFormat::ShareGpt,
        None,
        std::slice::from_ref(&input),
        dir.path(),
    );
    assert_eq!((report.read, report.written, report.rejected), (4, 1, 3));
    let written = pairs(&out);
    assert_eq!(
        written[0].chosen,
        Content::Messages(vec![Message::new("assistant", "Hello.")])
    );
    let reasons: Vec<String> = rejects(&report)
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        reasons[0].contains("`chosen` is a `user` turn"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("`rejected` is a `user` turn"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("`chosen[1]` is a `user` turn"),
        "{reasons:?}"
    );
}

#[test]
fn broken_rows_are_rejected_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("broken.jsonl");
    let mut bytes = Vec::new();
    let lines: [&[u8]; 9] = [
        br#"{"prompt": "ok", "chosen": "yes", "rejected": "no"}"#,
        br#"{"prompt": "missing rejected", "chosen": "yes"}"#,
        br#"{"prompt": "wrong type", "chosen": 5, "rejected": "no"}"#,
        br#"{"prompt": "empty", "chosen": "", "rejected": "no"}"#,
        br#"{"prompt": "same", "chosen": "x", "rejected": "x"}"#,
        b"{\"prompt\": \"bad utf8 \xff\xfe\", \"chosen\": \"a\", \"rejected\": \"b\"}",
        br#"{"prompt": "mixed", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}"#,
        br#"["not", "an", "object"]"#,
        br#"{"prompt": "truncated", "chosen": "a", "rejec"#,
    ];
    for l in lines {
        bytes.extend_from_slice(l);
        bytes.push(b'\n');
    }
    std::fs::write(&input, &bytes).unwrap();
    let (report, out) = run(
        InputFormat::Trl,
        None,
        std::slice::from_ref(&input),
        dir.path(),
    );
    assert_eq!((report.read, report.written, report.rejected), (9, 1, 8));
    assert_eq!(pairs(&out).len(), 1);
    let rej = rejects(&report);
    let reasons: Vec<(u64, String)> = rej
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = [
        (2, "missing field `rejected`"),
        (3, "field `chosen` is a number"),
        (4, "`chosen` is empty"),
        (5, "identical"),
        (6, "invalid UTF-8"),
        (7, "mix plain text and message lists"),
        (8, "expected an object"),
        (9, "invalid JSON"),
    ];
    for ((line, reason), (want_line, want)) in reasons.iter().zip(expect) {
        assert_eq!(*line, want_line);
        assert!(reason.contains(want), "line {line}: {reason}");
    }
    assert!(
        rej.iter()
            .all(|r| r["source"].as_str().unwrap().ends_with("broken.jsonl"))
    );
}

#[test]
fn a_truncated_json_array_keeps_its_complete_rows_and_rejects_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read_to_string(fixture("llamafactory_dpo_en_demo.json")).unwrap();
    let input = dir.path().join("cut.json");
    std::fs::write(&input, &full[..full.len() / 2]).unwrap();
    let (report, _) = run(
        InputFormat::ShareGpt,
        None,
        std::slice::from_ref(&input),
        dir.path(),
    );
    assert_eq!(report.rejected, 1);
    assert!(
        report.written > 100 && report.written < 200,
        "{}",
        report.written
    );
    let rej = rejects(&report);
    assert_eq!(rej[0]["row"].as_u64().unwrap(), report.written);
    assert!(rej[0]["reason"].as_str().unwrap().contains("truncated"));
    // A stale rejects file from an earlier run disappears when nothing is rejected.
    let (report, _) = run(
        InputFormat::ShareGpt,
        None,
        &[fixture("llamafactory_dpo_en_demo.json")],
        dir.path(),
    );
    assert_eq!(report.rejected, 0);
    assert!(!dir.path().join("out.rejects.jsonl").exists());
}

#[test]
fn an_empty_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("empty.jsonl");
    std::fs::write(&input, "").unwrap();
    let out = dir.path().join("out.parquet");
    let err = convert(
        std::slice::from_ref(&input),
        &out,
        &ConvertOptions::new(InputFormat::Trl, &out),
    )
    .unwrap_err();
    assert!(matches!(err, DataError::EmptyInput(ref p) if p == &input));
    std::fs::write(&input, "  \n\n").unwrap();
    let err = convert(&[input], &out, &ConvertOptions::new(InputFormat::Trl, &out)).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn gzipped_input_is_read() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("trl.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&input).unwrap(),
        flate2::Compression::fast(),
    );
    writeln!(gz, r#"{{"prompt": "a", "chosen": "b", "rejected": "c"}}"#).unwrap();
    gz.finish().unwrap();
    let (report, _) = run(InputFormat::Trl, None, &[input], dir.path());
    assert_eq!(report.written, 1);
}
