//! The VADER port against scores computed by the reference Python package (vaderSentiment 3.3.2).
//!
//! The fixture is made by `tests/fixtures/make_vader_reference.py`. Setting
//! `BURNISH_VADER_FIXTURE` to another file made by that script (e.g. with 500 IMDb reviews)
//! checks that one instead.

use burnish_ppo::sentiment::analyzer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    text: String,
    neg: f64,
    neu: f64,
    pos: f64,
    compound: f64,
}

#[test]
fn matches_the_python_reference() {
    let path = std::env::var("BURNISH_VADER_FIXTURE").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/vader_reference.json"
        )
        .to_string()
    });
    let text = std::fs::read_to_string(&path).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 30);
    let mut worst = (0.0f64, String::new());
    let mut failures = Vec::new();
    for case in &cases {
        let got = analyzer().polarity_scores(&case.text);
        // The reference rounds compound to 4 decimals and the proportions to 3.
        let err = (got.compound - case.compound).abs();
        if err > worst.0 {
            worst = (err, case.text.chars().take(60).collect());
        }
        let proportions_ok = (got.neg - case.neg).abs() <= 1e-3
            && (got.neu - case.neu).abs() <= 1e-3
            && (got.pos - case.pos).abs() <= 1e-3;
        if err > 1e-3 || !proportions_ok {
            failures.push(format!(
                "{:?}\n  got      compound {:.4} neg {:.3} neu {:.3} pos {:.3}\n  expected compound {:.4} neg {:.3} neu {:.3} pos {:.3}",
                case.text.chars().take(120).collect::<String>(),
                got.compound, got.neg, got.neu, got.pos,
                case.compound, case.neg, case.neu, case.pos
            ));
        }
    }
    eprintln!(
        "{} cases from {path}; max |compound error| {:.2e} ({:?})",
        cases.len(),
        worst.0,
        worst.1
    );
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
