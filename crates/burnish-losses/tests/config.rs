//! The loss configs load from TOML tables, fill documented defaults, reject unknown keys and
//! names, and say which losses need a reference model.

use burnish_losses::{InputKind, PreferenceLoss, RewardLoss};
use serde::Deserialize;

#[derive(Deserialize)]
struct TrainConfig {
    loss: PreferenceLoss,
}

fn parse(text: &str) -> Result<PreferenceLoss, toml::de::Error> {
    toml::from_str::<TrainConfig>(text).map(|c| c.loss)
}

#[test]
fn rdpo_loads_from_a_toml_table() {
    let loss = parse("[loss]\nloss_type = \"rdpo\"\nbeta = 0.1\nalpha = 0.05\n").unwrap();
    assert_eq!(
        loss,
        PreferenceLoss::Rdpo {
            beta: 0.1,
            alpha: 0.05
        }
    );
    assert!(loss.validate().is_ok());
}

#[test]
fn every_field_has_a_default() {
    let cases = [
        (
            "sigmoid",
            PreferenceLoss::Sigmoid {
                beta: 0.1,
                label_smoothing: 0.0,
                reference_free: false,
            },
        ),
        (
            "ipo",
            PreferenceLoss::Ipo {
                beta: 0.1,
                normalize_by_length: true,
            },
        ),
        ("hinge", PreferenceLoss::Hinge { beta: 0.1 }),
        (
            "robust",
            PreferenceLoss::Robust {
                beta: 0.1,
                label_smoothing: 0.0,
            },
        ),
        (
            "rdpo",
            PreferenceLoss::Rdpo {
                beta: 0.1,
                alpha: 0.0,
            },
        ),
        (
            "simpo",
            PreferenceLoss::Simpo {
                beta: 2.0,
                gamma: 0.5,
            },
        ),
        (
            "sft",
            PreferenceLoss::Sft {
                normalize_by_length: true,
            },
        ),
        (
            "preferred_ft",
            PreferenceLoss::Sft {
                normalize_by_length: true,
            },
        ),
        (
            "unlikelihood",
            PreferenceLoss::Unlikelihood {
                alpha: 1.0,
                normalize_by_length: true,
            },
        ),
        ("pro", PreferenceLoss::Pro { sft_weight: 0.0 }),
        ("plackett_luce", PreferenceLoss::PlackettLuce { beta: 0.1 }),
    ];
    for (name, expected) in cases {
        let loss = parse(&format!("[loss]\nloss_type = \"{name}\"\n")).unwrap();
        assert_eq!(loss, expected, "{name}");
        assert!(loss.validate().is_ok(), "{name}");
    }
    assert_eq!(
        PreferenceLoss::default(),
        parse("[loss]\nloss_type = \"sigmoid\"").unwrap()
    );
}

#[test]
fn configs_round_trip_through_toml() {
    let losses = [
        PreferenceLoss::Sigmoid {
            beta: 0.2,
            label_smoothing: 0.1,
            reference_free: true,
        },
        PreferenceLoss::Unlikelihood {
            alpha: 0.5,
            normalize_by_length: false,
        },
        PreferenceLoss::PlackettLuce { beta: 0.3 },
    ];
    for loss in losses {
        #[derive(serde::Serialize)]
        struct Wrapper<'a> {
            loss: &'a PreferenceLoss,
        }
        let text = toml::to_string(&Wrapper { loss: &loss }).unwrap();
        assert!(
            text.contains(&format!("loss_type = \"{}\"", loss.name())),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), loss);
    }
}

#[test]
fn unknown_keys_and_names_are_errors_that_name_them() {
    let err = parse("[loss]\nloss_type = \"rdpo\"\napha = 0.05\n").unwrap_err();
    assert!(err.to_string().contains("apha"), "{err}");
    let err = parse("[loss]\nloss_type = \"dpoo\"\n").unwrap_err();
    assert!(err.to_string().contains("dpoo"), "{err}");
    let err = parse("[loss]\nbeta = 0.1\n").unwrap_err();
    assert!(err.to_string().contains("loss_type"), "{err}");
}

#[test]
fn out_of_range_values_load_but_do_not_validate() {
    let loss = parse("[loss]\nloss_type = \"sigmoid\"\nbeta = -1.0\n").unwrap();
    let err = loss.validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "loss `sigmoid`: beta = -1 is invalid, expected a finite number > 0"
    );
}

#[test]
fn losses_say_whether_they_need_a_reference_and_which_data() {
    let table = [
        ("[loss]\nloss_type = \"sigmoid\"", true, InputKind::Pairwise),
        (
            "[loss]\nloss_type = \"sigmoid\"\nreference_free = true",
            false,
            InputKind::Pairwise,
        ),
        ("[loss]\nloss_type = \"ipo\"", true, InputKind::Pairwise),
        ("[loss]\nloss_type = \"hinge\"", true, InputKind::Pairwise),
        ("[loss]\nloss_type = \"robust\"", true, InputKind::Pairwise),
        ("[loss]\nloss_type = \"rdpo\"", true, InputKind::Pairwise),
        ("[loss]\nloss_type = \"simpo\"", false, InputKind::Pairwise),
        ("[loss]\nloss_type = \"sft\"", false, InputKind::Pairwise),
        (
            "[loss]\nloss_type = \"unlikelihood\"",
            false,
            InputKind::Pairwise,
        ),
        ("[loss]\nloss_type = \"pro\"", false, InputKind::Listwise),
        (
            "[loss]\nloss_type = \"plackett_luce\"",
            true,
            InputKind::Listwise,
        ),
    ];
    for (text, needs_reference, kind) in table {
        let loss = parse(text).unwrap();
        assert_eq!(loss.needs_reference(), needs_reference, "{text}");
        assert_eq!(loss.input_kind(), kind, "{text}");
    }
}

#[test]
fn reward_loss_loads_from_toml() {
    #[derive(Deserialize)]
    struct RewardConfig {
        loss: RewardLoss,
    }
    let text = "[loss]\nloss_type = \"bradley_terry\"\ncenter_rewards_coefficient = 0.01\n";
    let config: RewardConfig = toml::from_str(text).unwrap();
    assert_eq!(
        config.loss,
        RewardLoss::BradleyTerry {
            center_rewards_coefficient: 0.01
        }
    );
    let config: RewardConfig = toml::from_str("[loss]\nloss_type = \"bradley_terry\"").unwrap();
    assert_eq!(config.loss, RewardLoss::default());
}
