//! Property test of the command-line argument paths: random argument lists built from every
//! subcommand, its flags and hostile values (missing, empty, directory and corrupt files,
//! negative, huge, non-finite and non-numeric numbers, random config files) never make
//! `burnish` panic. Every run ends with status 0 (success), 1 (one-line error) or 2 (clap's
//! usage error), never 101, and stderr never holds a panic message or the bug notice.
//! 64 cases, each a process (about a second in release).

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;

fn gpt2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../burnish-model/tests/fixtures/hf/gpt2")
}

/// Files the values may name, made once per case in `dir`.
struct Files {
    corrupt: PathBuf,
    empty: PathBuf,
    config: PathBuf,
    dir: PathBuf,
}

fn files(dir: &Path, junk: &[u8], config: &str) -> Files {
    let corrupt = dir.join("corrupt.parquet");
    std::fs::write(&corrupt, junk).unwrap();
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, config).unwrap();
    Files {
        corrupt,
        empty,
        config: cfg,
        dir: dir.to_path_buf(),
    }
}

/// What a flag takes.
#[derive(Clone, Copy)]
enum Kind {
    /// A file or folder to read.
    Path,
    /// A file to write: always inside the case's temporary folder, so no case writes into the
    /// repository (an existing file there, the folder itself, or a new name).
    OutPath,
    /// Free text (a prompt, a completion).
    Text,
    /// A number.
    Number,
    /// A `--from` format name.
    Format,
    /// A `--set key=value` override.
    Set,
    /// A positional file argument.
    Positional,
}

/// Each subcommand with its required flags (always given, so clap accepts the list and the
/// command's own validation is what runs) and optional ones (each given or not).
type Spec = (
    &'static [&'static str],
    &'static [(&'static str, Kind)],
    &'static [(&'static str, Kind)],
);

const SUBCOMMANDS: [Spec; 11] = [
    (
        &["logprobs"],
        &[
            ("--model", Kind::Path),
            ("--prompt", Kind::Text),
            ("--completion", Kind::Text),
        ],
        &[("--batch-size", Kind::Number)],
    ),
    (
        &["logprobs"],
        &[("--model", Kind::Path), ("--input", Kind::Path)],
        &[("--batch-size", Kind::Number)],
    ),
    (
        &["generate"],
        &[("--model", Kind::Path), ("--prompt", Kind::Text)],
        &[
            ("--max-new-tokens", Kind::Number),
            ("--temperature", Kind::Number),
            ("--top-k", Kind::Number),
            ("--top-p", Kind::Number),
        ],
    ),
    (
        &["eval"],
        &[("--model", Kind::Path), ("--data", Kind::Path)],
        &[
            ("--max-length", Kind::Number),
            ("--max-prompt-length", Kind::Number),
            ("--batch-size", Kind::Number),
        ],
    ),
    (
        &["inspect"],
        &[("", Kind::Positional)],
        &[("--tokenizer", Kind::Path)],
    ),
    (
        &["convert"],
        &[
            ("--from", Kind::Format),
            ("--input", Kind::Path),
            ("--output", Kind::OutPath),
        ],
        &[
            ("--column", Kind::Set),
            ("--split", Kind::Text),
            ("--max-length", Kind::Number),
        ],
    ),
    (
        &["precompute-ref"],
        &[
            ("--model", Kind::Path),
            ("--input", Kind::Path),
            ("--output", Kind::OutPath),
        ],
        &[
            ("--max-length", Kind::Number),
            ("--batch-size", Kind::Number),
        ],
    ),
    (
        &["train", "dpo"],
        &[("--config", Kind::Path)],
        &[("--set", Kind::Set), ("--set", Kind::Set)],
    ),
    (
        &["train", "kto"],
        &[("--config", Kind::Path)],
        &[("--set", Kind::Set)],
    ),
    (
        &["train", "reward"],
        &[("--config", Kind::Path)],
        &[("--set", Kind::Set)],
    ),
    (
        &["train", "sft"],
        &[("--config", Kind::Path)],
        &[("--set", Kind::Set), ("--set", Kind::Set)],
    ),
];

/// A value of `kind`: a path of each sort, a hostile number, a format, an override, or text.
fn value(files: &Files, kind: Kind, pick: u8, text: &str) -> String {
    let path = |p: &Path| p.display().to_string();
    match kind {
        Kind::Path | Kind::Positional => match pick % 8 {
            0 | 1 => path(&gpt2()),
            2 => path(&files.corrupt),
            3 => path(&files.empty),
            4 => path(&files.dir),
            5 => path(&files.config),
            6 => path(&files.dir.join("missing.parquet")),
            _ => path(&gpt2().join("tokenizer.json")),
        },
        Kind::OutPath => match pick % 4 {
            0 => path(&files.corrupt),
            1 => path(&files.config),
            2 => path(&files.dir),
            _ => path(&files.dir.join("out.parquet")),
        },
        Kind::Number => [
            "0",
            "1",
            "2",
            "-1",
            "18446744073709551615",
            "1e999",
            "NaN",
            "0.5",
            text,
        ][pick as usize % 9]
            .to_string(),
        Kind::Format => ["trl", "kto", "ranking", "sharegpt", text][pick as usize % 5].to_string(),
        Kind::Set => [
            "data.max_length=1",
            "optimizer.eps=1e-300",
            "train.batch_size=0",
            "loss.loss_type=orpo",
            "data.train=missing.parquet",
            "prompt=question",
            text,
        ][pick as usize % 7]
            .to_string(),
        Kind::Text => {
            ["", "a", "The film", "caf\u{e9}\t\u{7f}", text][pick as usize % 5].to_string()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_argument_list_makes_burnish_panic(
        sub in 0..SUBCOMMANDS.len(),
        picks in proptest::collection::vec((any::<u8>(), any::<bool>(), "[a-z.=_ ]{0,12}"), 8),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
        config in "[\\[\\]a-z_=. 0-9\"\n]{0,80}",
        gpt2_config in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        // Half the configs are a real run's, the other half random text.
        let config = if gpt2_config {
            format!(
                "[model]\npath = {:?}\n[data]\ntrain = {:?}\n[loss]\n",
                gpt2().display().to_string(),
                dir.path().join("corrupt.parquet").display().to_string()
            )
        } else {
            config
        };
        let files = files(dir.path(), &junk, &config);
        let (words, required, optional) = SUBCOMMANDS[sub];
        let mut argv: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        let mut picks = picks.into_iter();
        let flags = required.iter().map(|f| (f, true)).chain(optional.iter().map(|f| (f, false)));
        for ((flag, kind), needed) in flags {
            let Some((pick, given, text)) = picks.next() else { break };
            if !needed && !given {
                continue;
            }
            if !flag.is_empty() {
                argv.push(flag.to_string());
            }
            argv.push(value(&files, *kind, pick, &text));
        }
        // A run that happens to be valid must stay tiny and inside the temporary folder.
        if words[0] == "train" {
            argv.extend([
                "--quiet".to_string(),
                "--set".to_string(),
                "train.max_steps=1".to_string(),
                "--set".to_string(),
                format!("train.output_dir={}", dir.path().join("run").display()),
            ]);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_burnish"))
            .args(&argv)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        prop_assert!(
            matches!(code, Some(0..=2)),
            "{argv:?} exited with {code:?}: {stderr}"
        );
        prop_assert!(
            !stderr.contains("panicked") && !stderr.contains("is a bug"),
            "{argv:?}: {stderr}"
        );
    }
}
