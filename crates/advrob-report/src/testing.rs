//! Records for the tests: synthetic, with the typed attack metadata their names stand for.

use advrob_attack::{ApgdConfig, AttackLoss, Fgsm, FmnConfig, PgdConfig, TargetRule};
use advrob_eval::EvalRecord;
use advrob_experiment::record::Versions;
use advrob_experiment::{AttackSpec, Record, Registry};

/// The attack entry a test's attack name stands for (the tests name attacks as the matrix would).
pub(crate) fn spec_of(name: &str) -> AttackSpec {
    let pgd = |steps| PgdConfig::linf(steps);
    match name {
        "fgsm" => AttackSpec::fgsm(),
        "fgsm-targeted-shift2" => {
            AttackSpec::new("fgsm", &Fgsm::new().with_target(TargetRule::Shift(2)))
        }
        "fgsm-cumulative" => AttackSpec::new("fgsm", &Fgsm::new().with_cumulative(true)),
        "pgd-linf-10" => AttackSpec::pgd(pgd(10)),
        "pgd-linf-20" => AttackSpec::pgd(pgd(20)),
        "pgd-linf-10-margin-bpda" => AttackSpec::pgd(PgdConfig {
            loss: AttackLoss::Margin,
            bpda: true,
            ..pgd(10)
        }),
        "transfer-pgd-linf-10-from-s" => AttackSpec::transfer("s", AttackSpec::pgd(pgd(10))),
        "fmn-linf-100" => AttackSpec::new("fmn", &FmnConfig::default()),
        "ensemble" => {
            AttackSpec::ensemble("ensemble", vec![AttackSpec::new("apgd", &ApgdConfig::ce())])
        }
        other => panic!("no test attack named {other}"),
    }
}

/// `r` under the attack `name` stands for: name, settings and metadata.
pub(crate) fn set_attack(r: &mut Record, name: &str) {
    let d = Registry::default()
        .describe(&spec_of(name))
        .expect("test attack");
    assert_eq!(d.name, name, "the test name is the attack's name");
    r.attack = d.name;
    r.attack_config = d.config;
    r.attack_info = Some(d.info);
    r.key = format!("{}/{name}/e/{}", r.model_key(), r.eval.eps);
}

/// A record of `model` under FGSM at `eps`: 100 examples, clean and adversarial accuracy as given.
pub(crate) fn rec(model: &str, seed: u64, eps: f64, clean: f64, adv: f64) -> Record {
    let mut r = Record {
        schema: advrob_experiment::record::SCHEMA,
        key: String::new(),
        run: "t".into(),
        preset: "default".into(),
        model: model.into(),
        model_key: format!("{model}-{seed}"),
        defense: "none".into(),
        defense_config: serde_json::Value::Null,
        fine_tuned_from: None,
        teacher: None,
        deploy_config: serde_json::Value::Null,
        attack: String::new(),
        attack_config: serde_json::Value::Null,
        attack_info: None,
        attack_labels: "true".into(),
        loss: "cross-entropy".into(),
        backend: "ndarray".into(),
        device: "cpu".into(),
        seed,
        dataset: "mnist".into(),
        dataset_verified: true,
        dataset_files: vec![],
        model_config: serde_json::Value::Null,
        train_config: serde_json::Value::Null,
        train_examples: 10,
        checkpoint_sha256: "00".into(),
        train_seconds: 1.0,
        from_cache: false,
        stages: vec![],
        eval: EvalRecord {
            eps,
            examples: 100,
            clean_correct: (clean * 100.0).round() as usize,
            adversarial_correct: (adv * 100.0).round() as usize,
            clean_accuracy: clean,
            adversarial_accuracy: adv,
            success_rate: Some(1.0 - adv / clean),
            targeted_success: None,
            mean_linf: eps,
            mean_l2: eps,
            mean_confidence: 0.9,
            seconds: 0.1,
            adversarial_correct_examples: None,
            components: None,
            min_norm: None,
            costs: None,
            passes: None,
        },
        versions: Versions::current(),
        unix_time: 0,
    };
    set_attack(&mut r, "fgsm");
    r
}
