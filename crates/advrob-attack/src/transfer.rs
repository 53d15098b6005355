//! Transfer (black-box) attacks: adversarial examples crafted on a surrogate model and evaluated on
//! the target, which the attack never queries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use advrob_model::Classifier;
use burn::tensor::{Int, Tensor, TensorData};
use sha2::{Digest, Sha256};

use crate::Attack;
use crate::error::Result;
use crate::info::{Access, AttackInfo};
use crate::rows::host;

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
        images: Tensor<4>,
        labels: Tensor<1, Int>,
    ) -> Result<Option<Tensor<1, Int>>> {
        self.attack.targets(self.surrogate.as_ref(), images, labels)
    }

    fn perturb_seeded(
        &self,
        _model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: f64,
        seed: u64,
    ) -> Result<Tensor<4>> {
        self.attack
            .perturb_seeded(self.surrogate.as_ref(), images, labels, eps, seed)
    }

    fn perturb_grid(
        &self,
        _model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: &[f64],
        seed: u64,
    ) -> Result<Vec<Tensor<4>>> {
        self.attack
            .perturb_grid(self.surrogate.as_ref(), images, labels, eps, seed)
    }
}

/// Examples transfer attacks crafted, kept so that the other target models of a run are handed
/// the same examples instead of crafting them again: a transfer attack never queries its target, so
/// its examples depend only on the surrogate, the attack, the images, the labels, the budgets and
/// the seed, which together are the key. Shared by the jobs of a run; entries past `budget` bytes
/// are not kept (they are crafted again, as without a cache).
#[derive(Debug)]
pub struct TransferCache {
    budget: usize,
    entries: Mutex<(Entries, usize)>,
}

/// The examples of each key, shared with the attacks handing them out.
type Entries = HashMap<[u8; 32], Arc<Vec<TensorData>>>;

impl Default for TransferCache {
    /// At most 1 GiB of examples (the default matrix keeps 250 MB: 10k MNIST images at 8 budgets).
    fn default() -> Self {
        Self::with_budget(1 << 30)
    }
}

impl TransferCache {
    /// A cache that keeps at most `budget` bytes of examples.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            budget,
            entries: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// Bytes of examples kept.
    pub fn bytes(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
    }

    fn get(&self, key: &[u8; 32]) -> Option<Arc<Vec<TensorData>>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.0.get(key).cloned()
    }

    fn put(&self, key: [u8; 32], value: Vec<TensorData>) {
        let size: usize = value.iter().map(|d| d.as_bytes().len()).sum();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.1 + size <= self.budget && !entries.0.contains_key(&key) {
            entries.0.insert(key, Arc::new(value));
            entries.1 += size;
        }
    }
}

/// A transfer attack whose examples are shared through a [`TransferCache`]: the examples are
/// those of the attack it wraps, crafted once per (images, labels, budgets, seed) for all the
/// models it is evaluated on.
pub struct Cached {
    attack: Box<dyn Attack>,
    surrogate_key: String,
    cache: Arc<TransferCache>,
}

impl Cached {
    /// Wraps `attack`, which must be a transfer attack (its examples independent of the target
    /// model; `None` otherwise). `surrogate_key` names the surrogate's weights and the attack's
    /// settings exactly (for example the surrogate's checkpoint digest and the attack's config).
    pub fn new(
        attack: Box<dyn Attack>,
        surrogate_key: String,
        cache: Arc<TransferCache>,
    ) -> std::result::Result<Self, Box<dyn Attack>> {
        if attack.info().access != Access::Transfer || !attack.components().is_empty() {
            return Err(attack);
        }
        Ok(Self {
            attack,
            surrogate_key,
            cache,
        })
    }

    fn key(&self, images: &TensorData, labels: &TensorData, eps: &[f64], seed: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.surrogate_key.as_bytes());
        h.update([0]);
        h.update(seed.to_le_bytes());
        for e in eps {
            h.update(e.to_bits().to_le_bytes());
        }
        for d in [images, labels] {
            h.update(format!("{:?}{:?}", d.dtype(), d.shape()).as_bytes());
            h.update(d.as_bytes());
        }
        h.finalize().into()
    }
}

impl Attack for Cached {
    fn info(&self) -> AttackInfo {
        self.attack.info()
    }

    fn name(&self) -> String {
        self.attack.name()
    }

    fn targets(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
    ) -> Result<Option<Tensor<1, Int>>> {
        self.attack.targets(model, images, labels)
    }

    fn perturb_seeded(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: f64,
        seed: u64,
    ) -> Result<Tensor<4>> {
        let mut one = self.perturb_grid(model, images, labels, &[eps], seed)?;
        Ok(one.remove(0))
    }

    fn perturb_grid(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: &[f64],
        seed: u64,
    ) -> Result<Vec<Tensor<4>>> {
        // through the host readback: to_data on a shared burn-ndarray tensor copies element by
        // element (labels are a few hundred integers)
        let key = self.key(&host_data(&images)?, &labels.to_data(), eps, seed);
        let device = images.device();
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit
                .iter()
                .map(|d| Tensor::from_data(d.clone(), &device))
                .collect());
        }
        let advs = self.attack.perturb_grid(model, images, labels, eps, seed)?;
        self.cache
            .put(key, advs.iter().map(host_data).collect::<Result<_>>()?);
        Ok(advs)
    }
}

/// `t`'s values and shape as [`TensorData`], read back through [`host`].
fn host_data(t: &Tensor<4>) -> Result<TensorData> {
    Ok(TensorData::new(host(t.clone())?, t.dims()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fgsm;
    use advrob_model::backend::on_test_backends;
    use advrob_model::{Deployed, MlpConfig};
    use burn::tensor::{Device, TensorData};

    /// A small MLP of seed `seed`.
    fn net(seed: u64, device: &Device) -> advrob_model::Mlp {
        MlpConfig::new()
            .with_hidden(vec![8])
            .with_seed(seed)
            .init(device)
            .expect("init")
    }

    /// Two grey images labelled 3 and 4.
    fn batch(device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        (
            Tensor::<4>::ones([2, 1, 28, 28], device) * 0.4,
            Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 4], [2]), device),
        )
    }

    #[test]
    fn crafts_on_the_surrogate_not_on_the_target() {
        on_test_backends(|device| {
            let device = device.clone();
            let net = |seed| net(seed, &device);
            let (target, surrogate) = (net(1), net(2));
            let (x, y) = batch(&device);
            let transfer = Transfer {
                surrogate_name: "s".into(),
                surrogate: Box::new(Deployed::plain(surrogate.clone())),
                attack: Box::new(Fgsm::new()),
            };
            assert_eq!(transfer.name(), "transfer-fgsm-from-s");
            let host = |t: Tensor<4>| t.into_data().try_into_vec_as::<f32>().expect("f32");
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

    fn pgd() -> Box<dyn Attack> {
        use crate::AttackConfig;
        crate::PgdConfig::linf(3).build().expect("pgd")
    }

    #[test]
    fn a_cached_transfer_hands_every_target_the_examples_crafted_once() {
        on_test_backends(|device| {
            let device = device.clone();
            let net = |seed| net(seed, &device);
            let transfer = |seed| Transfer {
                surrogate_name: "s".into(),
                surrogate: Box::new(Deployed::plain(net(seed))),
                attack: pgd(),
            };
            let cache = Arc::new(TransferCache::default());
            let cached = Cached::new(Box::new(transfer(2)), "s/pgd".into(), cache.clone())
                .unwrap_or_else(|_| panic!("a transfer attack is cached"));
            let (x, y) = batch(&device);
            let host = |ts: Vec<Tensor<4>>| {
                ts.into_iter()
                    .map(|t| t.into_data().try_into_vec_as::<f32>().expect("f32"))
                    .collect::<Vec<_>>()
            };
            let eps = [0.1, 0.2];
            let (t1, t2) = (net(5), net(6));
            let direct = host(
                transfer(2)
                    .perturb_grid(&t1, x.clone(), y.clone(), &eps, 9)
                    .expect("grid"),
            );
            let first = host(
                cached
                    .perturb_grid(&t1, x.clone(), y.clone(), &eps, 9)
                    .expect("grid"),
            );
            let kept = cache.bytes();
            assert_eq!(kept, 2 * 2 * 28 * 28 * 4, "two budgets of two images kept");
            let second = host(
                cached
                    .perturb_grid(&t2, x.clone(), y.clone(), &eps, 9)
                    .expect("grid"),
            );
            assert_eq!(first, direct);
            assert_eq!(second, direct, "another target, the same examples");
            assert_eq!(cache.bytes(), kept, "served from the cache");
            // another seed, other images or other labels are other entries
            let _ = cached
                .perturb_grid(&t2, x.clone(), y.clone(), &eps, 10)
                .expect("grid");
            assert_eq!(cache.bytes(), 2 * kept);
            let y2 = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 5], [2]), &device);
            let _ = cached.perturb_grid(&t2, x, y2, &eps, 9).expect("grid");
            assert_eq!(cache.bytes(), 3 * kept);
            // a white-box attack is refused: its examples depend on the model
            assert!(Cached::new(pgd(), "k".into(), cache).is_err());
        });
    }

    #[test]
    fn a_full_cache_keeps_nothing_more_and_still_answers() {
        let device = Default::default();
        let net = |seed| net(seed, &device);
        let cache = Arc::new(TransferCache::with_budget(100));
        let cached = Cached::new(
            Box::new(Transfer {
                surrogate_name: "s".into(),
                surrogate: Box::new(Deployed::plain(net(2))),
                attack: Box::new(Fgsm::new()),
            }),
            "s/fgsm".into(),
            cache.clone(),
        )
        .unwrap_or_else(|_| panic!("cached"));
        let (x, y) = batch(&device);
        let out = cached.perturb_grid(&net(1), x, y, &[0.1], 0).expect("grid");
        assert_eq!(out.len(), 1);
        assert_eq!(cache.bytes(), 0);
    }
}
