//! The DPO paper's controlled-sentiment task (Rafailov et al. 2023, section 6.1), small, as
//! steps the examples share: continue an IMDb review prefix, scored by a gold reward (VADER's
//! compound sentiment) that no model is trained on directly.
//!
//! [`SentimentTask::load`] trains a byte-level BPE on the shipped reviews; [`SentimentTask::train_reference`]
//! fine-tunes a small GPT-2-style model on them (the reference policy); [`sample`] and
//! [`SentimentTask::label_pairs`] make preference pairs labelled by the gold reward; and
//! [`SentimentTask::compare`] measures a trained policy against the reference on held-out
//! prefixes: mean gold reward, win rate, and KL(policy || reference).

use std::path::Path;

use burn::module::AutodiffModule;
use burnish_data::{Collator, ReaderBuilder, TokenizedPair, TokenizedPromptCompletion};
use burnish_losses::{PreferenceLoss, RewardLoss, UnpairedLoss};
use burnish_model::{
    CausalLm, ModelAutodiffBackend, ModelBackend, ModelConfig, SamplingConfig, TextTokenizer,
};
use burnish_ppo::sentiment::compound;
use burnish_ppo::{PpoConfig, PpoOutcome, PpoRun, RewardFunction, RewardModelScorer, train_ppo};
use burnish_train::batch::TokenTensors;
use burnish_train::config::TrainingConfig;
use burnish_train::objectives::{PreferenceObjective, RewardObjective, SftObjective};
use burnish_train::trainer::{RunOptions, TrainOutcome, train};
use burnish_train::unpaired::{
    KtoObjective, TokenizedUnpaired, pair_mismatched, precompute_unpaired_reference, unpair,
};

/// Tokens of review given as the prompt.
pub const PREFIX_TOKENS: usize = 8;
/// Longest review excerpt the SFT model sees.
pub const SFT_TOKENS: usize = 64;
/// Tokens sampled after a prefix.
pub const SAMPLE_TOKENS: usize = 32;
/// The shipped training reviews.
pub const TRAIN_REVIEWS: &str = "datasets/imdb/train.parquet";
/// The shipped held-out reviews.
pub const HELD_OUT_REVIEWS: &str = "datasets/imdb/test.parquet";

/// The task's tokenizer and tokenized reviews.
pub struct SentimentTask {
    /// The byte-level BPE trained on the training reviews.
    pub tokenizer: TextTokenizer,
    /// `<|endoftext|>`: ends a sample, pads batches.
    pub eos: u32,
    /// Training reviews, tokenized.
    pub train_ids: Vec<Vec<u32>>,
    /// Held-out reviews, tokenized.
    pub eval_ids: Vec<Vec<u32>>,
}

/// The reference's samples of some prefixes and their gold rewards.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// The prefixes.
    pub prefixes: Vec<Vec<u32>>,
    /// The sampling seed (policies are sampled with it too).
    pub seed: u64,
    /// One reference sample per prefix.
    pub samples: Vec<Vec<u32>>,
    /// The gold reward of each sample.
    pub rewards: Vec<f64>,
}

impl Baseline {
    /// Mean gold reward of the reference's samples.
    pub fn mean_reward(&self) -> f64 {
        self.rewards.iter().sum::<f64>() / self.rewards.len().max(1) as f64
    }
}

/// What a policy's samples score against the reference's on held-out prefixes.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Prefixes compared.
    pub prefixes: usize,
    /// Mean gold reward of the reference's samples.
    pub reference_reward: f64,
    /// Mean gold reward of the policy's samples.
    pub policy_reward: f64,
    /// Fraction of prefixes where the policy's sample scores higher (ties count half).
    pub win_rate: f64,
    /// KL(policy || reference) per sample in nats: the k1 estimator, `log p - log p_ref` of
    /// the policy's own samples, summed over tokens and averaged.
    pub kl: f64,
    /// The first few (prefix, reference sample, policy sample) as text.
    pub examples: Vec<(String, String, String)>,
}

impl Comparison {
    /// The numbers the summary plot draws.
    pub fn summary(&self) -> burnish_train::plot::QuickstartSummary {
        burnish_train::plot::QuickstartSummary {
            reference_reward: self.reference_reward,
            policy_reward: self.policy_reward,
            win_rate: self.win_rate,
            kl: self.kl,
        }
    }
}

/// The `text` column of a Parquet file.
pub fn read_reviews(path: impl AsRef<Path>) -> anyhow::Result<Vec<String>> {
    ReaderBuilder::new()
        .path(path.as_ref())
        .texts()?
        .map(|row| Ok(row?.text))
        .collect()
}

/// The run of every offline method on the task: AdamW at 5e-4 with 10 warm-up steps and linear
/// decay, batches of 16, `epochs` passes, held-out evaluation every 25 steps.
fn offline_run(out: &Path, epochs: u64, seed: u64) -> anyhow::Result<TrainingConfig> {
    let mut run = config(
        out,
        "[optimizer]\nlr = 5e-4\n[schedule]\nwarmup_steps = 10\ndecay = \"linear\"\n",
    )?;
    run.train.epochs = epochs;
    run.train.batch_size = 16;
    run.train.eval_every = 25;
    run.train.checkpoint_every = 0;
    run.train.seed = seed;
    Ok(run)
}

/// A training config from TOML text with `train.output_dir = out`.
pub fn config(out: &Path, toml: &str) -> anyhow::Result<TrainingConfig> {
    let text = format!(
        "{toml}\n[train]\noutput_dir = {:?}\n",
        out.display().to_string()
    );
    Ok(TrainingConfig::from_toml_str(
        &text,
        "sentiment task",
        &[] as &[&str],
    )?)
}

/// Samples one continuation of at most [`SAMPLE_TOKENS`] per prefix at temperature 1, 64
/// prefixes at a time (chunk `i` seeded `seed + i`).
pub fn sample<B: ModelBackend>(
    model: &CausalLm<B>,
    prefixes: &[Vec<u32>],
    eos: u32,
    seed: u64,
    device: &B::Device,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(prefixes.len());
    for (i, chunk) in prefixes.chunks(64).enumerate() {
        let sampling = SamplingConfig {
            max_new_tokens: SAMPLE_TOKENS,
            temperature: 1.0,
            seed: seed + i as u64,
            stop_token: Some(eos),
            ..Default::default()
        };
        out.extend(model.generate(chunk, &sampling, device)?);
    }
    Ok(out)
}

/// Summed log-probs of each completion after its prefix under `model`.
pub fn completion_logps<B: ModelBackend>(
    model: &CausalLm<B>,
    prefixes: &[Vec<u32>],
    completions: &[Vec<u32>],
    pad: u32,
    device: &B::Device,
) -> anyhow::Result<Vec<f64>> {
    let rows: Vec<TokenizedPromptCompletion> = prefixes
        .iter()
        .zip(completions)
        .map(|(p, c)| TokenizedPromptCompletion {
            prompt_ids: p.clone(),
            completion_ids: c.clone(),
        })
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(64) {
        let batch = Collator::new(pad).collate_prompt_completions(chunk);
        let t = TokenTensors::<B>::from_sequences(&batch, device);
        let scored = model.completion_logps(t.input_ids, t.attention_mask, t.completion_mask);
        let values = scored.logps.into_data().convert::<f64>();
        out.extend(values.iter::<f64>());
    }
    Ok(out)
}

impl SentimentTask {
    /// Reads the shipped reviews, trains a 2,048-token byte-level BPE on the training ones and
    /// saves it as `out/tokenizer.json`.
    pub fn load(out: &Path) -> anyhow::Result<Self> {
        let reviews = read_reviews(TRAIN_REVIEWS)?;
        let held_out = read_reviews(HELD_OUT_REVIEWS)?;
        let tokenizer = TextTokenizer::train_byte_level_bpe(
            reviews.iter().map(String::as_str),
            2048,
            &["<|endoftext|>"],
        )?;
        let eos = tokenizer
            .token_id("<|endoftext|>")
            .ok_or_else(|| anyhow::anyhow!("the tokenizer lost its special token"))?;
        std::fs::create_dir_all(out)?;
        tokenizer.save(out.join("tokenizer.json"))?;
        let encode = |texts: &[String]| -> anyhow::Result<Vec<Vec<u32>>> {
            texts.iter().map(|t| Ok(tokenizer.encode(t)?)).collect()
        };
        let train_ids = encode(&reviews)?;
        let eval_ids = encode(&held_out)?;
        Ok(SentimentTask {
            tokenizer,
            eos,
            train_ids,
            eval_ids,
        })
    }

    /// The first [`PREFIX_TOKENS`] tokens of up to `n` training reviews (skipping shorter ones).
    pub fn train_prefixes(&self, n: usize) -> Vec<Vec<u32>> {
        prefixes(&self.train_ids, n)
    }

    /// The same of the held-out reviews.
    pub fn eval_prefixes(&self, n: usize) -> Vec<Vec<u32>> {
        prefixes(&self.eval_ids, n)
    }

    /// SFT rows: a review's prefix as the prompt, the rest up to [`SFT_TOKENS`] as completion.
    fn sft_rows(ids: &[Vec<u32>]) -> Vec<TokenizedPromptCompletion> {
        ids.iter()
            .filter(|ids| ids.len() > PREFIX_TOKENS + 4)
            .map(|ids| {
                let end = ids.len().min(SFT_TOKENS);
                TokenizedPromptCompletion {
                    prompt_ids: ids[..PREFIX_TOKENS].to_vec(),
                    completion_ids: ids[PREFIX_TOKENS..end].to_vec(),
                }
            })
            .collect()
    }

    /// Trains the reference policy from scratch: a 3-layer, 128-wide GPT-2 fine-tuned on the
    /// training reviews for `steps` steps of 16 (lr 3e-3, cosine after 30 warm-up steps),
    /// evaluated on 100 held-out reviews; the run's files go to `out`.
    pub fn train_reference<B: ModelAutodiffBackend>(
        &self,
        out: &Path,
        steps: u64,
        device: &B::Device,
    ) -> anyhow::Result<TrainOutcome<B>> {
        let mut model_config = ModelConfig::gpt2(self.tokenizer.vocab_size(), 128, 3, 4, 128);
        model_config.eos_token_id = Some(self.eos);
        let sft = SftObjective::<B> {
            train: Self::sft_rows(&self.train_ids),
            eval: Self::sft_rows(&self.eval_ids[..self.eval_ids.len().min(100)]),
            collator: Collator::new(self.eos),
            device: device.clone(),
        };
        let mut sft_config = config(
            out,
            "[optimizer]\nlr = 3e-3\nweight_decay = 0.01\n[schedule]\nwarmup_steps = 30\ndecay = \"cosine\"\nmin_lr_ratio = 0.1\n",
        )?;
        sft_config.train.max_steps = Some(steps);
        sft_config.train.batch_size = 16;
        sft_config.train.eval_every = steps.div_ceil(2);
        sft_config.train.checkpoint_every = 0;
        let policy = CausalLm::<B>::init(&model_config, device);
        Ok(train(
            policy,
            &sft,
            &sft_config,
            &RunOptions::default(),
            device,
        )?)
    }

    /// The gold reward of each sample's text.
    pub fn gold_rewards(&self, samples: &[Vec<u32>]) -> anyhow::Result<Vec<f64>> {
        samples
            .iter()
            .map(|s| Ok(compound(&self.tokenizer.decode(s)?)))
            .collect()
    }

    /// Pairs the two samples of each prefix, the one with the higher gold reward chosen; ties
    /// are skipped and counted. Returns the pairs and the number of ties.
    pub fn label_pairs(
        &self,
        prefixes: &[Vec<u32>],
        first: Vec<Vec<u32>>,
        second: Vec<Vec<u32>>,
    ) -> anyhow::Result<(Vec<TokenizedPair>, usize)> {
        let (score_a, score_b) = (self.gold_rewards(&first)?, self.gold_rewards(&second)?);
        let mut pairs = Vec::new();
        let mut ties = 0;
        for (((prefix, a), b), (sa, sb)) in prefixes
            .iter()
            .zip(first)
            .zip(second)
            .zip(score_a.into_iter().zip(score_b))
        {
            if sa == sb {
                ties += 1;
                continue;
            }
            let (chosen_ids, rejected_ids) = if sa > sb { (a, b) } else { (b, a) };
            pairs.push(TokenizedPair {
                prompt_ids: prefix.clone(),
                chosen_ids,
                rejected_ids,
                margin: None,
                ref_chosen_logp: None,
                ref_rejected_logp: None,
            });
        }
        Ok((pairs, ties))
    }

    /// Two samples of the reference per training prefix (`n` prefixes, seeds 1 and 10,000),
    /// labelled by the gold reward; returns the pairs and the number of tied prefixes skipped.
    pub fn preference_pairs<B: ModelBackend>(
        &self,
        reference: &CausalLm<B>,
        n: usize,
        device: &B::Device,
    ) -> anyhow::Result<(Vec<TokenizedPair>, usize)> {
        let prefixes = self.train_prefixes(n);
        let first = sample(reference, &prefixes, self.eos, 1, device)?;
        let second = sample(reference, &prefixes, self.eos, 10_000, device)?;
        self.label_pairs(&prefixes, first, second)
    }

    /// Trains a policy from `reference` on preference pairs with `loss` (DPO and its family,
    /// preferred-FT, unlikelihood): `epochs` epochs of 16 pairs at lr 5e-4 (10 warm-up steps,
    /// linear decay), evaluated every 25 steps; the run's files go to `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn train_preference<B: ModelAutodiffBackend>(
        &self,
        reference: &CausalLm<B>,
        train_pairs: Vec<TokenizedPair>,
        eval_pairs: Vec<TokenizedPair>,
        loss: PreferenceLoss,
        epochs: u64,
        seed: u64,
        out: &Path,
        device: &B::Device,
    ) -> anyhow::Result<TrainOutcome<B>> {
        let objective = PreferenceObjective::<B> {
            train: train_pairs,
            eval: eval_pairs,
            collator: Collator::new(self.eos),
            reference: loss.needs_reference().then(|| reference.valid()),
            loss,
            device: device.clone(),
        };
        Ok(train(
            reference.clone(),
            &objective,
            &offline_run(out, epochs, seed)?,
            &RunOptions::default(),
            device,
        )?)
    }

    /// KTO (or `apo_zero_unpaired`) from the reference on the same pairs unpaired: each pair's
    /// chosen sample as a desirable row and its rejected one as an undesirable row, the same
    /// budget as [`SentimentTask::train_preference`].
    #[allow(clippy::too_many_arguments)]
    pub fn train_kto<B: ModelAutodiffBackend>(
        &self,
        reference: &CausalLm<B>,
        train_pairs: &[TokenizedPair],
        eval_pairs: &[TokenizedPair],
        loss: UnpairedLoss,
        epochs: u64,
        seed: u64,
        out: &Path,
        device: &B::Device,
    ) -> anyhow::Result<TrainOutcome<B>> {
        let collator = Collator::new(self.eos);
        let inner = reference.valid();
        let rows = |pairs: &[TokenizedPair]| -> anyhow::Result<Vec<TokenizedUnpaired>> {
            let mut rows: Vec<TokenizedUnpaired> = pairs.iter().flat_map(unpair).collect();
            pair_mismatched(&mut rows, usize::MAX);
            precompute_unpaired_reference(
                &inner,
                &mut rows,
                &collator,
                64,
                loss.needs_kl(),
                device,
                None,
            )?;
            Ok(rows)
        };
        let objective = KtoObjective::<B> {
            train: rows(train_pairs)?,
            eval: rows(eval_pairs)?,
            collator: Collator::new(self.eos),
            loss,
            device: device.clone(),
        };
        Ok(train(
            reference.clone(),
            &objective,
            &offline_run(out, epochs, seed)?,
            &RunOptions::default(),
            device,
        )?)
    }

    /// A Bradley-Terry reward model: `reference` plus a fresh reward head, 2 epochs of 32 pairs
    /// at lr 5e-4; returns the run and its held-out accuracy.
    pub fn train_reward_model<B: ModelAutodiffBackend>(
        &self,
        reference: &CausalLm<B>,
        train_pairs: Vec<TokenizedPair>,
        eval_pairs: Vec<TokenizedPair>,
        out: &Path,
        device: &B::Device,
    ) -> anyhow::Result<(TrainOutcome<B>, f64)> {
        let objective = RewardObjective::<B> {
            train: train_pairs,
            eval: eval_pairs,
            collator: Collator::new(self.eos),
            loss: RewardLoss::default(),
            device: device.clone(),
        };
        let mut run = config(
            out,
            "[optimizer]\nlr = 5e-4\n[schedule]\nwarmup_steps = 10\ndecay = \"linear\"\n",
        )?;
        run.train.epochs = 2;
        run.train.batch_size = 32;
        run.train.eval_every = 50;
        run.train.checkpoint_every = 0;
        let outcome = train(
            reference.clone().with_reward_head(device),
            &objective,
            &run,
            &RunOptions::default(),
            device,
        )?;
        let accuracy = outcome
            .last_eval
            .as_ref()
            .and_then(|e| e.metrics.get("accuracy"))
            .unwrap_or(f64::NAN);
        Ok((outcome, accuracy))
    }

    /// The reward model as PPO's reward: its scores rescaled to mean 0, std 1 on the reference's
    /// samples of 64 training prefixes (sampling seed 5).
    pub fn reward_scorer<B: ModelBackend>(
        &self,
        reward_model: CausalLm<B>,
        reference: &CausalLm<B>,
        device: &B::Device,
    ) -> anyhow::Result<RewardModelScorer<B>> {
        let mut scorer = RewardModelScorer::new(reward_model, self.eos, device)?;
        let prefixes = self.train_prefixes(64);
        let samples = sample(reference, &prefixes, self.eos, 5, device)?;
        scorer.normalize_on(&prefixes, &samples);
        Ok(scorer)
    }

    /// The PPO settings of the task: 32-token responses sampled at temperature 1 (as the
    /// comparison samples), 4 PPO epochs over 2 mini-batches, KL coefficient `kl_coef`.
    pub fn ppo_config(&self, kl_coef: f64) -> PpoConfig {
        PpoConfig {
            response_length: SAMPLE_TOKENS,
            temperature: 1.0,
            kl_coef,
            ppo_epochs: 4,
            num_mini_batches: 2,
            ..PpoConfig::default()
        }
    }

    /// PPO from `policy` (with a value head) on every training prefix, `updates` updates of
    /// 32 prompts at learning rate 2e-4 (linear decay), scored by `reward`, KL-penalised towards
    /// `reference`; the run's files go to `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn train_ppo<B: ModelAutodiffBackend>(
        &self,
        policy: CausalLm<B>,
        reference: CausalLm<B::InnerBackend>,
        reward: &mut dyn RewardFunction,
        ppo: &PpoConfig,
        updates: u64,
        seed: u64,
        out: &Path,
        device: &B::Device,
    ) -> anyhow::Result<PpoOutcome<B>> {
        let mut run_config = config(
            out,
            "[optimizer]\nlr = 2e-4\n[schedule]\nwarmup_steps = 0\ndecay = \"linear\"\n",
        )?;
        run_config.train.max_steps = Some(updates);
        run_config.train.batch_size = 32;
        run_config.train.checkpoint_every = 0;
        run_config.train.seed = seed;
        let prompts = self.train_prefixes(usize::MAX);
        let decode = |ids: &[u32]| self.tokenizer.decode(ids).unwrap_or_default();
        let run = PpoRun {
            policy,
            reference,
            reward,
            decode: &decode,
            prompts: &prompts,
            eos: self.eos,
            pad: self.eos,
            ptx: None,
        };
        Ok(train_ppo(
            run,
            &run_config,
            ppo,
            &RunOptions::default(),
            device,
        )?)
    }

    /// The reference's samples of `prefixes` (seeded) and their gold rewards: what every policy
    /// of an experiment is compared against, computed once.
    pub fn baseline<B: ModelBackend>(
        &self,
        reference: &CausalLm<B>,
        prefixes: &[Vec<u32>],
        seed: u64,
        device: &B::Device,
    ) -> anyhow::Result<Baseline> {
        let samples = sample(reference, prefixes, self.eos, seed, device)?;
        let rewards = self.gold_rewards(&samples)?;
        Ok(Baseline {
            prefixes: prefixes.to_vec(),
            seed,
            samples,
            rewards,
        })
    }

    /// Samples policy and reference on `prefixes` (the same seed for both) and compares them
    /// under the gold reward; the KL is estimated on the policy's samples.
    pub fn compare<B: ModelBackend>(
        &self,
        policy: &CausalLm<B>,
        reference: &CausalLm<B>,
        prefixes: &[Vec<u32>],
        seed: u64,
        device: &B::Device,
    ) -> anyhow::Result<Comparison> {
        let baseline = self.baseline(reference, prefixes, seed, device)?;
        self.compare_with(policy, reference, &baseline, device)
    }

    /// [`SentimentTask::compare`] against a [`Baseline`] sampled before.
    pub fn compare_with<B: ModelBackend>(
        &self,
        policy: &CausalLm<B>,
        reference: &CausalLm<B>,
        baseline: &Baseline,
        device: &B::Device,
    ) -> anyhow::Result<Comparison> {
        let prefixes = &baseline.prefixes;
        let policy_samples = sample(policy, prefixes, self.eos, baseline.seed, device)?;
        let policy_scores = self.gold_rewards(&policy_samples)?;
        let reference_scores = &baseline.rewards;
        let reference_samples = &baseline.samples;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let wins: Vec<f64> = policy_scores
            .iter()
            .zip(reference_scores)
            .map(|(p, r)| match p.partial_cmp(r) {
                Some(std::cmp::Ordering::Greater) => 1.0,
                Some(std::cmp::Ordering::Equal) => 0.5,
                _ => 0.0,
            })
            .collect();
        let lp_policy = completion_logps(policy, prefixes, &policy_samples, self.eos, device)?;
        let lp_reference =
            completion_logps(reference, prefixes, &policy_samples, self.eos, device)?;
        let kl: Vec<f64> = lp_policy
            .iter()
            .zip(&lp_reference)
            .map(|(p, r)| p - r)
            .collect();
        let mut examples = Vec::new();
        for ((prefix, p), r) in prefixes
            .iter()
            .zip(&policy_samples)
            .zip(reference_samples)
            .take(3)
        {
            examples.push((
                self.tokenizer.decode(prefix)?,
                self.tokenizer.decode(r)?,
                self.tokenizer.decode(p)?,
            ));
        }
        Ok(Comparison {
            prefixes: prefixes.len(),
            reference_reward: mean(reference_scores),
            policy_reward: mean(&policy_scores),
            win_rate: mean(&wins),
            kl: mean(&kl),
            examples,
        })
    }
}

fn prefixes(ids: &[Vec<u32>], n: usize) -> Vec<Vec<u32>> {
    ids.iter()
        .filter(|ids| ids.len() > PREFIX_TOKENS)
        .take(n)
        .map(|ids| ids[..PREFIX_TOKENS].to_vec())
        .collect()
}

/// The closing lines of an example: the plots written and the wall time and peak memory.
pub fn print_done(plots: &[std::path::PathBuf], started: std::time::Instant) {
    let plots: Vec<String> = plots.iter().map(|p| p.display().to_string()).collect();
    println!("plots: {}", plots.join(", "));
    println!(
        "wall time {:.0}s, peak RSS {:.0} MB",
        started.elapsed().as_secs_f64(),
        peak_rss_mb()
    );
}

/// Peak resident memory of this process in MB (Linux; NaN elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Reference and policy compared after training, ready to print.
pub fn print_comparison(c: &Comparison) {
    println!("held-out prefixes:           {}", c.prefixes);
    println!("mean gold reward, reference: {:+.3}", c.reference_reward);
    println!("mean gold reward, policy:    {:+.3}", c.policy_reward);
    println!(
        "policy win rate vs reference: {:.1}% (ties count half)",
        100.0 * c.win_rate
    );
    println!(
        "KL(policy || reference):     {:.2} nats per completion",
        c.kl
    );
    for (prefix, reference, policy) in &c.examples {
        println!("\n  prefix:    {prefix}");
        println!("  reference: {reference}");
        println!("  policy:    {policy}");
    }
}
