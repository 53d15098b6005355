#![doc = include_str!("../README.md")]

mod apgd;
mod attack;
mod ensemble;
mod error;
mod fab;
mod fgsm;
mod fmn;
mod grad;
mod info;
mod losses;
mod norms;
mod pgd;
mod rows;
mod square;
mod targets;
#[cfg(test)]
mod testing;
mod transfer;

pub use apgd::{Apgd, ApgdConfig, ApgdLoss};
pub use attack::{Attack, AttackConfig};
pub use ensemble::{Cascade, Ensemble, cascade};
pub use error::{AttackError, Result, check_eps};
pub use fab::{Fab, FabConfig, project_onto_hyperplane};
pub use fgsm::Fgsm;
pub use fmn::{Fmn, FmnConfig};
pub use grad::{
    AttackLoss, LabelMode, input_gradient, loss_gradient, per_example_loss, target_labels,
};
pub use info::{Access, AttackInfo, Family, Norm};
pub use losses::dlr_loss;
pub use norms::project;
pub use pgd::{Pgd, PgdConfig};
pub use rows::mix_seed;
pub use square::{Square, SquareConfig, p_schedule};
pub use targets::TargetRule;
pub use transfer::{Cached, Transfer, TransferCache};
