//! Edge cases: empty completions, invalid parameters, mismatched ranks and shapes, missing
//! reference log-probs, logits of 1e4, the R-DPO length direction, and hand-computed values for
//! the losses the golden file does not cover (SFT, unlikelihood, PRO's SFT term).

mod common;

use burnish_losses::numerics::log1m_exp;
use burnish_losses::{
    InputKind, ListwiseInputs, LossError, PairwiseInputs, PreferenceLoss, RewardListInputs,
    RewardLoss, RewardPairInputs, names,
};
use common::*;

/// One instance of every policy loss, with non-default parameters where they matter.
fn every_loss() -> Vec<PreferenceLoss> {
    vec![
        PreferenceLoss::Sigmoid {
            beta: 0.5,
            label_smoothing: 0.1,
            reference_free: false,
        },
        PreferenceLoss::Sigmoid {
            beta: 0.5,
            label_smoothing: 0.0,
            reference_free: true,
        },
        PreferenceLoss::Ipo {
            beta: 0.5,
            normalize_by_length: true,
        },
        PreferenceLoss::Ipo {
            beta: 0.5,
            normalize_by_length: false,
        },
        PreferenceLoss::Hinge { beta: 0.5 },
        PreferenceLoss::Robust {
            beta: 0.5,
            label_smoothing: 0.2,
        },
        PreferenceLoss::Rdpo {
            beta: 0.5,
            alpha: 0.05,
        },
        PreferenceLoss::Simpo {
            beta: 2.0,
            gamma: 0.5,
        },
        PreferenceLoss::Sft {
            normalize_by_length: true,
        },
        PreferenceLoss::Sft {
            normalize_by_length: false,
        },
        PreferenceLoss::Unlikelihood {
            alpha: 1.0,
            normalize_by_length: true,
        },
        PreferenceLoss::Unlikelihood {
            alpha: 0.5,
            normalize_by_length: false,
        },
        PreferenceLoss::Pro { sft_weight: 0.1 },
        PreferenceLoss::PlackettLuce { beta: 0.5 },
    ]
}

/// Pairwise inputs whose policy log-probs require grad; returns them too.
fn pairs(
    policy: (&[f64], &[f64]),
    reference: (&[f64], &[f64]),
    lengths: (&[f64], &[f64]),
) -> (PairwiseInputs<B>, Tensor1, Tensor1) {
    let chosen = t1(policy.0).require_grad();
    let rejected = t1(policy.1).require_grad();
    let inputs = PairwiseInputs::new(
        chosen.clone(),
        rejected.clone(),
        t1(lengths.0),
        t1(lengths.1),
    )
    .with_reference(t1(reference.0), t1(reference.1));
    (inputs, chosen, rejected)
}

type Tensor1 = burn::tensor::Tensor<B, 1>;

/// Evaluates `loss` on `inputs`, asserting a finite loss, finite metrics and finite gradients.
fn assert_finite_everywhere(
    label: &str,
    loss: &PreferenceLoss,
    inputs: &PairwiseInputs<B>,
    chosen: &Tensor1,
    rejected: &Tensor1,
) -> (f64, Vec<Vec<f64>>) {
    let output = loss
        .pairwise(inputs)
        .unwrap_or_else(|e| panic!("{label} {}: {e}", loss.name()));
    let value = output.loss_f64();
    assert!(value.is_finite(), "{label} {}: loss {value}", loss.name());
    for (name, metric) in output.metrics_f64() {
        assert!(
            metric.is_finite(),
            "{label} {}: metric {name} = {metric}",
            loss.name()
        );
    }
    let grads = gradients(&output.loss, &[chosen, rejected]);
    for g in &grads {
        assert!(all_finite(g), "{label} {}: gradient {g:?}", loss.name());
    }
    (value, grads)
}

#[test]
fn zero_length_completions_give_finite_values() {
    for loss in every_loss() {
        // Example 0: both completions empty (summed log-prob 0); example 1: ordinary.
        let (inputs, chosen, rejected) = pairs(
            (&[0.0, -12.0], &[0.0, -15.0]),
            (&[0.0, -13.0], &[0.0, -14.0]),
            (&[0.0, 6.0], &[0.0, 9.0]),
        );
        assert_finite_everywhere("zero-length", &loss, &inputs, &chosen, &rejected);
    }
    // Listwise: one empty response in the ranking.
    for loss in [
        PreferenceLoss::Pro { sft_weight: 0.5 },
        PreferenceLoss::PlackettLuce { beta: 0.5 },
    ] {
        let policy = t2(&[0.0, -10.0, -20.0], 1, 3).require_grad();
        let inputs = ListwiseInputs::new(
            policy.clone(),
            t2(&[0.0, 4.0, 8.0], 1, 3),
            vec![vec![0, 1, 2]],
        )
        .with_reference(t2(&[0.0, -11.0, -19.0], 1, 3));
        let output = loss.listwise(&inputs).unwrap();
        assert!(output.loss_f64().is_finite(), "{}", loss.name());
        assert!(
            all_finite(&gradients(&output.loss, &[&policy])[0]),
            "{}",
            loss.name()
        );
    }
}

#[test]
fn logits_of_1e4_give_finite_losses_and_gradients() {
    // h = +1e4 for example 0 and -1e4 for example 1 (beta = 1 where there is a beta).
    for loss in every_loss() {
        let (inputs, chosen, rejected) = pairs(
            (&[-1.0, -10001.0], &[-10001.0, -1.0]),
            (&[0.0, 0.0], &[0.0, 0.0]),
            (&[1.0, 1.0], &[1.0, 1.0]),
        );
        assert_finite_everywhere("|h| = 1e4", &loss, &inputs, &chosen, &rejected);
    }
    // Values, not only finiteness: -log sigma(1e4) = 0 and -log sigma(-1e4) = 1e4.
    let (inputs, chosen, rejected) = pairs(
        (&[-1.0, -10001.0], &[-10001.0, -1.0]),
        (&[0.0, 0.0], &[0.0, 0.0]),
        (&[1.0, 1.0], &[1.0, 1.0]),
    );
    let dpo = PreferenceLoss::Sigmoid {
        beta: 1.0,
        label_smoothing: 0.0,
        reference_free: false,
    };
    let (value, grads) = assert_finite_everywhere("|h| = 1e4", &dpo, &inputs, &chosen, &rejected);
    assert_close("dpo loss at |h| = 1e4", &[value], &[5000.0]);
    assert_close("dpo d/d chosen at |h| = 1e4", &grads[0], &[0.0, -0.5]);

    // Listwise scores 1e4 apart.
    for loss in [
        PreferenceLoss::Pro { sft_weight: 0.1 },
        PreferenceLoss::PlackettLuce { beta: 1.0 },
    ] {
        let policy = t2(&[-20000.0, -1.0, -10000.0], 1, 3).require_grad();
        let inputs = ListwiseInputs::new(
            policy.clone(),
            t2(&[1.0, 1.0, 1.0], 1, 3),
            vec![vec![0, 1, 2]],
        )
        .with_reference(t2(&[0.0, 0.0, 0.0], 1, 3));
        let output = loss.listwise(&inputs).unwrap();
        let value = output.loss_f64();
        // s = [-2e4, -1, -1e4] (times beta = 1): terms lse(s0, s1, s2) - s0 and lse(s1, s2) - s1.
        assert_close(
            &format!("{} loss at 1e4", loss.name()),
            &[value - pro_sft(&loss, 20000.0)],
            &[19999.0],
        );
        assert!(
            all_finite(&gradients(&output.loss, &[&policy])[0]),
            "{}",
            loss.name()
        );
    }

    // Reward models.
    let chosen = t1(&[1e4, -1e4]).require_grad();
    let rejected = t1(&[-1e4, 1e4]).require_grad();
    let output = RewardLoss::BradleyTerry {
        center_rewards_coefficient: 0.01,
    }
    .pairwise(&RewardPairInputs::new(chosen.clone(), rejected.clone()))
    .unwrap();
    assert_close("bt loss at 2e4", &[output.loss_f64()], &[1e4]);
    let grads = gradients(&output.loss, &[&chosen, &rejected]);
    assert!(all_finite(&grads[0]) && all_finite(&grads[1]));
    let rewards = t2(&[1e4, -1e4, 0.0], 1, 3).require_grad();
    let output = RewardLoss::default()
        .listwise(&RewardListInputs::new(rewards.clone(), vec![vec![2, 0, 1]]))
        .unwrap();
    assert!(output.loss_f64().is_finite());
    assert!(all_finite(&gradients(&output.loss, &[&rewards])[0]));
}

/// PRO's SFT term for the best response of the 1e4 test (-s_best * sft_weight), 0 for others.
fn pro_sft(loss: &PreferenceLoss, neg_best_score: f64) -> f64 {
    match loss {
        PreferenceLoss::Pro { sft_weight } => sft_weight * neg_best_score,
        _ => 0.0,
    }
}

fn is_invalid(result: Result<(), LossError>, key: &str) -> bool {
    matches!(result, Err(LossError::InvalidParameter { name, .. }) if name == key)
}

#[test]
fn beta_must_be_positive_and_finite() {
    for beta in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        let losses = [
            PreferenceLoss::Sigmoid {
                beta,
                label_smoothing: 0.0,
                reference_free: false,
            },
            PreferenceLoss::Ipo {
                beta,
                normalize_by_length: true,
            },
            PreferenceLoss::Hinge { beta },
            PreferenceLoss::Robust {
                beta,
                label_smoothing: 0.0,
            },
            PreferenceLoss::Rdpo { beta, alpha: 0.0 },
            PreferenceLoss::Simpo { beta, gamma: 0.5 },
            PreferenceLoss::PlackettLuce { beta },
        ];
        for loss in losses {
            assert!(
                is_invalid(loss.validate(), "beta"),
                "{} beta = {beta}",
                loss.name()
            );
            // The loss call itself refuses too, with the same error.
            let (inputs, _, _) = pairs((&[-1.0], &[-2.0]), (&[-1.0], &[-2.0]), (&[1.0], &[1.0]));
            let err = loss.pairwise(&inputs).unwrap_err();
            assert!(
                matches!(err, LossError::InvalidParameter { name: "beta", .. }),
                "{err}"
            );
            assert!(err.to_string().contains("beta"), "{err}");
        }
    }
}

#[test]
fn label_smoothing_must_lie_in_zero_to_one_half() {
    for eps in [0.5, 0.7, -0.1, f64::NAN] {
        for loss in [
            PreferenceLoss::Sigmoid {
                beta: 0.1,
                label_smoothing: eps,
                reference_free: false,
            },
            PreferenceLoss::Robust {
                beta: 0.1,
                label_smoothing: eps,
            },
        ] {
            assert!(
                is_invalid(loss.validate(), "label_smoothing"),
                "{} eps = {eps}",
                loss.name()
            );
            let (inputs, _, _) = pairs((&[-1.0], &[-2.0]), (&[-1.0], &[-2.0]), (&[1.0], &[1.0]));
            assert!(loss.pairwise(&inputs).is_err());
        }
    }
    for eps in [0.0, 0.25, 0.49] {
        let loss = PreferenceLoss::Robust {
            beta: 0.1,
            label_smoothing: eps,
        };
        assert!(loss.validate().is_ok());
    }
}

#[test]
fn other_parameters_are_range_checked() {
    let bad = [
        (
            PreferenceLoss::Rdpo {
                beta: 0.1,
                alpha: -0.05,
            },
            "alpha",
        ),
        (
            PreferenceLoss::Simpo {
                beta: 2.0,
                gamma: -1.0,
            },
            "gamma",
        ),
        (
            PreferenceLoss::Unlikelihood {
                alpha: f64::NAN,
                normalize_by_length: true,
            },
            "alpha",
        ),
        (PreferenceLoss::Pro { sft_weight: -1.0 }, "sft_weight"),
    ];
    for (loss, key) in bad {
        assert!(is_invalid(loss.validate(), key), "{}", loss.name());
    }
    let reward = RewardLoss::BradleyTerry {
        center_rewards_coefficient: -0.01,
    };
    assert!(is_invalid(reward.validate(), "center_rewards_coefficient"));
}

/// Listwise inputs over one `[1, k]` prompt with the given ranks.
fn one_prompt(k: usize, ranks: Vec<Vec<usize>>) -> ListwiseInputs<B> {
    let policy: Vec<f64> = (0..k).map(|i| -10.0 - i as f64).collect();
    let n = 1;
    ListwiseInputs::new(t2(&policy, n, k), t2(&vec![5.0; k], n, k), ranks).with_reference(t2(
        &vec![-10.0; k],
        n,
        k,
    ))
}

#[test]
fn ranks_must_match_the_responses() {
    let listwise = [
        PreferenceLoss::Pro { sft_weight: 0.0 },
        PreferenceLoss::PlackettLuce { beta: 0.1 },
    ];
    for loss in &listwise {
        // Fewer ranks than responses, more ranks than responses.
        for ranks in [vec![0, 1, 2], vec![0, 1, 2, 3, 4]] {
            let err = loss.listwise(&one_prompt(4, vec![ranks])).unwrap_err();
            assert!(
                matches!(err, LossError::RanksLength { responses: 4, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("prompt 0"), "{err}");
        }
        // One ranking for two prompts.
        let inputs = ListwiseInputs::new(
            t2(&[-1.0; 6], 2, 3),
            t2(&[1.0; 6], 2, 3),
            vec![vec![0, 1, 2]],
        )
        .with_reference(t2(&[-1.0; 6], 2, 3));
        let err = loss.listwise(&inputs).unwrap_err();
        assert!(
            matches!(
                err,
                LossError::RankingCount {
                    rankings: 1,
                    prompts: 2,
                    ..
                }
            ),
            "{err}"
        );
        // All tied, and a single response.
        let err = loss
            .listwise(&one_prompt(3, vec![vec![1, 1, 1]]))
            .unwrap_err();
        assert!(matches!(err, LossError::NoPreference { .. }), "{err}");
    }
    let rewards = RewardLoss::default();
    let err = rewards
        .listwise(&RewardListInputs::new(
            t2(&[0.1, 0.2, 0.3], 1, 3),
            vec![vec![0, 1]],
        ))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LossError::RanksLength {
                ranks: 2,
                responses: 3,
                ..
            }
        ),
        "{err}"
    );
    let err = rewards
        .listwise(&RewardListInputs::new(t2(&[0.1], 1, 1), vec![vec![0]]))
        .unwrap_err();
    assert!(matches!(err, LossError::NoPreference { .. }), "{err}");
}

#[test]
fn mismatched_shapes_and_empty_batches_are_errors() {
    let inputs = PairwiseInputs::new(
        t1(&[-1.0, -2.0]),
        t1(&[-1.0]),
        t1(&[1.0, 1.0]),
        t1(&[1.0, 1.0]),
    );
    let err = PreferenceLoss::Simpo {
        beta: 2.0,
        gamma: 0.5,
    }
    .pairwise(&inputs)
    .unwrap_err();
    assert!(
        matches!(
            err,
            LossError::ShapeMismatch {
                input: "policy_rejected_logps",
                ..
            }
        ),
        "{err}"
    );

    let inputs = PairwiseInputs::new(t1(&[]), t1(&[]), t1(&[]), t1(&[]));
    let err = PreferenceLoss::Sft {
        normalize_by_length: true,
    }
    .pairwise(&inputs)
    .unwrap_err();
    assert!(matches!(err, LossError::EmptyBatch { .. }), "{err}");

    let err = RewardLoss::default()
        .pairwise(&RewardPairInputs::new(t1(&[1.0, 2.0]), t1(&[0.0, 1.0])).with_margin(t1(&[0.5])))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LossError::ShapeMismatch {
                input: "margin",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn reference_is_required_exactly_when_the_loss_says_so() {
    let inputs = PairwiseInputs::new(
        t1(&[-10.0, -12.0]),
        t1(&[-11.0, -9.0]),
        t1(&[5.0, 6.0]),
        t1(&[4.0, 3.0]),
    );
    for loss in every_loss() {
        let result = loss.pairwise(&inputs);
        if loss.needs_reference() {
            assert!(
                matches!(result, Err(LossError::MissingReference { .. })),
                "{} should need a reference",
                loss.name()
            );
        } else {
            assert!(
                result.is_ok(),
                "{} should not need a reference",
                loss.name()
            );
        }
    }
}

#[test]
fn reference_free_dpo_takes_the_reference_as_zero() {
    let (with_reference, _, _) = pairs(
        (&[-10.0, -12.0], &[-11.0, -9.0]),
        (&[-3.0, -4.0], &[-5.0, -6.0]),
        (&[5.0, 6.0], &[4.0, 3.0]),
    );
    let (zero_reference, _, _) = pairs(
        (&[-10.0, -12.0], &[-11.0, -9.0]),
        (&[0.0, 0.0], &[0.0, 0.0]),
        (&[5.0, 6.0], &[4.0, 3.0]),
    );
    let free = PreferenceLoss::Sigmoid {
        beta: 0.3,
        label_smoothing: 0.1,
        reference_free: true,
    };
    let plain = PreferenceLoss::Sigmoid {
        beta: 0.3,
        label_smoothing: 0.1,
        reference_free: false,
    };
    let a = free.pairwise(&with_reference).unwrap();
    let b = plain.pairwise(&zero_reference).unwrap();
    assert_close("reference-free loss", &[a.loss_f64()], &[b.loss_f64()]);
    let a: Vec<f64> = a.metrics_f64().into_iter().map(|(_, v)| v).collect();
    let b: Vec<f64> = b.metrics_f64().into_iter().map(|(_, v)| v).collect();
    assert_close("reference-free metrics", &a, &b);
}

#[test]
fn pairwise_losses_refuse_listwise_inputs() {
    let err = PreferenceLoss::default()
        .listwise(&one_prompt(3, vec![vec![0, 1, 2]]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LossError::WrongInputKind {
                expected: InputKind::Pairwise,
                found: InputKind::Listwise,
                ..
            }
        ),
        "{err}"
    );
}

/// R-DPO's length term, per DESIGN.md's sign note: with alpha > 0, a pair whose chosen completion
/// is longer gets a smaller loss (its length gap counts towards the margin), and the gradient
/// pushes the policy's preference for long answers down, not up.
#[test]
fn rdpo_regularises_length_in_the_right_direction() {
    // Two pairs with the same log-ratios: pair 0 has the longer chosen completion (30 vs 10
    // tokens), pair 1 the shorter one (10 vs 30).
    let (inputs, chosen, rejected) = pairs(
        (&[-20.0, -20.0], &[-22.0, -22.0]),
        (&[-21.0, -21.0], &[-21.0, -21.0]),
        (&[30.0, 10.0], &[10.0, 30.0]),
    );
    let per_pair_loss = |alpha: f64, pair: usize| -> f64 {
        let (single, _, _) = pairs(
            (&[-20.0], &[-22.0]),
            (&[-21.0], &[-21.0]),
            if pair == 0 {
                (&[30.0], &[10.0])
            } else {
                (&[10.0], &[30.0])
            },
        );
        PreferenceLoss::Rdpo { beta: 0.1, alpha }
            .pairwise(&single)
            .unwrap()
            .loss_f64()
    };
    // Loss: longer chosen -> smaller loss than plain DPO; shorter chosen -> larger.
    assert!(per_pair_loss(0.05, 0) < per_pair_loss(0.0, 0));
    assert!(per_pair_loss(0.05, 1) > per_pair_loss(0.0, 1));
    assert!(per_pair_loss(0.05, 0) < per_pair_loss(0.05, 1));

    // Gradient: with alpha = 0 both pairs are pushed equally; with alpha > 0 the pair with the
    // shorter chosen completion is pushed harder. A gradient step raises the policy's margin
    // logp_w - logp_l of each pair by -(dL/dlogp_w - dL/dlogp_l) times the step size, so the
    // increase in margin of long-chosen pairs minus short-chosen pairs (the learned "longer is
    // better" preference) must be negative.
    let length_push = |alpha: f64| -> f64 {
        let output = PreferenceLoss::Rdpo { beta: 0.1, alpha }
            .pairwise(&inputs)
            .unwrap();
        let grads = gradients(&output.loss, &[&chosen, &rejected]);
        let margin_step = |pair: usize| -(grads[0][pair] - grads[1][pair]);
        margin_step(0) - margin_step(1)
    };
    assert!(
        length_push(0.0).abs() < 1e-12,
        "alpha = 0 has no length preference"
    );
    assert!(
        length_push(0.05) < 0.0,
        "alpha > 0 must push the length preference down"
    );
    assert!(
        length_push(0.2) < length_push(0.05),
        "more alpha, more push"
    );
}

/// SFT and unlikelihood against hand-computed values and gradients.
#[test]
fn sft_and_unlikelihood_match_hand_computed_values() {
    let policy_chosen = [-12.0, -30.0, -4.5];
    let policy_rejected = [-20.0, -2.0, -0.1];
    let chosen_lengths = [6.0, 10.0, 3.0];
    let rejected_lengths = [10.0, 4.0, 1.0];
    let n = 3.0;
    let make = || {
        pairs(
            (&policy_chosen, &policy_rejected),
            (&[0.0; 3], &[0.0; 3]),
            (&chosen_lengths, &rejected_lengths),
        )
    };

    // SFT, per token: mean(-logp_w / |y_w|); summed: mean(-logp_w).
    let (inputs, chosen, rejected) = make();
    let output = PreferenceLoss::Sft {
        normalize_by_length: true,
    }
    .pairwise(&inputs)
    .unwrap();
    let expected: f64 = (0..3)
        .map(|i| -policy_chosen[i] / chosen_lengths[i])
        .sum::<f64>()
        / n;
    assert_close("sft loss", &[output.loss_f64()], &[expected]);
    let grads = gradients(&output.loss, &[&chosen, &rejected]);
    let expected: Vec<f64> = chosen_lengths.iter().map(|l| -1.0 / (n * l)).collect();
    assert_close("sft d/d chosen", &grads[0], &expected);
    assert_close("sft d/d rejected", &grads[1], &[0.0; 3]);

    let (inputs, chosen, _) = make();
    let output = PreferenceLoss::Sft {
        normalize_by_length: false,
    }
    .pairwise(&inputs)
    .unwrap();
    assert_close(
        "summed sft loss",
        &[output.loss_f64()],
        &[(12.0 + 30.0 + 4.5) / n],
    );
    assert_close(
        "summed sft d/d chosen",
        &gradients(&output.loss, &[&chosen])[0],
        &[-1.0 / n; 3],
    );

    // Unlikelihood: mean(-s_w - alpha log(1 - exp(s_l))), s = logp / |y|.
    for (alpha, per_token) in [(1.0, true), (0.5, false)] {
        let (inputs, chosen, rejected) = make();
        let loss = PreferenceLoss::Unlikelihood {
            alpha,
            normalize_by_length: per_token,
        };
        let output = loss.pairwise(&inputs).unwrap();
        let s = |logp: f64, len: f64| if per_token { logp / len } else { logp };
        let expected: f64 = (0..3)
            .map(|i| {
                let sl = s(policy_rejected[i], rejected_lengths[i]);
                -s(policy_chosen[i], chosen_lengths[i]) - alpha * (-sl.exp()).ln_1p()
            })
            .sum::<f64>()
            / n;
        assert_close("unlikelihood loss", &[output.loss_f64()], &[expected]);
        let grads = gradients(&output.loss, &[&chosen, &rejected]);
        let expected_rejected: Vec<f64> = (0..3)
            .map(|i| {
                let len = if per_token { rejected_lengths[i] } else { 1.0 };
                let sl = s(policy_rejected[i], rejected_lengths[i]);
                alpha * sl.exp() / (1.0 - sl.exp()) / (len * n)
            })
            .collect();
        let expected_chosen: Vec<f64> = (0..3)
            .map(|i| -1.0 / (n * if per_token { chosen_lengths[i] } else { 1.0 }))
            .collect();
        assert_close("unlikelihood d/d chosen", &grads[0], &expected_chosen);
        assert_close("unlikelihood d/d rejected", &grads[1], &expected_rejected);
    }
}

/// `log(1 - exp(x))` against f64 `ln_1p(-exp(x))` (accurate there) and the series near 0.
#[test]
fn log1m_exp_is_accurate_and_finite() {
    let xs = [
        -1e-5, -1e-4, -5e-4, -1e-3, -2e-3, -0.1, -0.693, -1.0, -30.0, -1e4,
    ];
    let actual = values_ad(&log1m_exp(t1(&xs)));
    let expected: Vec<f64> = xs.iter().map(|&x: &f64| (-(x.exp_m1())).ln()).collect();
    assert_close("log1m_exp", &actual, &expected);
    // x = 0 (a certain completion) is capped, not -inf.
    let at_zero = values_ad(&log1m_exp(t1(&[0.0])))[0];
    assert!(at_zero.is_finite() && at_zero < -13.0, "{at_zero}");
}

/// PRO with an SFT term: golden PRO loss plus `sft_weight * (-logp_best / |y_best|)`.
#[test]
fn pro_sft_term_adds_the_best_responses_nll() {
    let golden = golden();
    let case = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["loss_type"] == "listwise")
        .unwrap();
    let ranks: Vec<usize> = case["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap() as usize)
        .collect();
    let k = ranks.len();
    let logps = floats(&case["policy_logps"]);
    let lengths = floats(&case["lengths"]);
    let best = ranks.iter().position(|&r| r == 0).unwrap();
    let weight = 0.3;
    let policy = t2(&logps, 1, k).require_grad();
    let inputs = ListwiseInputs::new(policy.clone(), t2(&lengths, 1, k), vec![ranks.clone()]);
    let output = PreferenceLoss::Pro { sft_weight: weight }
        .listwise(&inputs)
        .unwrap();
    let expected = case["pro_loss"].as_f64().unwrap() - weight * logps[best] / lengths[best];
    assert_close("pro + sft loss", &[output.loss_f64()], &[expected]);
    let mut expected_grad = floats(&case["grad_pro"]);
    expected_grad[best] -= weight / lengths[best];
    assert_close(
        "pro + sft gradient",
        &gradients(&output.loss, &[&policy])[0],
        &expected_grad,
    );
}

#[test]
fn metrics_have_trl_names_in_order() {
    let (inputs, _, _) = pairs(
        (&[-10.0, -12.0], &[-11.0, -9.0]),
        (&[-10.5, -12.5], &[-10.0, -10.0]),
        (&[5.0, 6.0], &[4.0, 3.0]),
    );
    let expected = [
        names::REWARDS_CHOSEN,
        names::REWARDS_REJECTED,
        names::REWARDS_ACCURACIES,
        names::REWARDS_MARGINS,
        names::LOGPS_CHOSEN,
        names::LOGPS_REJECTED,
    ];
    for loss in every_loss() {
        let output = loss.pairwise(&inputs).unwrap();
        let got: Vec<&str> = output.metrics.names().collect();
        let mut got_sorted = got.clone();
        got_sorted.sort_unstable();
        let mut want = expected.to_vec();
        want.sort_unstable();
        assert_eq!(got_sorted, want, "{}", loss.name());
        if loss.input_kind() == InputKind::Pairwise {
            assert_eq!(got, expected.to_vec(), "{}", loss.name());
        }
    }
    // DPO's values by hand: rewards beta (logp - ref) = 0.1 * [0.5, 0.5] and 0.1 * [-1, 1].
    let output = PreferenceLoss::default().pairwise(&inputs).unwrap();
    let values: Vec<f64> = output.metrics_f64().into_iter().map(|(_, v)| v).collect();
    assert_close(
        "dpo metrics",
        &values,
        &[0.05, 0.0, 0.5, 0.05, -11.0, -10.0],
    );

    // Listwise: per-rank rewards and logps, ranking accuracy and margins.
    let inputs = one_prompt(3, vec![vec![1, 0, 2]]);
    let output = PreferenceLoss::PlackettLuce { beta: 1.0 }
        .listwise(&inputs)
        .unwrap();
    let metrics = output.metrics_f64();
    let names: Vec<&str> = metrics.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "rewards/rank_0",
            "rewards/rank_1",
            "rewards/rank_2",
            "logps/rank_0",
            "logps/rank_1",
            "logps/rank_2",
            "rewards/accuracies",
            "rewards/margins",
        ]
    );
    // Scores s = logp - ref = [0, -1, -2] for responses ranked [1, 0, 2]: rank 0 has -1, rank 1
    // has 0, rank 2 has -2. Pairs (better, worse): (r0, r1): -1 vs 0 wrong; (r0, r2): right;
    // (r1, r2): right. Margins: -1, 1, 2.
    let values: Vec<f64> = metrics.iter().map(|(_, v)| *v).collect();
    assert_close(
        "listwise metrics",
        &values,
        &[-1.0, 0.0, -2.0, -11.0, -10.0, -12.0, 2.0 / 3.0, 2.0 / 3.0],
    );

    let output = RewardLoss::default()
        .pairwise(&RewardPairInputs::new(t1(&[1.0, 0.0]), t1(&[0.5, 2.0])))
        .unwrap();
    let metrics = output.metrics_f64();
    assert_eq!(metrics[0], (names::ACCURACY.to_string(), 0.5));
    assert_close("reward margin", &[metrics[1].1], &[(0.5 - 2.0) / 2.0]);
}
