//! The Qwen3 chat template from its tokenizer_config.json, rendered as Hugging Face renders it.

use burnish_data::{ChatTemplate, Message};

fn qwen3() -> ChatTemplate {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/qwen3_tokenizer_config.json"
    );
    ChatTemplate::from_tokenizer_config(path).expect("template compiles")
}

fn conversation() -> (Vec<Message>, Vec<Message>) {
    (
        vec![
            Message::new("system", "You are a helpful assistant."),
            Message::new("user", "What is 2+2?"),
        ],
        vec![Message::new("assistant", "2+2 equals 4.")],
    )
}

#[test]
fn qwen3_prompt_and_completion_are_the_exact_template_text() {
    let t = qwen3();
    let (prompt, completion) = conversation();
    // Expected strings produced by Python jinja2 (trim_blocks, lstrip_blocks) on the same template.
    let (p, c) = t.render_prompt_completion(&prompt, &completion).unwrap();
    assert_eq!(
        p,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(c, "<think>\n\n</think>\n\n2+2 equals 4.<|im_end|>\n");
    assert_eq!(t.eos_token(), "<|im_end|>");
}

#[test]
fn qwen3_without_generation_prompt_and_with_thinking_split() {
    let t = qwen3();
    let msgs = vec![
        Message::new("user", "Hi"),
        Message::new("assistant", "<think>\nhmm\n</think>\n\nHello"),
    ];
    let text = t.render(&msgs, false).unwrap();
    // The template moves reasoning into its own block via Python's split/strip methods.
    assert_eq!(
        text,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nhmm\n</think>\n\nHello<|im_end|>\n"
    );
    let gen_prompt = t.render(&msgs[..1], true).unwrap();
    assert_eq!(
        gen_prompt,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn raise_exception_and_missing_template_are_errors() {
    let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").unwrap();
    let err = t.render(&[Message::new("user", "x")], true).unwrap_err();
    assert!(err.to_string().contains("no system role"), "{err}");
    let e =
        ChatTemplate::from_tokenizer_config_str("{\"eos_token\": \"x\"}", "cfg.json").unwrap_err();
    assert!(
        e.to_string().contains("cfg.json") && e.to_string().contains("chat_template"),
        "{e}"
    );
}
