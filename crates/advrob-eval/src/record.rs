//! What an evaluation measures: one record per ε, and the per-example results it keeps.

use serde::{Deserialize, Serialize};

/// The robustness of one model against one attack at one ε, over a set of examples.
///
/// Every count and mean is over the `examples` evaluated (all of them, correctly classified or
/// not) unless its doc says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// The attack's budget.
    pub eps: f64,
    /// Number of examples evaluated.
    pub examples: usize,
    /// Examples whose clean prediction equals the label.
    pub clean_correct: usize,
    /// Examples classified correctly both before the attack and on the adversarial input (an
    /// example the model already gets wrong is never robust, even where the attack's random start
    /// happens to repair it): RobustBench's and AutoAttack's count.
    pub adversarial_correct: usize,
    /// `clean_correct / examples`.
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
    pub clean_accuracy: f64,
    /// `adversarial_correct / examples`: robust accuracy under this attack; never above
    /// `clean_accuracy`.
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
    pub adversarial_accuracy: f64,
    /// Attack success rate: among the examples correctly classified before the attack, the share
    /// misclassified after it. `None` when no example was correct to begin with. (This is not the
    /// notebooks' `1 − adv_acc / clean_acc`, which also credits examples that the attack happens
    /// to fix.)
    pub success_rate: Option<f64>,
    /// Targeted attacks only: the share of all examples whose prediction on the adversarial input
    /// equals the attack's target class (the success of a targeted attack; accuracy against the
    /// true label does not measure it). `None` for untargeted attacks.
    #[serde(default)]
    pub targeted_success: Option<f64>,
    /// Mean over examples of ‖x_adv − x‖∞, measured after clipping.
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
    pub mean_linf: f64,
    /// Mean over examples of ‖x_adv − x‖₂, measured after clipping.
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
    pub mean_l2: f64,
    /// Mean over examples of the softmax probability of the predicted class on the adversarial
    /// input.
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
    pub mean_confidence: f64,
    /// Wall time of evaluating the whole ε grid this record belongs to (attack and inference);
    /// the same in every record of one grid, since work such as FGSM's gradient is shared.
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
    pub seconds: f64,
    /// Per example, in the order evaluated: whether it is counted in `adversarial_correct`
    /// (correct before and after the attack). What per-example statistics need (the worst case
    /// over attacks, paired tests between models, bootstrap intervals). Absent in records written
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversarial_correct_examples: Option<Bits>,
    /// An ensemble's components in the order they ran, each with the number of examples it broke
    /// first (at this ε or, carried over, at a smaller one). `None` for a single attack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<ComponentResult>>,
    /// A minimum-norm attack's smallest perturbations, over the examples classified correctly
    /// before the attack. `None` for an attack with a fixed budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_norm: Option<MinNorm>,
    /// Examples passed through the model for the whole ε grid this record belongs to (attack
    /// and inference), the same in every record of one grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes: Option<Passes>,
    /// What an ensemble's breaks cost ([`Costs`]): `None` for a single attack, for an ensemble
    /// whose components do not count their passes, and in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub costs: Option<Costs>,
}

/// The attack effort behind an ensemble's figure, per example: what a cost curve (robust accuracy
/// against the model passes spent per example) is drawn from. A pass is counted per example:
/// forward 1, forward and backward 2, the components' own passes only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Costs {
    /// For every example counted broken (correct before the attack, wrong after), the passes
    /// spent on it up to and including the one that first broke it (at this ε or a smaller one
    /// of the grid), ascending. Robust accuracy at an effort of B passes per example is
    /// `(clean_correct − #{c ≤ B}) / examples`.
    pub first_success: Vec<u64>,
    /// The most passes spent on any one example (the effort behind the figure: every example
    /// still robust had up to this many).
    pub most: u64,
}

impl Costs {
    /// Robust accuracy had every example been given at most `budget` passes, from a record's
    /// `clean_correct` and `examples`.
    pub fn robust_at(&self, budget: u64, clean_correct: usize, examples: usize) -> f64 {
        let broken = self.first_success.partition_point(|&c| c <= budget);
        (clean_correct.saturating_sub(broken)) as f64 / examples.max(1) as f64
    }
}

/// One component of an ensemble in a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentResult {
    /// Its name.
    pub attack: String,
    /// What it is.
    pub info: advrob_attack::AttackInfo,
    /// Examples it broke that every earlier component (and every smaller ε) had left robust.
    pub broken: usize,
    /// Examples it was run on: the evaluation plan attacks only those classified correctly
    /// without attack that no earlier component, at this ε or a smaller one, had broken, and
    /// skips the rest (`examples − attacked`), whose outcome no attack could change. `None` in
    /// records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attacked: Option<usize>,
}

/// What a minimum-norm attack found, over the examples classified correctly before the attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinNorm {
    /// Examples it broke at some budget.
    pub found: usize,
    /// Examples it was run on (the clean-correct ones).
    pub attacked: usize,
    /// The median smallest perturbation ε* (examples never broken count as infinite); `None`
    /// when at least half were never broken.
    pub median: Option<f64>,
}

/// Examples passed through the model: every forward pass, and those of them that also took a
/// gradient with respect to the input (forward and backward).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passes {
    /// Examples × forward passes.
    pub forward: u64,
    /// Examples × forward-and-backward passes (included in `forward`).
    pub backward: u64,
}

/// A vector of booleans, serialised as a hexadecimal string (4 examples per character, first
/// example in the highest bit of the first character) followed by `:` and the length.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bits(pub Vec<bool>);

impl Bits {
    /// Number of set entries.
    pub fn count(&self) -> usize {
        self.0.iter().filter(|b| **b).count()
    }

    /// The hexadecimal form.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(self.0.len() / 4 + 8);
        for chunk in self.0.chunks(4) {
            let mut v = 0u32;
            for (i, b) in chunk.iter().enumerate() {
                if *b {
                    v |= 8 >> i;
                }
            }
            s.push(char::from_digit(v, 16).unwrap_or('0'));
        }
        s.push(':');
        s.push_str(&self.0.len().to_string());
        s
    }

    /// Parses [`Bits::encode`]'s form; an error says what is wrong.
    pub fn decode(s: &str) -> std::result::Result<Self, String> {
        let (hex, len) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("no ':length' at the end of {:.20}…", s))?;
        let len: usize = len.parse().map_err(|e| format!("length {len:?}: {e}"))?;
        if hex.len() != len.div_ceil(4) {
            return Err(format!(
                "{} hexadecimal digits for {len} entries (expected {})",
                hex.len(),
                len.div_ceil(4)
            ));
        }
        let mut out = Vec::with_capacity(len);
        for c in hex.chars() {
            let v = c
                .to_digit(16)
                .ok_or_else(|| format!("{c:?} is not a hexadecimal digit"))?;
            for i in 0..4 {
                if out.len() < len {
                    out.push(v & (8 >> i) != 0);
                }
            }
        }
        Ok(Self(out))
    }
}

impl Serialize for Bits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Bits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Bits::decode(&s).map_err(serde::de::Error::custom)
    }
}
