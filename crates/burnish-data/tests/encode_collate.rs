//! Tokenization with truncation, and collation with padding, on the GPT-2 tokenizer.

use burnish_data::{
    ChatTemplate, Collator, EncodeError, Encoder, EncoderConfig, Message, PadSide, PreferencePair,
    PromptCompletion, TokenizedPair, TruncationSide, load_tokenizer,
};

const EOS: u32 = 50256;

fn encoder(config: EncoderConfig) -> Encoder {
    let tok = load_tokenizer(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gpt2_tokenizer.json.gz"
    ))
    .unwrap();
    Encoder::new(tok, None, config)
        .with_eos_token_id(Some(EOS))
        .with_pad_token_id(Some(EOS))
}

#[test]
fn gpt2_tokenizes_like_the_reference() {
    let e = encoder(EncoderConfig::default());
    assert_eq!(
        e.tokenize("Hello world, this is a test.").unwrap(),
        vec![15496, 995, 11, 428, 318, 257, 1332, 13]
    );
}

#[test]
fn prompt_and_completion_are_tokenized_separately_with_eos() {
    let e = encoder(EncoderConfig::default());
    let t = e
        .encode_pair(&PreferencePair::new(
            "Hello world,",
            " this is a test.",
            " no.",
        ))
        .unwrap();
    assert_eq!(t.prompt_ids, vec![15496, 995, 11]);
    assert_eq!(t.chosen_ids, vec![428, 318, 257, 1332, 13, EOS]);
    assert_eq!(t.rejected_ids, vec![645, 13, EOS]);
}

#[test]
fn truncation_keeps_prompt_start_or_end_and_completion_start() {
    let pair = PreferencePair::new("Hello world, this is a test.", " A B C D", " E F");
    let cfg = |side| EncoderConfig {
        max_prompt_length: Some(3),
        max_length: Some(6),
        prompt_truncation: side,
        ..Default::default()
    };
    let start = encoder(cfg(TruncationSide::KeepStart))
        .encode_pair(&pair)
        .unwrap();
    assert_eq!(start.prompt_ids, vec![15496, 995, 11]);
    let end = encoder(cfg(TruncationSide::KeepEnd))
        .encode_pair(&pair)
        .unwrap();
    assert_eq!(end.prompt_ids, vec![257, 1332, 13]);
    // " A B C D" + EOS is 5 tokens; 6 - 3 = 3 remain, from the start.
    let full = encoder(EncoderConfig::default())
        .encode_pair(&pair)
        .unwrap();
    assert_eq!(end.chosen_ids, full.chosen_ids[..3].to_vec());
    // " E F" + EOS is exactly 3 tokens: kept whole.
    assert_eq!(end.rejected_ids, full.rejected_ids);
}

#[test]
fn a_completion_with_nothing_left_is_rejected() {
    let e = encoder(EncoderConfig {
        max_length: Some(3),
        ..Default::default()
    });
    let err = e
        .encode_pair(&PreferencePair::new(
            "Hello world, this is a test.",
            " yes",
            " no",
        ))
        .unwrap_err();
    assert!(matches!(
        err,
        EncodeError::CompletionTruncatedAway {
            which: "chosen",
            prompt_tokens: 8,
            max_length: 3
        }
    ));
    let e = encoder(EncoderConfig::default());
    assert_eq!(
        e.encode_pair(&PreferencePair::new("p", "", "x"))
            .unwrap_err(),
        EncodeError::EmptyCompletion("chosen")
    );
    let conv = PreferencePair::new(
        vec![Message::new("user", "hi")],
        vec![Message::new("assistant", "a")],
        vec![Message::new("assistant", "b")],
    );
    assert_eq!(
        e.encode_pair(&conv).unwrap_err(),
        EncodeError::NoChatTemplate
    );
}

#[test]
fn conversational_rows_use_the_template_and_no_extra_eos() {
    let tok = load_tokenizer(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gpt2_tokenizer.json.gz"
    ))
    .unwrap();
    let t = ChatTemplate::new(
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
        "",
        "",
    )
    .unwrap();
    let e = Encoder::new(tok, Some(t), EncoderConfig::default()).with_eos_token_id(Some(EOS));
    let pair = PreferencePair::new(
        vec![Message::new("user", "Hi")],
        vec![Message::new("assistant", "Hello")],
        vec![Message::new("assistant", "Bye")],
    );
    let (p, c) = e.render(&pair.prompt, &pair.chosen).unwrap();
    assert_eq!(
        (p.as_str(), c.as_str()),
        ("user: Hi\nassistant:", " Hello\n")
    );
    let ids = e.encode_pair(&pair).unwrap();
    assert_eq!(ids.chosen_ids, e.tokenize(" Hello\n").unwrap());
}

#[test]
fn parallel_encoding_keeps_order() {
    let e = encoder(EncoderConfig::default());
    let pairs: Vec<_> = (0..500)
        .map(|i| PreferencePair::new(format!("Q{i}"), format!(" yes {i}"), format!(" no {i}")))
        .collect();
    let par = e.encode_pairs(&pairs);
    for (p, r) in pairs.iter().zip(par) {
        assert_eq!(r.unwrap(), e.encode_pair(p).unwrap());
    }
}

fn tp(prompt: Vec<u32>, chosen: Vec<u32>, rejected: Vec<u32>) -> TokenizedPair {
    TokenizedPair {
        prompt_ids: prompt,
        chosen_ids: chosen,
        rejected_ids: rejected,
        margin: None,
        ref_chosen_logp: None,
        ref_rejected_logp: None,
    }
}

#[test]
fn right_padding_stacks_chosen_then_rejected() {
    let pairs = vec![
        tp(vec![1, 2], vec![3], vec![4, 5, 6]),
        tp(vec![7], vec![8, 9], vec![10]),
    ];
    let b = Collator::new(0).collate_pairs(&pairs);
    assert_eq!((b.batch, b.seq_len), (2, 5));
    #[rustfmt::skip]
    assert_eq!(b.input_ids, vec![
        1, 2, 3, 0, 0,   // pair 0 chosen
        7, 8, 9, 0, 0,   // pair 1 chosen
        1, 2, 4, 5, 6,   // pair 0 rejected
        7, 10, 0, 0, 0,  // pair 1 rejected
    ]);
    let m = |v: &[u8]| v.iter().map(|&x| x == 1).collect::<Vec<_>>();
    assert_eq!(
        b.attention_mask,
        m(&[1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    );
    assert_eq!(
        b.completion_mask,
        m(&[0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0])
    );
    assert_eq!(b.position_ids[..5], [0, 1, 2, 0, 0]);
    assert_eq!(b.completion_lengths, vec![1, 2, 3, 1]);
    assert_eq!(b.prompt_lengths, vec![2, 1, 2, 1]);
    assert_eq!(b.margins, None);
}

#[test]
fn left_padding_and_multiple_of_eight() {
    let mut a = tp(vec![1, 2], vec![3], vec![4, 5, 6]);
    a.ref_chosen_logp = Some(-1.0);
    a.ref_rejected_logp = Some(-2.0);
    let b = Collator::new(99)
        .pad_side(PadSide::Left)
        .pad_to_multiple_of(Some(8))
        .collate_pairs(&[a]);
    assert_eq!(b.seq_len, 8);
    assert_eq!(
        b.input_ids,
        vec![99, 99, 99, 99, 99, 1, 2, 3, 99, 99, 99, 1, 2, 4, 5, 6]
    );
    assert_eq!(b.position_ids[8..], [0, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(
        &b.completion_mask[8..],
        &[false, false, false, false, false, true, true, true]
    );
    assert_eq!(b.ref_chosen_logps, Some(vec![-1.0]));
    assert_eq!(b.ref_rejected_logps, Some(vec![-2.0]));
}

#[test]
fn supervised_rows_mask_only_the_completion() {
    let e = encoder(EncoderConfig::default());
    let rows = vec![PromptCompletion::new("Hello world,", " this is a test.")];
    let t: Vec<_> = e
        .encode_prompt_completions(&rows)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let b = Collator::new(EOS).collate_prompt_completions(&t);
    assert_eq!(b.rows, 1);
    assert_eq!(
        b.completion_mask,
        vec![false, false, false, true, true, true, true, true, true]
    );
    assert_eq!(
        b.input_ids,
        vec![15496, 995, 11, 428, 318, 257, 1332, 13, EOS as i64]
    );
}
