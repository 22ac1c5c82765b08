//! Property tests: random and corrupted inputs never make the data layer panic, and what it
//! promises holds for every input, not just the hand-written ones.
//!
//! - every format's record parser on random JSON values (and on mutated valid records);
//! - `convert` on random JSON Lines (and JSON array) files mixing valid and broken records
//!   (truncated lines, invalid UTF-8, wrong types): `read == written + rejected`, one rejects
//!   line per reject, the output holds the rows it reports;
//! - the Parquet writers and the reader: random pairwise, listwise and unpaired rows come back
//!   equal, across record batches;
//! - `Encoder` and `Collator` on random text and message rows with random lengths (1 and 2
//!   included), on the tiny GPT-2 tokenizer.
//!
//! Case counts are kept small (64 to 256 per property) so that the crate's whole test run stays
//! well under a minute in a debug build; each property's doc comment gives its count.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burnish_data::convert::{ConvertOptions, Pairing, convert};
use burnish_data::formats::{InputFormat, Parsed, parse_record};
use burnish_data::pairing::{all_pairs, best_vs_random, ranks_from_scores};
use burnish_data::{
    ChatTemplate, Collator, Content, DataError, Encoder, EncoderConfig, ListwiseRow,
    ListwiseSchema, ListwiseWriter, Message, PadSide, PairSchema, PairWriter, PreferencePair,
    PromptCompletion, Ranking, ReaderBuilder, Tokenizer, TruncationSide, UnpairedRow,
    UnpairedSchema, UnpairedWriter, load_tokenizer,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Generators.

/// Any string of up to `max` chars: control characters, NUL, non-ASCII, and now and then empty.
fn any_text(max: usize) -> impl Strategy<Value = String> {
    let chars = vec!['a', 'b', ' ', '\n', 'é', '字', '\u{0}'];
    prop_oneof![
        6 => vec(any::<char>(), 1..=max).prop_map(String::from_iter),
        3 => vec(select(chars), 1..=max).prop_map(String::from_iter),
        1 => Just(String::new()),
    ]
}

/// A message, mostly from `role`, now and then from anyone.
fn message(role: &'static str) -> impl Strategy<Value = Message> {
    (
        prop_oneof![
            16 => Just(role.to_owned()),
            1 => select(vec!["user", "assistant", "system"]).prop_map(str::to_owned),
            1 => any_text(6),
        ],
        any_text(12),
    )
        .prop_map(|(role, content)| Message { role, content })
}

/// A prompt: plain text, or a list of messages (mostly the user's), as `messages` says.
fn prompt(messages: bool) -> BoxedStrategy<Content> {
    if messages {
        vec(message("user"), 0..3)
            .prop_map(Content::Messages)
            .boxed()
    } else {
        any_text(16).prop_map(Content::Text).boxed()
    }
}

/// A completion: plain text, or a list of messages (mostly one or two of the assistant's).
fn content(messages: bool) -> BoxedStrategy<Content> {
    if messages {
        prop_oneof![
            12 => vec(message("assistant"), 1..3),
            1 => Just(Vec::new()),
        ]
        .prop_map(Content::Messages)
        .boxed()
    } else {
        any_text(16).prop_map(Content::Text).boxed()
    }
}

/// Keys the parsers look for, so that random objects reach past the first field check.
const KEYS: [&str; 28] = [
    "prompt",
    "chosen",
    "rejected",
    "conversations",
    "from",
    "value",
    "role",
    "content",
    "messages",
    "completions",
    "responses",
    "ranks",
    "scores",
    "label",
    "kto_tag",
    "id",
    "margin",
    "system",
    "instruction",
    "response",
    "overall_score",
    "chosen_messages",
    "rejected_messages",
    "type",
    "text",
    "completion",
    "rating",
    "score",
];

/// A JSON scalar, with the role names and transcript markers the parsers look for.
fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..4).prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON numbers are finite", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        select(vec![
            "human",
            "gpt",
            "user",
            "assistant",
            "system",
            "text",
            "image_url",
            "\n\nHuman: hi\n\nAssistant: yes",
            "\n\nHuman: hi\n\nAssistant: no",
        ])
        .prop_map(Value::from),
        any_text(8).prop_map(Value::from),
    ]
}

/// Any JSON value up to 4 levels deep, objects keyed by [`KEYS`].
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((select(KEYS.to_vec()), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

/// A valid record of each format (checked by `every_template_parses_in_some_format`), to be
/// mutated.
fn templates() -> Vec<Value> {
    let turn = |from: &str, value: &str| json!({"from": from, "value": value});
    let msg = |role: &str, content: &str| json!({"role": role, "content": content});
    vec![
        json!({"prompt": "p", "chosen": "c", "rejected": "r", "id": 1, "margin": 0.5}),
        json!({"chosen": [msg("user", "q"), msg("assistant", "a")],
               "rejected": [msg("user", "q"), msg("assistant", "b")]}),
        json!({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}),
        json!({"conversations": [turn("human", "q")], "chosen": turn("gpt", "a"),
               "rejected": turn("gpt", "b"), "system": "s"}),
        json!({"chosen_messages": [msg("user", "q"), msg("assistant", "a")],
               "rejected_messages": [msg("user", "q"),
                   {"role": "assistant", "content": [{"type": "text", "text": "b"}]}]}),
        json!({"prompt": "p", "completions": [{"response": "a", "overall_score": 3},
                                              {"response": "b", "overall_score": 1}]}),
        json!({"prompt": "p", "responses": ["a", "b", "c"], "ranks": [0, 1, 1]}),
        json!({"prompt": "p", "responses": ["a", "b"], "scores": [0.5, 2.0]}),
        json!({"prompt": "p", "completion": "c", "label": true}),
        json!({"messages": [msg("user", "q"), msg("assistant", "a")], "kto_tag": 0}),
    ]
}

/// A valid record with some top-level fields replaced by random values or removed.
fn mutated_record() -> impl Strategy<Value = Value> {
    (select(templates()), vec(0u8..10, 6), vec(json_value(), 6)).prop_map(
        |(mut record, choices, randoms)| {
            if let Value::Object(o) = &mut record {
                let keys: Vec<String> = o.keys().cloned().collect();
                for ((key, choice), random) in keys.iter().zip(choices).zip(randoms) {
                    match choice {
                        0 => {
                            o.remove(key);
                        }
                        1 => {
                            o.insert(key.clone(), random);
                        }
                        _ => {}
                    }
                }
            }
            record
        },
    )
}

/// Mutations start from records some parser accepts.
#[test]
fn every_template_parses_in_some_format() {
    for t in templates() {
        let parsed = InputFormat::ALL
            .iter()
            .filter(|(_, f)| parse_record(*f, &t).is_ok())
            .count();
        assert!(parsed > 0, "{t}");
    }
}

/// A template, a mutated template, a random object with the parsers' keys, or any JSON value.
fn record() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => select(templates()),
        3 => mutated_record(),
        1 => vec((select(KEYS.to_vec()), json_value()), 0..6)
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        1 => json_value(),
    ]
}

// ---------------------------------------------------------------------------------------------
// (a) Record parsers.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// 256 cases: every format's parser, then validation and pairing of what it parsed, on one
    /// random record: an error or a row, never a panic.
    #[test]
    fn parsers_never_panic_on_random_records(v in record(), seed in any::<u64>()) {
        for (_, format) in InputFormat::ALL {
            match parse_record(format, &v) {
                Err(reason) => prop_assert!(!reason.is_empty()),
                Ok(Parsed::Pair(p)) => {
                    let _ = p.validate();
                }
                Ok(Parsed::Unpaired(r)) => {
                    let _ = r.validate();
                }
                Ok(Parsed::List(row)) => {
                    if row.validate().is_ok() {
                        let pairs = all_pairs(&row);
                        for p in &pairs {
                            let _ = p.validate();
                        }
                        let mut rng = StdRng::seed_from_u64(seed);
                        let best = best_vs_random(&row, &mut rng);
                        prop_assert_eq!(best.is_none(), pairs.is_empty());
                        if let Ranking::Scores(s) = &row.ranking {
                            prop_assert_eq!(ranks_from_scores(s).len(), s.len());
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) `convert` on corrupted files.

/// One line of a JSON Lines file (without its newline): valid, broken, or blank.
fn jsonl_line() -> impl Strategy<Value = Vec<u8>> {
    let valid = (
        any_text(10),
        any_text(10),
        any_text(10),
        prop_oneof![Just(None), any::<u32>().prop_map(Some)],
    )
        .prop_map(|(p, c, r, id)| {
            let mut v = json!({"prompt": p, "chosen": c, "rejected": r});
            if let Some(id) = id {
                v["id"] = json!(id);
            }
            v.to_string().into_bytes()
        });
    let chat = (any_text(8), any_text(8)).prop_map(|(q, a)| {
        json!({"prompt": [{"role": "user", "content": q}],
               "chosen": [{"role": "assistant", "content": a}],
               "rejected": [{"role": "assistant", "content": "no"}]})
        .to_string()
        .into_bytes()
    });
    let ranking = (any_text(8), vec((any_text(6), 0i64..3), 0..5)).prop_map(|(p, rs)| {
        let (responses, ranks): (Vec<String>, Vec<i64>) = rs.into_iter().unzip();
        json!({"prompt": p, "responses": responses, "ranks": ranks})
            .to_string()
            .into_bytes()
    });
    let kto = (any_text(8), any_text(8), any::<bool>()).prop_map(|(p, c, l)| {
        json!({"prompt": p, "completion": c, "label": l})
            .to_string()
            .into_bytes()
    });
    let good = prop_oneof![4 => valid, 1 => chat, 1 => kto, 2 => ranking];
    prop_oneof![
        6 => good.clone(),
        // Truncated: a valid line cut anywhere.
        2 => (good.clone(), any::<prop::sample::Index>()).prop_map(|(l, at)| {
            let cut = at.index(l.len() + 1);
            l[..cut].to_vec()
        }),
        // Invalid UTF-8 inserted anywhere.
        2 => (good, any::<prop::sample::Index>(), select(vec![0xffu8, 0xc3, 0x80, 0xfe]))
            .prop_map(|(mut l, at, b)| {
                let i = at.index(l.len() + 1);
                l.insert(i, b);
                l
            }),
        // Wrong types, random shapes.
        2 => record().prop_map(|v| v.to_string().into_bytes()),
        // Random bytes (no newline) and blank lines.
        1 => vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..16),
        1 => Just(b"   ".to_vec()),
    ]
}

/// Lines of the file that hold a record (JSON Lines skips blank ones).
fn records_in(bytes: &[u8]) -> u64 {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count() as u64
}

/// Lines of a rejects file (0 when there is none).
fn lines_of(path: &Path) -> u64 {
    std::fs::read(path)
        .map(|b| b.split(|&c| c == b'\n').filter(|l| !l.is_empty()).count() as u64)
        .unwrap_or(0)
}

/// Rows in a converted file, read back with the reader of its kind.
fn rows_in(path: &Path, kind: Output) -> u64 {
    let b = ReaderBuilder::new().path(path);
    match kind {
        Output::Pairs => b.pairs().unwrap().map(Result::unwrap).count() as u64,
        Output::Unpaired => b.unpaired().unwrap().map(Result::unwrap).count() as u64,
        Output::Listwise => b.listwise().unwrap().map(Result::unwrap).count() as u64,
    }
}

/// The kind of rows a conversion writes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Output {
    Pairs,
    Unpaired,
    Listwise,
}

/// A format, its pairing, whether it writes unpaired rows, and the kind of rows that gives.
fn conversion() -> impl Strategy<Value = (InputFormat, Option<Pairing>, bool, Output)> {
    select(vec![
        (InputFormat::Trl, None, false, Output::Pairs),
        (InputFormat::Trl, None, true, Output::Unpaired),
        (InputFormat::HhRlhf, None, false, Output::Pairs),
        (InputFormat::Kto, None, false, Output::Unpaired),
        (
            InputFormat::Ranking,
            Some(Pairing::AllPairs),
            false,
            Output::Pairs,
        ),
        (
            InputFormat::Ranking,
            Some(Pairing::BestVsRandom),
            false,
            Output::Pairs,
        ),
        (
            InputFormat::Ranking,
            Some(Pairing::BestVsRandom),
            true,
            Output::Unpaired,
        ),
        (
            InputFormat::Ranking,
            Some(Pairing::Listwise),
            false,
            Output::Listwise,
        ),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// 96 cases: a random file of up to 24 records, as JSON Lines or (one in four) as a JSON
    /// array, possibly cut short, converted by one of eight format / pairing / output
    /// combinations, with rejects allowed or not: never a panic; `read == written + rejected`
    /// (and, for JSON Lines, one record per non-blank line), one rejects line per reject, the
    /// output holds `output_rows` rows; when rejects are not allowed and some happened, the
    /// conversion fails with those counts and leaves no output; no temporary file is left.
    #[test]
    fn convert_accounts_for_every_record(
        lines in vec(jsonl_line(), 1..24),
        (format, pairing, unpaired, kind) in conversion(),
        allow_rejects in any::<bool>(),
        array in prop_oneof![3 => Just(None), 1 => any::<bool>().prop_map(Some)],
        trailing_newline in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let mut bytes = match array {
            // `Some(closed)`: a JSON array, with or without its closing bracket.
            Some(closed) => {
                let mut b = b"[".to_vec();
                b.extend(lines.join(&b","[..]));
                if closed {
                    b.push(b']');
                }
                b
            }
            None => lines.join(&b'\n'),
        };
        if trailing_newline {
            bytes.push(b'\n');
        }
        std::fs::write(&input, &bytes).unwrap();
        let out = dir.path().join("out.parquet");
        let mut opts = ConvertOptions::new(format, &out);
        opts.pairing = pairing;
        opts.unpaired = unpaired;
        opts.allow_rejects = allow_rejects;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        // A file whose first byte is `[` is read as one JSON array, not line by line.
        let json_lines = first != Some(&b'[');
        match convert(std::slice::from_ref(&input), &out, &opts) {
            Ok(report) => {
                prop_assert_eq!(report.read, report.written + report.rejected);
                if json_lines {
                    prop_assert_eq!(report.read, records_in(&bytes));
                }
                prop_assert_eq!(lines_of(&opts.rejects), report.rejected);
                prop_assert_eq!(report.rejects_path.is_some(), report.rejected > 0);
                prop_assert!(allow_rejects || report.rejected == 0);
                prop_assert!(report.output_rows >= report.written);
                prop_assert_eq!(rows_in(&out, kind), report.output_rows);
            }
            Err(DataError::Rejected { read, rejected, .. }) => {
                prop_assert!(!allow_rejects && rejected > 0 && rejected <= read);
                if json_lines {
                    prop_assert_eq!(read, records_in(&bytes));
                }
                prop_assert_eq!(lines_of(&opts.rejects), rejected);
                prop_assert!(!out.exists());
            }
            Err(DataError::EmptyInput(_)) => prop_assert!(first.is_none()),
            Err(e) => prop_assert!(false, "unexpected error: {e}"),
        }
        let left: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .collect();
        prop_assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// (c) Parquet round trips.

/// A finite float (NaN would not compare equal after the round trip).
fn finite_f32() -> impl Strategy<Value = f32> {
    prop_oneof![-1e6f32..1e6f32, Just(0.0f32), Just(-0.0f32)]
}

/// `None` when the file has no such column, else `None` or a value.
fn opt<T: std::fmt::Debug + Clone + 'static>(
    on: bool,
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    if on {
        prop_oneof![Just(None), s.prop_map(Some)].boxed()
    } else {
        Just(None).boxed()
    }
}

/// Up to 39 pairwise rows that fit `schema`.
fn pair_rows(schema: PairSchema) -> impl Strategy<Value = Vec<PreferencePair>> {
    let row = (
        opt(schema.id, any_text(6)),
        prompt(schema.messages),
        content(schema.messages),
        content(schema.messages),
        opt(schema.margin, finite_f32()),
        opt(schema.ref_logps, finite_f32()),
        opt(schema.ref_logps, finite_f32()),
    )
        .prop_map(
            |(id, prompt, chosen, rejected, margin, rc, rr)| PreferencePair {
                id,
                prompt,
                chosen,
                rejected,
                margin,
                ref_chosen_logp: rc,
                ref_rejected_logp: rr,
            },
        );
    vec(row, 0..40)
}

/// Any pairwise file layout.
fn pair_schema() -> impl Strategy<Value = PairSchema> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(messages, id, margin, ref_logps)| PairSchema {
            messages,
            id,
            margin,
            ref_logps,
        },
    )
}

/// Up to 29 listwise rows that fit `schema`.
fn list_rows(schema: ListwiseSchema) -> impl Strategy<Value = Vec<ListwiseRow>> {
    let row = (0usize..5).prop_flat_map(move |n| {
        let ranking = if schema.scores {
            vec(-1e9f64..1e9f64, n).prop_map(Ranking::Scores).boxed()
        } else {
            vec(any::<i64>(), n).prop_map(Ranking::Ranks).boxed()
        };
        (
            opt(schema.id, any_text(6)),
            prompt(schema.messages),
            vec(content(schema.messages), n),
            ranking,
            opt(schema.ref_logps, vec(finite_f32(), n)),
        )
            .prop_map(|(id, prompt, responses, ranking, ref_logps)| ListwiseRow {
                id,
                prompt,
                responses,
                ranking,
                ref_logps,
            })
    });
    vec(row, 0..30)
}

/// Up to 39 unpaired rows that fit `schema`.
fn unpaired_rows(schema: UnpairedSchema) -> impl Strategy<Value = Vec<UnpairedRow>> {
    let row = (
        opt(schema.id, any_text(6)),
        prompt(schema.messages),
        content(schema.messages),
        any::<bool>(),
        opt(schema.ref_logps, finite_f32()),
        opt(schema.ref_logps, finite_f32()),
    )
        .prop_map(
            |(id, prompt, completion, label, ref_logp, ref_kl_logp)| UnpairedRow {
                id,
                prompt,
                completion,
                label,
                ref_logp,
                ref_kl_logp,
            },
        );
    vec(row, 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// 64 cases: random pairwise rows (text or messages, optional id, margin, reference
    /// log-probs) written and read back in random batch sizes: the same rows, in order.
    #[test]
    fn pairs_round_trip(
        (schema, rows) in pair_schema().prop_flat_map(|s| (Just(s), pair_rows(s))),
        batch in 1usize..9,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pairs.parquet");
        let mut w = PairWriter::create(&path, schema).unwrap();
        for r in &rows {
            w.write(r.clone()).unwrap();
        }
        prop_assert_eq!(w.finish().unwrap(), rows.len() as u64);
        let back: Vec<PreferencePair> = ReaderBuilder::new()
            .path(&path)
            .batch_size(batch)
            .pairs()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(back, rows);
    }

    /// 64 cases: random listwise rows (0 to 4 responses, ranks or scores, optional reference
    /// log-probs) round trip.
    #[test]
    fn listwise_rows_round_trip(
        (schema, rows) in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(messages, id, scores, ref_logps)| ListwiseSchema {
                messages,
                id,
                scores,
                ref_logps,
            })
            .prop_flat_map(|s| (Just(s), list_rows(s))),
        batch in 1usize..9,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lists.parquet");
        let mut w = ListwiseWriter::create(&path, schema).unwrap();
        for r in &rows {
            w.write(r.clone()).unwrap();
        }
        prop_assert_eq!(w.finish().unwrap(), rows.len() as u64);
        let back: Vec<ListwiseRow> = ReaderBuilder::new()
            .path(&path)
            .batch_size(batch)
            .listwise()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(back, rows);
    }

    /// 64 cases: random unpaired (KTO) rows round trip.
    #[test]
    fn unpaired_rows_round_trip(
        (schema, rows) in (any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(messages, id, ref_logps)| UnpairedSchema { messages, id, ref_logps })
            .prop_flat_map(|s| (Just(s), unpaired_rows(s))),
        batch in 1usize..9,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unpaired.parquet");
        let mut w = UnpairedWriter::create(&path, schema).unwrap();
        for r in &rows {
            w.write(r.clone()).unwrap();
        }
        prop_assert_eq!(w.finish().unwrap(), rows.len() as u64);
        let back: Vec<UnpairedRow> = ReaderBuilder::new()
            .path(&path)
            .batch_size(batch)
            .unpaired()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(back, rows);
    }
}

// ---------------------------------------------------------------------------------------------
// (d) Encoder and Collator.

/// The tiny GPT-2 tokenizer (400 tokens; id 0 is `<|endoftext|>`), loaded once.
fn tiny_tokenizer() -> Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER
        .get_or_init(|| {
            load_tokenizer(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/tiny_gpt2_tokenizer.json"
            ))
            .unwrap()
        })
        .clone()
}

/// ChatML, the shape most chat templates have.
const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Random lengths (from 1, or no limit), truncation side, EOS and BOS policy.
fn encoder_config() -> impl Strategy<Value = EncoderConfig> {
    (
        prop_oneof![Just(None), (1usize..24).prop_map(Some)],
        prop_oneof![1 => Just(None), 4 => (1usize..48).prop_map(Some)],
        prop_oneof![
            Just(TruncationSide::KeepStart),
            Just(TruncationSide::KeepEnd)
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(max_prompt_length, max_length, prompt_truncation, append_eos_to_text, add_bos)| {
                EncoderConfig {
                    max_prompt_length,
                    max_length,
                    prompt_truncation,
                    append_eos_to_text,
                    add_bos,
                }
            },
        )
}

/// Pairs whose contents are all text or all messages (mixed rows are refused before encoding).
fn encodable_pairs() -> impl Strategy<Value = Vec<PreferencePair>> {
    let pair = any::<bool>().prop_flat_map(|m| {
        (prompt(m), content(m), content(m)).prop_map(|(p, c, r)| PreferencePair::new(p, c, r))
    });
    vec(pair, 1..6)
}

/// Checks row `r` of a collated batch against the prompt and completion ids it was made of.
fn check_row(
    batch: &burnish_data::SequenceBatch,
    r: usize,
    prompt: &[u32],
    completion: &[u32],
) -> Result<(), TestCaseError> {
    let span = r * batch.seq_len..(r + 1) * batch.seq_len;
    let ids: Vec<i64> = batch.input_ids[span.clone()]
        .iter()
        .zip(&batch.attention_mask[span.clone()])
        .filter(|(_, m)| **m)
        .map(|(id, _)| *id)
        .collect();
    let want: Vec<i64> = prompt
        .iter()
        .chain(completion)
        .map(|&i| i64::from(i))
        .collect();
    prop_assert_eq!(ids, want);
    let completion_positions = batch.completion_mask[span.clone()]
        .iter()
        .filter(|m| **m)
        .count();
    prop_assert_eq!(completion_positions, completion.len());
    for t in span {
        prop_assert!(!batch.completion_mask[t] || batch.attention_mask[t]);
    }
    prop_assert_eq!(batch.prompt_lengths[r], prompt.len());
    prop_assert_eq!(batch.completion_lengths[r], completion.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// 128 cases: up to 5 random pairs (text or messages through a ChatML template) encoded
    /// with random lengths (`max_length` and `max_prompt_length` from 1, or none), then
    /// collated with random padding: an encode either fails or gives non-empty completions
    /// within the limits; the batch's shapes, masks and ids match the encoded rows.
    #[test]
    fn encode_and_collate_keep_their_promises(
        pairs in encodable_pairs(),
        config in encoder_config(),
        left in any::<bool>(),
        multiple in prop_oneof![Just(None), (0usize..9).prop_map(Some)],
    ) {
        let template = ChatTemplate::new(CHATML, "", "<|endoftext|>").unwrap();
        let encoder = Encoder::new(tiny_tokenizer(), Some(template), config.clone())
            .with_eos_token_id(Some(0))
            .with_bos_token_id(Some(0));
        let mut encoded = Vec::new();
        for pair in &pairs {
            let Ok(t) = encoder.encode_pair(pair) else { continue };
            for completion in [&t.chosen_ids, &t.rejected_ids] {
                prop_assert!(!completion.is_empty(), "{pair:?} gave {t:?}");
                if let Some(max) = config.max_length {
                    prop_assert!(t.prompt_ids.len() + completion.len() <= max, "{t:?}");
                }
            }
            if let Some(max) = config.max_prompt_length {
                prop_assert!(t.prompt_ids.len() <= max);
            }
            // The supervised path shares the truncation rules.
            let sft = PromptCompletion::new(pair.prompt.clone(), pair.chosen.clone());
            if let Ok(s) = encoder.encode_prompt_completion(&sft) {
                prop_assert!(!s.completion_ids.is_empty());
                if let Some(max) = config.max_length {
                    prop_assert!(s.prompt_ids.len() + s.completion_ids.len() <= max);
                }
            }
            encoded.push(t);
        }
        let side = if left { PadSide::Left } else { PadSide::Right };
        let collator = Collator::new(0).pad_side(side).pad_to_multiple_of(multiple);
        let b = collator.collate_pairs(&encoded);
        let n = encoded.len();
        prop_assert_eq!(b.batch, n);
        for len in [
            b.input_ids.len(),
            b.attention_mask.len(),
            b.completion_mask.len(),
            b.position_ids.len(),
        ] {
            prop_assert_eq!(len, 2 * n * b.seq_len);
        }
        prop_assert_eq!(b.prompt_lengths.len(), 2 * n);
        prop_assert_eq!(b.completion_lengths.len(), 2 * n);
        let longest = encoded
            .iter()
            .flat_map(|t| [t.chosen_ids.len(), t.rejected_ids.len()].map(|c| t.prompt_ids.len() + c))
            .max()
            .unwrap_or(0);
        prop_assert!(b.seq_len >= longest);
        if let Some(m) = multiple.filter(|&m| m > 1) {
            prop_assert_eq!(b.seq_len % m, 0);
            prop_assert!(b.seq_len < longest + m);
        } else {
            prop_assert_eq!(b.seq_len, longest);
        }
        let as_sequences = burnish_data::SequenceBatch {
            input_ids: b.input_ids.clone(),
            attention_mask: b.attention_mask.clone(),
            completion_mask: b.completion_mask.clone(),
            position_ids: b.position_ids.clone(),
            rows: 2 * n,
            seq_len: b.seq_len,
            prompt_lengths: b.prompt_lengths.clone(),
            completion_lengths: b.completion_lengths.clone(),
        };
        for (i, t) in encoded.iter().enumerate() {
            check_row(&as_sequences, i, &t.prompt_ids, &t.chosen_ids)?;
            check_row(&as_sequences, n + i, &t.prompt_ids, &t.rejected_ids)?;
        }
    }
}
