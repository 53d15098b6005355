//! The evaluation of one cell's models: what each still lacks (its shard's share, less what the
//! records hold), every attack over its ε grid, a record per ε appended after every (model,
//! attack), and the checkpoint's observations for the report.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use advrob_data::{Dataset, Split};
use advrob_eval::{EvalRequest, evaluate};
use advrob_model::Deployed;

use super::models::{ModelInfo, Models};
use super::{Event, Observer, RunSummary, Shard, json, write_matrix};
use crate::error::{ExperimentError, Result};
use crate::layout::RunDir;
use crate::matrix::Matrix;
use crate::record::{EvalKey, Record, SCHEMA, Versions, record_key};
use crate::registry::{Described, Registry};
use crate::store::{Lock, RecordLog, read_run};
use crate::{certified, observe, smoothed};

/// The model a record is about: its place in the matrix, its deployed form and where it came from.
#[derive(Clone, Copy)]
pub(super) struct Evaluated<'m> {
    pub(super) i: usize,
    pub(super) model: &'m Deployed,
    pub(super) info: &'m ModelInfo,
}

/// Where the records of one dataset go.
pub(super) struct EvalContext<'a> {
    pub(super) matrix: &'a Matrix,
    pub(super) registry: &'a Registry,
    /// The share of the units this run does.
    pub(super) shard: Option<Shard>,
    pub(super) transfer_cache: &'a std::sync::Arc<advrob_attack::TransferCache>,
    /// The (dataset, backend, seed) cell, counted in the matrix's order.
    pub(super) cell: usize,
    pub(super) attacks: &'a [Described],
    pub(super) ds: &'a Dataset,
    pub(super) ds_name: &'a str,
    pub(super) test_split: &'a Split,
    pub(super) run: &'a RunDir,
    pub(super) log: &'a mut RecordLog,
    /// The keys already settled ([`crate::RunRecords::settled`]).
    pub(super) records: &'a mut BTreeSet<String>,
    pub(super) summary: &'a mut RunSummary,
}

impl EvalContext<'_> {
    /// The key of the evaluation of attack `ai` (everything but the model and ε).
    pub(super) fn eval_key(&self, ai: usize) -> String {
        let a = &self.attacks[ai];
        let grid_dependent = a.info.family == advrob_attack::Family::Ensemble || !a.info.bounded;
        EvalKey {
            attack: &a.config,
            grid: grid_dependent.then(|| grid(self.matrix, ai)),
            data: &self.ds.fingerprint(),
            test_examples: self.test_split.len(),
            batch_size: self.matrix.eval.batch_size,
        }
        .digest()
    }

    /// The attacks of model `i` this run does: all, or its shard's.
    pub(super) fn owned(&self, i: usize) -> Vec<usize> {
        let (n_models, n_attacks) = (self.matrix.models.len(), self.attacks.len());
        (0..n_attacks)
            .filter(|ai| {
                let unit = (self.cell * n_models + i) * n_attacks + ai;
                self.shard.is_none_or(|s| s.owns(unit))
            })
            .collect()
    }

    /// Per attack this run does, the budgets of model `i` without a record yet.
    pub(super) fn todo(&self, models: &Models<'_>, i: usize) -> Vec<(usize, Vec<f64>)> {
        let model_key = &models.plans[i].key;
        self.owned(i)
            .into_iter()
            .map(|ai| {
                let key = self.eval_key(ai);
                let eps: Vec<f64> = grid(self.matrix, ai)
                    .iter()
                    .copied()
                    .filter(|&e| {
                        !self.records.contains(&record_key(
                            model_key,
                            &self.attacks[ai].name,
                            &key,
                            e,
                        ))
                    })
                    .collect();
                (ai, eps)
            })
            .filter(|(_, eps)| !eps.is_empty())
            .collect()
    }

    /// Whether model `i` has records left to write, or its checkpoint has no observations yet
    /// ([`crate::observe`]: a run killed after its last record redoes them).
    pub(super) fn has_work(&self, models: &Models<'_>, i: usize) -> bool {
        !self.todo(models, i).is_empty()
            || !self.observed(models, i)
            || !self.bounds_todo(models, i).is_empty()
            || self.smoothing_todo(models, i)
    }

    /// The test examples the verifier takes.
    fn verify_examples(&self) -> usize {
        let n = self.test_split.len();
        self.matrix.verify.test_limit.map_or(n, |l| l.min(n))
    }

    /// The radii model `i` has no certified bounds for yet ([`crate::certified`]): none when the
    /// matrix verifies nothing or the verifier refused the model; all of them when its file is
    /// of other settings, test examples or weights' key.
    fn bounds_todo(&self, models: &Models<'_>, i: usize) -> Vec<f64> {
        let spec = &self.matrix.verify;
        if !spec.enabled {
            return Vec::new();
        }
        let all = certified::radii(spec, &self.matrix.eps);
        match self.bounds_so_far(models, i) {
            Some(c) if c.refusal_stands(spec.cnns) => Vec::new(),
            // a CNN left out while verify.cnns was false, or a refusal by an older verifier
            Some(c) if c.refused.is_some() => all,
            Some(c) => all
                .into_iter()
                .filter(|e| !c.radii.iter().any(|r| r.eps == *e))
                .collect(),
            None => all,
        }
    }

    /// Model `i`'s bounds file when it is of this matrix's settings (an unreadable one is
    /// redone).
    fn bounds_so_far(&self, models: &Models<'_>, i: usize) -> Option<certified::Certified> {
        let plan = &models.plans[i];
        certified::read(self.run, &plan.dir)
            .ok()
            .flatten()
            .filter(|c| {
                c.model_key == plan.key
                    && c.test_examples == self.verify_examples()
                    && c.settings == certified::settings(&self.matrix.verify)
                    && c.backend == models.backend
            })
    }

    /// Certified bounds of model `i` at `todo` ([`crate::certified`]), the file rewritten after
    /// every radius.
    fn certify(
        &self,
        models: &Models<'_>,
        i: usize,
        model: &Deployed,
        info: &ModelInfo,
        todo: &[f64],
    ) -> Result<()> {
        let plan = &models.plans[i];
        let start = self
            .bounds_so_far(models, i)
            .filter(|c| c.checkpoint_sha256 == info.checkpoint_sha256 && c.refused.is_none())
            .unwrap_or_else(|| certified::Certified {
                side: certified::Side::Lower,
                model: self.matrix.models[i].name.clone(),
                model_key: plan.key.clone(),
                backend: models.backend.to_string(),
                seed: models.seed,
                checkpoint_sha256: info.checkpoint_sha256.clone(),
                test_examples: self.verify_examples(),
                settings: certified::settings(&self.matrix.verify),
                refused: None,
                radii: Vec::new(),
                verifier: certified::VERIFIER.into(),
            });
        let subject = certified::Subject {
            model,
            test: self.test_split,
            device: models.device,
            cnns: self.matrix.verify.cnns,
        };
        certified::extend(&subject, start, todo, &mut |c| {
            certified::write(self.run, &plan.dir, c)
        })?;
        Ok(())
    }

    /// The test examples randomized smoothing takes.
    fn smoothing_examples(&self) -> usize {
        let n = self.test_split.len();
        self.matrix.smoothing.test_limit.map_or(n, |l| l.min(n))
    }

    /// The smoothing settings of model `i`: none when the matrix smooths nothing or the model
    /// has no σ ([`smoothed::sigma_of`]).
    fn smoothing_settings(&self, i: usize) -> Option<advrob_verify::SmoothingSettings> {
        let spec = &self.matrix.smoothing;
        if !spec.enabled {
            return None;
        }
        smoothed::sigma_of(&self.matrix.models[i], spec).map(|sigma| spec.settings(sigma))
    }

    /// Model `i`'s smoothing file when it is of `settings`, this matrix's test examples, the
    /// model's key and backend (its radii may differ: they are tabulated from it).
    fn smoothing_so_far(
        &self,
        models: &Models<'_>,
        i: usize,
        settings: &advrob_verify::SmoothingSettings,
    ) -> Option<smoothed::SmoothedRun> {
        let plan = &models.plans[i];
        smoothed::read(self.run, &plan.dir)
            .ok()
            .flatten()
            .filter(|s| {
                s.model_key == plan.key
                    && s.settings == *settings
                    && s.test_examples == self.smoothing_examples()
                    && s.backend == models.backend
            })
    }

    /// Whether model `i` has smoothing left to do: certificates, or certified accuracy at radii
    /// its file lacks.
    fn smoothing_todo(&self, models: &Models<'_>, i: usize) -> bool {
        self.smoothing_settings(i).is_some_and(|settings| {
            !self
                .smoothing_so_far(models, i, &settings)
                .is_some_and(|s| s.accuracy.iter().map(|a| a.radius).eq(self.radii()))
        })
    }

    /// The L2 radii the matrix reports smoothing at.
    fn radii(&self) -> impl Iterator<Item = f64> + '_ {
        self.matrix.smoothing.radii.iter().copied()
    }

    /// Randomized smoothing's certificates for model `i` (into its file): nothing when its file
    /// is of these settings and weights and has every radius; its radii tabulated again when it
    /// only lacks some; certified anew otherwise (other settings, test examples, key, backend, or
    /// retrained weights).
    fn smooth(
        &self,
        models: &Models<'_>,
        i: usize,
        model: &Deployed,
        info: &ModelInfo,
    ) -> Result<()> {
        let Some(settings) = self.smoothing_settings(i) else {
            return Ok(());
        };
        let plan = &models.plans[i];
        let radii = &self.matrix.smoothing.radii;
        if let Some(mut done) = self
            .smoothing_so_far(models, i, &settings)
            .filter(|s| s.checkpoint_sha256 == info.checkpoint_sha256)
        {
            if done.accuracy.iter().map(|a| a.radius).eq(self.radii()) {
                return Ok(());
            }
            smoothed::tabulate(&mut done, radii);
            return smoothed::write(self.run, &plan.dir, &done);
        }
        let start = smoothed::SmoothedRun {
            threat_model: smoothed::THREAT_MODEL.into(),
            model: self.matrix.models[i].name.clone(),
            model_key: plan.key.clone(),
            backend: models.backend.to_string(),
            seed: models.seed,
            checkpoint_sha256: info.checkpoint_sha256.clone(),
            test_examples: self.smoothing_examples(),
            settings,
            seconds: 0.0,
            abstained: 0,
            accuracy: Vec::new(),
            radii_correct: Vec::new(),
        };
        let subject = smoothed::Subject {
            model,
            test: self.test_split,
            device: models.device,
        };
        let done = smoothed::certify(&subject, start, radii)?;
        smoothed::write(self.run, &plan.dir, &done)
    }

    /// Whether model `i`'s checkpoint has its observations.
    pub(super) fn observed(&self, models: &Models<'_>, i: usize) -> bool {
        self.run.observations_of(&models.plans[i].dir).exists()
    }

    /// Measures model `i` for the report ([`crate::observe`]): the probe on the run's test
    /// examples and the example grid under the matrix's [`observe::grid_attack`].
    pub(super) fn observe(
        &self,
        models: &Models<'_>,
        i: usize,
        model: &Deployed,
        info: &ModelInfo,
    ) -> Result<()> {
        let plan = &models.plans[i];
        let mut probe =
            advrob_eval::probe(model, plan.net.classes(), self.test_split, models.device)?;
        if let Some(ai) = observe::quoted_attack(self.attacks.iter().map(|a| &a.info)) {
            self.test_quoted(models, i, model, ai, &mut probe)?;
        }
        let grid = match observe::grid_attack(self.attacks.iter().map(|a| &a.info)) {
            Some(ai) => {
                let attack = self.attack_on_its_own(
                    &self.matrix.attacks[ai],
                    "a transfer attack draws no example grid",
                )?;
                Some(observe::example_grid(
                    model,
                    (&self.attacks[ai].name, attack.as_ref()),
                    self.test_split,
                    grid(self.matrix, ai),
                    models.device,
                )?)
            }
            None => None,
        };
        let obs = observe::Observations {
            model: self.matrix.models[i].name.clone(),
            model_key: plan.key.clone(),
            backend: models.backend.to_string(),
            seed: models.seed,
            checkpoint_sha256: info.checkpoint_sha256.clone(),
            test_examples: self.test_split.len(),
            probe,
            grid,
        };
        observe::write(self.run, &plan.dir, &obs)
    }

    /// The attack `spec` describes, built without the matrix's models: a transfer attack, which
    /// would need its surrogate, is refused saying `why`.
    fn attack_on_its_own(
        &self,
        spec: &crate::AttackSpec,
        why: &str,
    ) -> Result<Box<dyn advrob_attack::Attack>> {
        self.registry.attack(spec, &mut |name| {
            Err(ExperimentError::invalid("attack", format!("{name}: {why}")))
        })
    }

    /// The quoted attack `ai` on model `i`, at every nonzero ε of its grid: against a stronger
    /// setting of itself on the first test examples ([`advrob_eval::convergence`]) and on its
    /// binarization test ([`advrob_eval::binarization`]), whose sample takes both sides of the
    /// attack's result where the run's records hold it.
    fn test_quoted(
        &self,
        models: &Models<'_>,
        i: usize,
        model: &Deployed,
        ai: usize,
        probe: &mut advrob_eval::Probe,
    ) -> Result<()> {
        let spec = &self.matrix.attacks[ai];
        let name = &self.attacks[ai].name;
        let build = |spec: &crate::AttackSpec| {
            self.attack_on_its_own(
                spec,
                "the quoted attack's checks do not run a transfer attack",
            )
        };
        let quoted = build(spec)?;
        let eps: Vec<f64> = grid(self.matrix, ai)
            .iter()
            .copied()
            .filter(|&e| e > 0.0)
            .collect();
        let (device, seed) = (models.device, models.seed);
        let n = self
            .matrix
            .eval
            .convergence_examples
            .min(self.test_split.len());
        if n > 0 {
            let stronger = build(&spec.stronger())?;
            for &e in &eps {
                probe.convergence.push(advrob_eval::convergence(
                    model,
                    (name, quoted.as_ref()),
                    stronger.as_ref(),
                    self.test_split,
                    n,
                    e,
                    (self.matrix.eval.batch_size, seed),
                    device,
                )?);
            }
        }
        let per_group = self.matrix.eval.binarization_samples;
        if per_group > 0 {
            let clean = advrob_eval::binarization::clean_correct(model, self.test_split, device)?;
            let records = read_run(self.run)?.records;
            for &e in &eps {
                let robust = records
                    .iter()
                    .find(|r| {
                        r.model_key == models.plans[i].key && &r.attack == name && r.eval.eps == e
                    })
                    .and_then(|r| r.eval.adversarial_correct_examples.as_ref())
                    .map(|b| b.0.as_slice());
                let samples = advrob_eval::binarization::choose(&clean, robust, per_group);
                if let Some(b) = advrob_eval::binarization_test(
                    model,
                    quoted.as_ref(),
                    name,
                    self.test_split,
                    &samples,
                    e,
                    seed,
                    device,
                )? {
                    probe.binarization.push(b);
                }
            }
        }
        Ok(())
    }

    /// Counts model `i`'s records (of this run's share) as already there.
    pub(super) fn skip(&mut self, models: &Models<'_>, i: usize) {
        self.summary.skipped_records += self
            .owned(i)
            .into_iter()
            .map(|ai| grid(self.matrix, ai).len())
            .sum::<usize>();
        log::info!(
            "{} on {}, seed {}: all records present",
            self.matrix.models[i].name,
            models.backend,
            models.seed
        );
    }

    /// Re-reads the run's records: another writer may have added some.
    pub(super) fn refresh(&mut self) -> Result<()> {
        self.records.extend(read_run(self.run)?.settled());
        Ok(())
    }

    /// Evaluates every model of the cell that has work left; a model another writer is
    /// evaluating is waited for at the end, and then evaluated only if that writer left work.
    pub(super) fn evaluate_cell(
        &mut self,
        models: &mut Models<'_>,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let (matrix, dir) = (self.matrix, self.run);
        let mut deferred = Vec::new();
        for i in 0..matrix.models.len() {
            if !self.has_work(models, i) {
                self.skip(models, i);
                continue;
            }
            // another writer evaluating this model: come back to it at the end
            match Lock::try_take(&dir.lock(&models.plans[i].dir, "eval"))? {
                Some(lock) => self.evaluate_what_is_left(models, i, lock, observer)?,
                None => deferred.push(i),
            }
        }
        for i in deferred {
            let lock = Lock::wait(&dir.lock(&models.plans[i].dir, "eval"))?;
            self.evaluate_what_is_left(models, i, lock, observer)?;
        }
        Ok(())
    }

    /// With model `i`'s evaluation lock held: re-reads the records (another writer may have
    /// evaluated the model since this one read them) and evaluates what no writer has.
    pub(super) fn evaluate_what_is_left(
        &mut self,
        models: &mut Models<'_>,
        i: usize,
        lock: Lock,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        self.refresh()?;
        if self.has_work(models, i) {
            self.evaluate_model(models, i, lock, observer)
        } else {
            self.skip(models, i);
            Ok(())
        }
    }

    /// Every attack and ε of model `i` that has no record yet; `_lock` (the model's evaluation
    /// lock) is held until it returns.
    pub(super) fn evaluate_model(
        &mut self,
        models: &mut Models<'_>,
        i: usize,
        _lock: Lock,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let matrix = self.matrix;
        let spec = &matrix.models[i];
        let (backend_name, seed) = (models.backend, models.seed);
        let todo = self.todo(models, i);
        self.summary.skipped_records += self
            .owned(i)
            .into_iter()
            .map(|ai| grid(matrix, ai).len())
            .sum::<usize>()
            - todo.iter().map(|(_, e)| e.len()).sum::<usize>();
        let (model, info) = models.get(i, observer)?;
        // the matrix is kept once its first model is there (a run refused before, or with
        // nothing to do, writes nothing)
        write_matrix(self.run, matrix)?;
        for (ai, eps) in todo {
            let spec_ai = &matrix.attacks[ai];
            let mut attack = self.registry.attack(spec_ai, &mut |name| {
                let i = models.index(name)?;
                Ok(models.get(i, observer)?.0)
            })?;
            // a transfer attack's examples do not depend on the target: crafted once per
            // surrogate (its weights' digest), attack, batch, budgets and seed for every model
            if let Some(name) = self.registry.surrogate_of(spec_ai)? {
                let surrogate = models.index(&name)?;
                let digest = models.get(surrogate, observer)?.1.checkpoint_sha256;
                let key = format!("{digest}/{}", self.attacks[ai].config);
                attack = match advrob_attack::Cached::new(attack, key, self.transfer_cache.clone())
                {
                    Ok(cached) => Box::new(cached),
                    Err(attack) => attack,
                };
            }
            let described = &self.attacks[ai];
            let batches = self.test_split.len().div_ceil(matrix.eval.batch_size) as u64;
            let label = format!("{} vs {} ({backend_name})", spec.name, described.name);
            observer.event(Event::EvalStarted {
                label: &label,
                batches,
            });
            let evals = evaluate(
                &model,
                attack.as_ref(),
                &EvalRequest {
                    data: self.test_split,
                    eps: &eps,
                    batch_size: matrix.eval.batch_size,
                    seed,
                    device: models.device,
                },
                &mut |done, _| observer.event(Event::EvalProgress { done: done as u64 }),
            )?;
            let clean_accuracy = evals.first().map(|e| e.clean_accuracy).unwrap_or(0.0);
            observer.event(Event::EvalFinished { clean_accuracy });
            let key = self.eval_key(ai);
            let mut new = Vec::new();
            for ev in evals {
                let evaluated = Evaluated {
                    i,
                    model: &model,
                    info: &info,
                };
                new.push(self.record(models, &evaluated, described, &key, ev)?);
            }
            // after every (model, attack): a kill loses at most the evaluation under way
            self.log.append(&new)?;
            for r in new {
                self.records.insert(r.key);
                self.summary.new_records += 1;
            }
        }
        if !self.observed(models, i) {
            self.observe(models, i, &model, &info)?;
        }
        let bounds = self.bounds_todo(models, i);
        if !bounds.is_empty() {
            self.certify(models, i, &model, &info, &bounds)?;
        }
        self.smooth(models, i, &model, &info)?;
        Ok(())
    }

    /// The record of the evaluated model under `attack` for one ε's metrics.
    pub(super) fn record(
        &self,
        models: &Models<'_>,
        evaluated: &Evaluated<'_>,
        attack: &Described,
        eval_key: &str,
        eval: advrob_eval::EvalRecord,
    ) -> Result<Record> {
        let Evaluated { i, model, info } = *evaluated;
        let spec = &self.matrix.models[i];
        let plan = &models.plans[i];
        let unix_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let as_str = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
        Ok(Record {
            schema: SCHEMA,
            key: record_key(&plan.key, &attack.name, eval_key, eval.eps),
            run: self.matrix.name.clone(),
            preset: self.matrix.preset.clone(),
            model: spec.name.clone(),
            model_key: plan.key.clone(),
            defense: plan.defense_name.clone(),
            defense_config: plan.defense_config.clone(),
            fine_tuned_from: spec.from.clone(),
            teacher: spec.teacher.clone(),
            deploy_config: json(&model.config)?,
            attack: attack.name.clone(),
            attack_config: attack.config.clone(),
            attack_info: Some(attack.info.clone()),
            attack_labels: as_str(json(&attack.info.labels)?),
            loss: as_str(json(&plan.train.loss)?),
            backend: models.backend.to_string(),
            device: format!("{:?}", models.device),
            seed: models.seed,
            dataset: self.ds_name.to_string(),
            dataset_verified: self.ds.verified.is_some(),
            dataset_files: self.ds.files.clone(),
            model_config: json(&plan.net)?,
            train_config: json(&plan.train)?,
            train_examples: models.train_split.len(),
            checkpoint_sha256: info.checkpoint_sha256.clone(),
            train_seconds: info.train_seconds,
            from_cache: info.from_cache,
            stages: info.stages.clone(),
            eval,
            versions: Versions::current(),
            unix_time,
        })
    }
}

/// The ε grid of attack `ai`: its own budgets, else the matrix's.
fn grid(matrix: &Matrix, ai: usize) -> &[f64] {
    matrix.attacks[ai].eps.as_deref().unwrap_or(&matrix.eps)
}
