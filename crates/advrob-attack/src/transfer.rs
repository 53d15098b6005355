//! Transfer (black-box) attacks: adversarial examples crafted on a surrogate model and evaluated on
//! the target, which the attack never queries.

use advrob_model::Classifier;
use burn::tensor::{Int, Tensor};

use crate::Attack;
use crate::error::Result;
use crate::info::{Access, AttackInfo};

/// `attack` run against `surrogate`; the model it is evaluated on is ignored while crafting.
pub struct Transfer {
    /// Name of the surrogate, for the attack's name.
    pub surrogate_name: String,
    /// The model the examples are crafted on (by default an independently trained undefended one).
    pub surrogate: Box<dyn Classifier>,
    /// The white-box attack run on the surrogate.
    pub attack: Box<dyn Attack>,
}

impl Attack for Transfer {
    fn info(&self) -> AttackInfo {
        AttackInfo {
            access: Access::Transfer,
            ..self.attack.info()
        }
    }

    fn name(&self) -> String {
        format!(
            "transfer-{}-from-{}",
            self.attack.name(),
            self.surrogate_name
        )
    }

    fn targets(
        &self,
        _model: &dyn Classifier,
        images: Tensor<3>,
        labels: Tensor<1, Int>,
    ) -> Result<Option<Tensor<1, Int>>> {
        self.attack.targets(self.surrogate.as_ref(), images, labels)
    }

    fn perturb_seeded(
        &self,
        _model: &dyn Classifier,
        images: Tensor<3>,
        labels: Tensor<1, Int>,
        eps: f64,
        seed: u64,
    ) -> Result<Tensor<3>> {
        self.attack
            .perturb_seeded(self.surrogate.as_ref(), images, labels, eps, seed)
    }

    fn perturb_grid(
        &self,
        _model: &dyn Classifier,
        images: Tensor<3>,
        labels: Tensor<1, Int>,
        eps: &[f64],
        seed: u64,
    ) -> Result<Vec<Tensor<3>>> {
        self.attack
            .perturb_grid(self.surrogate.as_ref(), images, labels, eps, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fgsm;
    use advrob_model::backend::on_test_backends;
    use advrob_model::{Deployed, MlpConfig};
    use burn::tensor::TensorData;

    #[test]
    fn crafts_on_the_surrogate_not_on_the_target() {
        on_test_backends(|device| {
            let device = device.clone();
            let net = |seed| {
                MlpConfig::new()
                    .with_hidden(vec![8])
                    .with_seed(seed)
                    .init(&device)
                    .expect("init")
            };
            let (target, surrogate) = (net(1), net(2));
            let x = Tensor::<3>::ones([2, 28, 28], &device) * 0.4;
            let y = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 4], [2]), &device);
            let transfer = Transfer {
                surrogate_name: "s".into(),
                surrogate: Box::new(Deployed::plain(surrogate.clone())),
                attack: Box::new(Fgsm::new()),
            };
            assert_eq!(transfer.name(), "transfer-fgsm-from-s");
            let host = |t: Tensor<3>| t.into_data().try_into_vec_as::<f32>().expect("f32");
            let a = host(
                transfer
                    .perturb(&target, x.clone(), y.clone(), 0.1)
                    .expect("transfer"),
            );
            let on_surrogate = host(
                Fgsm::new()
                    .perturb(&surrogate, x.clone(), y.clone(), 0.1)
                    .expect("fgsm"),
            );
            let on_target = host(Fgsm::new().perturb(&target, x, y, 0.1).expect("fgsm"));
            assert_eq!(a, on_surrogate);
            assert_ne!(a, on_target);
        });
    }
}
