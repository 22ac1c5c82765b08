//! Streaming benchmark of burnish-data (run with `cargo bench -p burnish-data --bench stream`).
//!
//! Generates pairwise Parquet files of about 128 MB and 1 GB (or `BURNISH_BENCH_GB`) in a
//! temporary folder, then streams each in a fresh child process and reports rows/s, MB/s and the
//! child's peak resident memory (VmHWM): a reader with bounded memory shows the same peak for
//! both sizes. It also measures tokenize + collate (GPT-2 tokenizer, all cores) and
//! `convert` (LLaMA-Factory rows). Not a test: timings only mean something in release builds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burnish_data::convert::{ConvertOptions, convert};
use burnish_data::formats::InputFormat;
use burnish_data::{
    ChatTemplate, Collator, Encoder, EncoderConfig, PairSchema, PairWriter, PreferencePair,
    ReaderBuilder, load_tokenizer,
};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A small xorshift generator: text that compresses like prose, not like a repeated string.
struct Words {
    state: u64,
    vocab: Vec<String>,
}

impl Words {
    fn new(seed: u64) -> Self {
        let mut w = Words {
            state: seed | 1,
            vocab: Vec::new(),
        };
        for _ in 0..5000 {
            let len = 2 + (w.next() % 9) as usize;
            let word: String = (0..len)
                .map(|_| (b'a' + (w.next() % 26) as u8) as char)
                .collect();
            w.vocab.push(word);
        }
        w
    }
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }
    fn text(&mut self, bytes: usize) -> String {
        let mut s = String::with_capacity(bytes + 16);
        while s.len() < bytes {
            let i = (self.next() % self.vocab.len() as u64) as usize;
            s.push_str(&self.vocab[i]);
            s.push(if self.next().is_multiple_of(12) {
                '.'
            } else {
                ' '
            });
        }
        s
    }
}

fn generate(path: &Path, target_bytes: u64) {
    let t = Instant::now();
    let mut words = Words::new(42);
    let mut w = PairWriter::create(
        path,
        PairSchema {
            id: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut rows = 0u64;
    while (w.bytes_written() as u64) < target_bytes {
        let mut p = PreferencePair::new(words.text(600), words.text(1500), words.text(1500));
        p.id = Some(format!("row-{rows}"));
        w.write(p).unwrap();
        rows += 1;
    }
    w.finish().unwrap();
    let size = std::fs::metadata(path).unwrap().len();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "generate {}: {rows} rows, {:.0} MB in {secs:.1} s ({:.0} rows/s, {:.0} MB/s), peak RSS {:.0} MB",
        path.display(),
        size as f64 / 1e6,
        rows as f64 / secs,
        size as f64 / 1e6 / secs,
        peak_rss_mb()
    );
}

fn read(path: &Path) {
    let t = Instant::now();
    let mut rows = 0u64;
    let mut text_bytes = 0u64;
    for r in ReaderBuilder::new().path(path).pairs().unwrap() {
        let r = r.unwrap();
        rows += 1;
        text_bytes += (r.prompt.char_len() + r.chosen.char_len() + r.rejected.char_len()) as u64;
    }
    let size = std::fs::metadata(path).unwrap().len();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "stream   {}: {rows} rows, file {:.0} MB, text {:.0} MB in {secs:.1} s: {:.0} rows/s, {:.0} MB/s (file), \
         {:.0} MB/s (text); peak RSS {:.0} MB",
        path.display(),
        size as f64 / 1e6,
        text_bytes as f64 / 1e6,
        rows as f64 / secs,
        size as f64 / 1e6 / secs,
        text_bytes as f64 / 1e6 / secs,
        peak_rss_mb()
    );
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn tokenize_collate(path: &Path) {
    let tok = load_tokenizer(fixture("gpt2_tokenizer.json.gz")).unwrap();
    let cfg = EncoderConfig {
        max_prompt_length: Some(256),
        max_length: Some(1024),
        ..Default::default()
    };
    let enc = Encoder::new(tok.clone(), None, cfg.clone()).with_eos_token_id(Some(50256));
    let collator = Collator::new(50256).pad_to_multiple_of(Some(8));
    let rows: Vec<PreferencePair> = ReaderBuilder::new()
        .path(path)
        .pairs()
        .unwrap()
        .take(8192)
        .map(Result::unwrap)
        .collect();
    let t = Instant::now();
    let mut tokens = 0usize;
    for chunk in rows.chunks(64) {
        let tp: Vec<_> = enc
            .encode_pairs(chunk)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let b = collator.collate_pairs(&tp);
        tokens += b.attention_mask.iter().filter(|&&m| m).count();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "tokenize+collate (text pairs, ~3.6 kB each, GPT-2 BPE, {} threads, batches of 64): {} pairs in {secs:.2} s: \
         {:.0} pairs/s, {:.0} tokens/s",
        rayon::current_num_threads(),
        rows.len(),
        rows.len() as f64 / secs,
        tokens as f64 / secs
    );

    // Conversational rows through the Qwen3 chat template (GPT-2 BPE stands in for Qwen3's).
    let template =
        ChatTemplate::from_tokenizer_config(fixture("qwen3_tokenizer_config.json")).unwrap();
    let enc = Encoder::new(tok, Some(template), cfg).with_eos_token_id(Some(50256));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lf.parquet");
    convert(
        &[fixture("llamafactory_dpo_en_demo.json")],
        &out,
        &ConvertOptions::new(InputFormat::ShareGpt, &out),
    )
    .unwrap();
    let base: Vec<PreferencePair> = ReaderBuilder::new()
        .path(&out)
        .pairs()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let rows: Vec<PreferencePair> = base.iter().cycle().take(3000).cloned().collect();
    let t = Instant::now();
    let mut ok = 0;
    for chunk in rows.chunks(64) {
        let tp: Vec<_> = enc
            .encode_pairs(chunk)
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        ok += tp.len();
        let _ = collator.collate_pairs(&tp);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "tokenize+collate (LLaMA-Factory conversations, Qwen3 template + GPT-2 BPE): {} pairs ({ok} within max_length) \
         in {secs:.2} s: {:.0} pairs/s",
        rows.len(),
        rows.len() as f64 / secs
    );
}

fn convert_bench(dir: &Path) {
    // 100 copies of the 300-row LLaMA-Factory sample as JSON Lines.
    let rows: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixture("llamafactory_dpo_en_demo.json")).unwrap(),
    )
    .unwrap();
    let input = dir.join("lf.jsonl");
    let mut text = String::new();
    for _ in 0..100 {
        for r in &rows {
            text.push_str(&r.to_string());
            text.push('\n');
        }
    }
    std::fs::write(&input, &text).unwrap();
    let out = dir.join("lf.parquet");
    let t = Instant::now();
    let report = convert(
        &[input],
        &out,
        &ConvertOptions::new(InputFormat::ShareGpt, &out),
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "convert sharegpt JSONL -> Parquet: {} rows ({:.0} MB) in {secs:.2} s: {:.0} rows/s, {:.0} MB/s, rejected {}",
        report.read,
        text.len() as f64 / 1e6,
        report.read as f64 / secs,
        text.len() as f64 / 1e6 / secs,
        report.rejected
    );
}

fn child(mode: &str, path: &Path, extra: &str) {
    let status = Command::new(std::env::current_exe().unwrap())
        .env("BURNISH_BENCH_MODE", mode)
        .env("BURNISH_BENCH_PATH", path)
        .env("BURNISH_BENCH_BYTES", extra)
        .status()
        .unwrap();
    assert!(status.success(), "{mode} failed");
}

fn main() {
    if let Ok(mode) = std::env::var("BURNISH_BENCH_MODE") {
        let path = PathBuf::from(std::env::var("BURNISH_BENCH_PATH").unwrap());
        match mode.as_str() {
            "gen" => generate(
                &path,
                std::env::var("BURNISH_BENCH_BYTES")
                    .unwrap()
                    .parse()
                    .unwrap(),
            ),
            "read" => read(&path),
            "tokenize" => tokenize_collate(&path),
            "convert" => convert_bench(&path),
            other => panic!("unknown mode {other}"),
        }
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        // Only `cargo bench` passes --bench: `cargo test --all-targets` must not write a gigabyte.
        return;
    }
    let gb: f64 = std::env::var("BURNISH_BENCH_GB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let base = std::env::var("BURNISH_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = tempfile::tempdir_in(base).unwrap();
    let small = dir.path().join("pairs-128mb.parquet");
    let big = dir.path().join("pairs-1gb.parquet");
    child("gen", &small, &(128u64 << 20).to_string());
    child(
        "gen",
        &big,
        &((gb * (1u64 << 30) as f64) as u64).to_string(),
    );
    child("read", &small, "");
    child("read", &big, "");
    child("tokenize", &small, "");
    child("convert", dir.path(), "");
}
