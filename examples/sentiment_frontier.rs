//! # The DPO paper's reward-KL frontier, small, on a CPU
//!
//! Rafailov et al. (2023, §6.1, Figure 2) compare alignment methods on controlled sentiment by
//! the frontier they trace: each run's mean gold reward against its KL(policy || reference).
//! This example runs the whole comparison on the quickstart's setup (shipped IMDb subset, the
//! small SFT model as the reference, VADER as the gold reward, pairs labelled by it):
//!
//! - **DPO** at beta 0.05, 0.1, 0.3 and 1.0;
//! - **preferred-FT** (SFT on the chosen samples) and **unlikelihood**, the paper's baselines;
//! - **PPO** against a Bradley-Terry reward model trained on the same pairs, at three KL
//!   coefficients, and **PPO-GT**, PPO given VADER itself, at the same three.
//!
//! Every run is scored on the same held-out prefixes: mean gold reward of one sample per
//! prefix, win rate against the reference's sample, and KL(policy || reference) estimated on
//! the policy's samples with the k1 estimator (`log p - log p_ref` summed over the sample's
//! tokens, averaged). The reference, the pairs and the reward model are shared; each run is
//! repeated with `--seeds N` training seeds (data order, PPO's sampling).
//!
//! `cargo run --release --example sentiment_frontier` (about 25 minutes on 2 cores with the
//! default 2 seeds); `-- --quick` runs one point per method with tiny budgets, a smoke test of
//! the same code path. Output in `runs/frontier/` (`--quick`: `runs/frontier-quick/`):
//! `frontier.json`, `frontier.svg`, `table.md`; `-- --plot-only` redraws the last two from the
//! first.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burnish::backend::{DeviceKind, TrainJob, dispatch_train};
use burnish::burn::module::AutodiffModule;
use burnish::losses::PreferenceLoss;
use burnish::model::{CausalLm, ModelAutodiffBackend};
use burnish::ppo::{RewardFunction, TextReward};
use burnish::sentiment_task::{Comparison, SentimentTask, print_done};
use burnish::train::plot::{LineChart, Series, pareto_frontier};
use common::section;
use serde::{Deserialize, Serialize};

/// The budget of one run of the figure.
struct Plan {
    out: &'static str,
    sft_steps: u64,
    pair_prefixes: usize,
    eval_prefixes: usize,
    betas: Vec<f64>,
    epochs: u64,
    kl_coefs: Vec<f64>,
    ppo_updates: u64,
    seeds: u64,
    /// Redraw `frontier.svg` and `table.md` from `frontier.json` without training.
    plot_only: bool,
    /// Run only these methods (`--only DPO,KTO`); all when empty.
    only: Vec<String>,
}

impl Plan {
    fn from_args() -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let plot_only = args.iter().any(|a| a == "--plot-only");
        let seeds = match args.iter().position(|a| a == "--seeds") {
            Some(i) => args
                .get(i + 1)
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| anyhow::anyhow!("--seeds takes a positive number"))?,
            None if quick => 1,
            None => 2,
        };
        let mut only = Vec::new();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            match arg.as_str() {
                "--quick" | "--plot-only" => {}
                "--seeds" => {
                    rest.next();
                }
                "--only" => {
                    let list = rest.next().map(String::as_str).unwrap_or_default();
                    only = list.split(',').map(str::to_string).collect();
                    if let Some(bad) = only.iter().find(|m| !METHODS.contains(&m.as_str())) {
                        anyhow::bail!(
                            "--only: unknown method {bad:?} (methods: {})",
                            METHODS.join(", ")
                        );
                    }
                }
                other => anyhow::bail!(
                    "unknown argument {other:?} (expected --quick, --seeds N, --only METHOD,..., --plot-only)"
                ),
            }
        }
        let subset = !only.is_empty();
        let mut plan = if quick {
            Plan {
                out: "runs/frontier-quick",
                sft_steps: 40,
                pair_prefixes: 96,
                eval_prefixes: 32,
                betas: vec![0.1],
                epochs: 1,
                kl_coefs: vec![0.05],
                ppo_updates: 2,
                seeds,
                plot_only,
                only,
            }
        } else {
            Plan {
                out: "runs/frontier",
                sft_steps: 500,
                pair_prefixes: 2000,
                eval_prefixes: 256,
                betas: vec![0.05, 0.1, 0.3, 1.0],
                epochs: 3,
                kl_coefs: vec![0.02, 0.05, 0.2],
                ppo_updates: 60,
                seeds,
                plot_only,
                only,
            }
        };
        // A subset of the methods goes to its own folder, so it never overwrites the figure.
        if subset {
            plan.out = if quick {
                "runs/frontier-quick-subset"
            } else {
                "runs/frontier-subset"
            };
        }
        Ok(plan)
    }
}

/// One point of the figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Point {
    method: String,
    hyper_parameter: String,
    value: f64,
    seed: u64,
    reward: f64,
    kl: f64,
    win_rate: f64,
    seconds: f64,
}

fn point(method: &str, hyper: &str, value: f64, seed: u64, c: &Comparison, seconds: f64) -> Point {
    println!(
        "  {method:<13} {hyper} = {value:<5} seed {seed}: gold reward {:+.3}, win rate {:5.1}%, KL {:6.2} nats ({seconds:.0}s)",
        c.policy_reward,
        100.0 * c.win_rate,
        c.kl
    );
    Point {
        method: method.into(),
        hyper_parameter: hyper.into(),
        value,
        seed,
        reward: c.policy_reward,
        kl: c.kl,
        win_rate: c.win_rate,
        seconds,
    }
}

/// The methods in the order of the legend and the table.
const METHODS: [&str; 7] = [
    "DPO",
    "PPO",
    "PPO-GT",
    "preferred-FT",
    "unlikelihood",
    "KTO",
    "ORPO",
];

impl Plan {
    /// Whether `--only` (if given) names `method`.
    fn runs(&self, method: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|m| m == method)
    }
}

fn loss(json: serde_json::Value) -> anyhow::Result<PreferenceLoss> {
    Ok(serde_json::from_value(json)?)
}

/// Mean and half-range over seeds of each (method, hyper-parameter) as a Markdown table.
fn table(points: &[Point], reference_reward: f64) -> String {
    let mut rows = vec![
        "| method | hyper-parameter | seeds | gold reward | win rate | KL (nats) |".to_string(),
        "|---|---|---|---|---|---|".to_string(),
        format!("| reference (SFT) | | | {reference_reward:+.3} | 50 % | 0 |"),
    ];
    let mut keys: Vec<(usize, String, f64)> = Vec::new();
    for p in points {
        let order = METHODS
            .iter()
            .position(|m| *m == p.method)
            .unwrap_or(METHODS.len());
        if !keys.iter().any(|k| k.1 == p.method && k.2 == p.value) {
            keys.push((order, p.method.clone(), p.value));
        }
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.total_cmp(&b.2)));
    let stat = |v: Vec<f64>| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (mean, (hi - lo) / 2.0)
    };
    for (_, method, value) in keys {
        let runs: Vec<&Point> = points
            .iter()
            .filter(|p| p.method == method && p.value == value)
            .collect();
        let (r, r_spread) = stat(runs.iter().map(|p| p.reward).collect());
        let (w, w_spread) = stat(runs.iter().map(|p| 100.0 * p.win_rate).collect());
        let (k, k_spread) = stat(runs.iter().map(|p| p.kl).collect());
        rows.push(format!(
            "| {method} | {} = {value} | {} | {r:+.3} ± {r_spread:.3} | {w:.1} ± {w_spread:.1} % | {k:.2} ± {k_spread:.2} |",
            runs[0].hyper_parameter,
            runs.len()
        ));
    }
    rows.join("\n") + "\n"
}

/// Gold reward against KL, one colour per method, each method's frontier drawn.
fn plot(points: &[Point], reference_reward: f64, path: &Path) -> anyhow::Result<()> {
    let mut chart = LineChart::new(
        "Gold reward vs KL on held-out prefixes (controlled sentiment)",
        "KL(policy || reference), nats per sample",
        "mean gold reward (VADER)",
    )
    .with_legend_lower_right()
    .with_series(Series::points("reference (SFT)", vec![(0.0, reference_reward)]).with_colour(9));
    for (i, method) in METHODS.iter().enumerate() {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.method == *method)
            .map(|p| (p.kl, p.reward))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let frontier = pareto_frontier(&pts);
        chart = chart.with_series(Series::points(*method, pts).with_colour(i));
        if frontier.len() > 1 {
            chart = chart
                .with_series(Series::new(format!("{method} frontier"), frontier).with_colour(i));
        }
    }
    chart.write(path)?;
    Ok(())
}

struct Frontier(Plan);

impl TrainJob for Frontier {
    type Output = ();

    fn run<B: ModelAutodiffBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let plan = self.0;
        let started = Instant::now();
        let out = PathBuf::from(plan.out);
        std::fs::create_dir_all(&out)?;
        B::seed(&device, 2024);

        section("1. The reference, the pairs and the reward model (shared by every run)");
        let task = SentimentTask::load(&out)?;
        let reference = task
            .train_reference::<B>(&out.join("sft"), plan.sft_steps, &device)?
            .model;
        let inference = reference.valid();
        let (mut pairs, ties) = task.preference_pairs(&inference, plan.pair_prefixes, &device)?;
        let eval_pairs = pairs.split_off(pairs.len() - pairs.len() / 10);
        let (rm, accuracy) = task.train_reward_model(
            &reference,
            pairs.clone(),
            eval_pairs.clone(),
            &out.join("reward"),
            &device,
        )?;
        let rm = rm.model.valid();
        let eval_prefixes = task.eval_prefixes(plan.eval_prefixes);
        let baseline = task.baseline(&inference, &eval_prefixes, 77, &device)?;
        let reference_reward = baseline.mean_reward();
        let mut scorer = task.reward_scorer(rm, &inference, &device)?;
        println!(
            "reference: {} SFT steps; {} train + {} held-out pairs ({ties} tied prefixes skipped); reward model held-out accuracy {accuracy:.2}; reference gold reward {reference_reward:+.3} on {} prefixes",
            plan.sft_steps,
            pairs.len(),
            eval_pairs.len(),
            eval_prefixes.len()
        );

        let mut points = Vec::new();
        let score = |policy: &CausalLm<B::InnerBackend>| {
            task.compare_with(policy, &inference, &baseline, &device)
        };
        for seed in 0..plan.seeds {
            section(&format!("2. Offline methods, seed {seed}"));
            let offline = plan
                .betas
                .iter()
                .map(|&b| {
                    (
                        "DPO",
                        "beta",
                        b,
                        serde_json::json!({"loss_type": "sigmoid", "beta": b}),
                    )
                })
                .chain([
                    (
                        "preferred-FT",
                        "epochs",
                        plan.epochs as f64,
                        serde_json::json!({"loss_type": "preferred_ft"}),
                    ),
                    (
                        "unlikelihood",
                        "epochs",
                        plan.epochs as f64,
                        serde_json::json!({"loss_type": "unlikelihood"}),
                    ),
                    // Unpaired feedback from the same pairs (each gives a desirable and an
                    // undesirable sample), and the reference-free one-stage ORPO.
                    (
                        "KTO",
                        "beta",
                        0.1,
                        serde_json::json!({"loss_type": "kto", "beta": 0.1}),
                    ),
                    (
                        "ORPO",
                        "beta",
                        0.1,
                        serde_json::json!({"loss_type": "orpo", "beta": 0.1}),
                    ),
                ])
                .filter(|(method, ..)| plan.runs(method));
            for (method, hyper, value, spec) in offline {
                let t = Instant::now();
                let dir = out.join(format!("{method}-{value}-seed{seed}"));
                let run = if method == "KTO" {
                    let kto = serde_json::from_value(spec)?;
                    task.train_kto(
                        &reference,
                        &pairs,
                        &eval_pairs,
                        kto,
                        plan.epochs,
                        seed,
                        &dir,
                        &device,
                    )?
                } else {
                    task.train_preference(
                        &reference,
                        pairs.clone(),
                        eval_pairs.clone(),
                        loss(spec)?,
                        plan.epochs,
                        seed,
                        &dir,
                        &device,
                    )?
                };
                let c = score(&run.model.valid())?;
                points.push(point(
                    method,
                    hyper,
                    value,
                    seed,
                    &c,
                    t.elapsed().as_secs_f64(),
                ));
            }

            section(&format!(
                "3. PPO against the reward model and against VADER, seed {seed}"
            ));
            for &coef in &plan.kl_coefs {
                for method in ["PPO", "PPO-GT"].into_iter().filter(|m| plan.runs(m)) {
                    let t = Instant::now();
                    let mut vader = TextReward::vader();
                    let reward: &mut dyn RewardFunction = if method == "PPO" {
                        &mut scorer
                    } else {
                        &mut vader
                    };
                    let run = task.train_ppo(
                        reference.clone().with_value_head(&device),
                        inference.clone(),
                        reward,
                        &task.ppo_config(coef),
                        plan.ppo_updates,
                        seed,
                        &out.join(format!("{method}-{coef}-seed{seed}")),
                        &device,
                    )?;
                    let c = score(&run.model.valid())?;
                    points.push(point(
                        method,
                        "kl_coef",
                        coef,
                        seed,
                        &c,
                        t.elapsed().as_secs_f64(),
                    ));
                }
            }
        }

        section("4. The figure");
        std::fs::write(
            out.join("frontier.json"),
            serde_json::to_string_pretty(&serde_json::json!({
                "reference_reward": reference_reward,
                "reward_model_accuracy": accuracy,
                "held_out_prefixes": eval_prefixes.len(),
                "kl_estimator": "k1 on the policy's samples: sum over tokens of log p - log p_ref, averaged",
                "runs": points,
            }))?,
        )?;
        println!("{}", draw(&out, &points, reference_reward)?);
        print_done(&[out.join("frontier.svg")], started);
        Ok(())
    }
}

/// Writes `table.md` and `frontier.svg` next to `frontier.json`; returns the table.
fn draw(out: &Path, points: &[Point], reference_reward: f64) -> anyhow::Result<String> {
    let markdown = table(points, reference_reward);
    std::fs::write(out.join("table.md"), &markdown)?;
    plot(points, reference_reward, &out.join("frontier.svg"))?;
    Ok(markdown)
}

fn main() -> anyhow::Result<()> {
    let plan = Plan::from_args()?;
    if plan.plot_only {
        let out = Path::new(plan.out);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("frontier.json"))?)?;
        let points: Vec<Point> = serde_json::from_value(json["runs"].clone())?;
        let reference = json["reference_reward"].as_f64().unwrap_or(f64::NAN);
        println!("{}", draw(out, &points, reference)?);
        return Ok(());
    }
    dispatch_train(DeviceKind::from_features(), Frontier(plan))
}
