//! Example grids of adversarial digits, drawn from the checkpoints of a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use advrob_attack::{Access, Attack};
use advrob_data::Split;
use advrob_data::rng::SplitMix64;
use advrob_experiment::{AttackSpec, Record, Registry, RunDir};
use advrob_model::{Classifier, backend, checkpoint};
use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};
use plotters::prelude::*;

use crate::error::{ReportError, Result};

/// `n` distinct test indices drawn from `seed`: the same digits for every model.
pub fn example_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let mut out: Vec<usize> = Vec::with_capacity(n.min(len));
    while out.len() < n.min(len) {
        let i = rng.below(len as u64) as usize;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Up to `k` budgets of `grid` to show, spread over it (never 0).
pub fn shown_eps(grid: &[f64], k: usize) -> Vec<f64> {
    let nz: Vec<f64> = grid.iter().copied().filter(|&e| e > 0.0).collect();
    if nz.len() <= k {
        return nz;
    }
    (0..k)
        .map(|i| nz[(i * (nz.len() - 1)) / (k - 1).max(1)])
        .collect()
}

/// One cell of the grid: the image and what the model says of it.
struct Cell {
    pixels: Vec<f32>,
    caption: String,
    wrong: bool,
}

/// Grid of `examples_<model>.png`: one row per digit — the original, the perturbation at the
/// largest budget shown (scaled to the full grey range: mid-grey is 0), and the adversarial image at
/// each budget, each captioned with the predicted class and its confidence; misclassified ones in
/// red.
pub fn examples(
    model: &dyn Classifier,
    attack: &dyn Attack,
    test: &Split,
    indices: &[usize],
    eps: &[f64],
    device: &burn::tensor::Device,
    path: &Path,
) -> Result<()> {
    let size = test.image_size();
    let (rows, cols) = (test.images.rows, test.images.cols);
    let n = indices.len();
    let (pixels, labels) = gather(test, indices);
    let x = Tensor::<3>::from_data(TensorData::new(pixels.clone(), [n, rows, cols]), device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [n]), device);
    let advs = attack.perturb_grid(model, x.clone(), y.clone(), eps, 0)?;
    let mut columns: Vec<(String, Vec<Cell>)> = Vec::new();
    let (p0, c0) = predict(model, x, path)?;
    let cells =
        |px: &[f32], pred: &[i64], conf: &[f32]| column_cells(px, pred, conf, &labels, size);
    columns.push(("original".into(), cells(&pixels, &p0, &c0)));
    let mut adv_columns = Vec::new();
    let mut last: Option<(f64, Vec<f32>)> = None;
    for (adv, &e) in advs.into_iter().zip(eps) {
        let (p, c) = predict(model, adv.clone(), path)?;
        let a = host(adv, path)?;
        adv_columns.push((format!("ε = {}", trim(e)), cells(&a, &p, &c)));
        last = Some((e, a));
    }
    if let Some((e, a)) = last {
        columns.push(delta_column(e, &a, &pixels, &labels, size));
    }
    columns.extend(adv_columns);
    draw_grid(&columns, rows, cols, path)
}

/// The pixels (scaled to [0, 1]) and labels of the test examples at `indices`, in order.
fn gather(test: &Split, indices: &[usize]) -> (Vec<f32>, Vec<i64>) {
    let size = test.image_size();
    let n = indices.len();
    let mut pixels = Vec::with_capacity(n * size);
    let mut labels = Vec::with_capacity(n);
    for &i in indices {
        pixels.extend(
            test.images.pixels[i * size..(i + 1) * size]
                .iter()
                .map(|&p| f32::from(p) / 255.0),
        );
        labels.push(i64::from(test.labels[i]));
    }
    (pixels, labels)
}

/// The class `model` predicts for each image of `t`, and its confidence (the softmax's maximum).
fn predict(model: &dyn Classifier, t: Tensor<3>, path: &Path) -> Result<(Vec<i64>, Vec<f32>)> {
    let p = softmax(model.logits(t.without_autodiff()), 1);
    let conf = p.clone().max_dim(1).flatten::<1>(0, 1);
    let pred = p.argmax(1).flatten::<1>(0, 1);
    let readback = |e: advrob_model::backend::Readback| ReportError::figure(path, e.to_string());
    Ok((
        advrob_model::backend::host_i64(pred).map_err(readback)?,
        advrob_model::backend::host_f32(conf).map_err(readback)?,
    ))
}

/// The pixels of `t`, on the host.
fn host(t: Tensor<3>, path: &Path) -> Result<Vec<f32>> {
    advrob_model::backend::host_f32(t).map_err(|e| ReportError::figure(path, e.to_string()))
}

/// One column's cells: each image of `px` captioned with its prediction and confidence, marked
/// wrong when the prediction is not its label.
fn column_cells(px: &[f32], pred: &[i64], conf: &[f32], labels: &[i64], size: usize) -> Vec<Cell> {
    (0..labels.len())
        .map(|j| Cell {
            pixels: px[j * size..(j + 1) * size].to_vec(),
            caption: format!("{} ({:.2})", pred[j], conf[j]),
            wrong: pred[j] != labels[j],
        })
        .collect()
}

/// The perturbation column: the adversarial images `a` at budget `e` minus the originals,
/// mapped to [0, 1] (black −ε, mid-grey 0, white +ε), each captioned with its label.
fn delta_column(
    e: f64,
    a: &[f32],
    pixels: &[f32],
    labels: &[i64],
    size: usize,
) -> (String, Vec<Cell>) {
    let scale = if e > 0.0 { 0.5 / e as f32 } else { 0.0 };
    let delta: Vec<f32> = a
        .iter()
        .zip(pixels)
        .map(|(p, q)| 0.5 + (p - q) * scale)
        .collect();
    let cells = (0..labels.len())
        .map(|j| Cell {
            pixels: delta[j * size..(j + 1) * size].to_vec(),
            caption: format!("label {}", labels[j]),
            wrong: false,
        })
        .collect();
    (format!("δ at ε = {} (scaled)", trim(e)), cells)
}

fn trim(e: f64) -> String {
    let s = format!("{e:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

const SCALE: u32 = 4;

fn draw_grid(columns: &[(String, Vec<Cell>)], rows: usize, cols: usize, path: &Path) -> Result<()> {
    crate::plots::fonts();
    let n = columns.first().map_or(0, |c| c.1.len()) as u32;
    let (cw, ch) = (cols as u32 * SCALE + 40, rows as u32 * SCALE + 34);
    let width = (cw * columns.len() as u32).max(200);
    let height = ch * n + 40;
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let header = ("sans-serif", 15).into_font();
        let caption = ("sans-serif", 14).into_font();
        for (ci, (title, cells)) in columns.iter().enumerate() {
            let x0 = ci as u32 * cw + 20;
            root.draw(&Text::new(
                title.clone(),
                (x0 as i32 - 10, 12),
                header.clone(),
            ))?;
            for (ri, cell) in cells.iter().enumerate() {
                let y0 = 40 + ri as u32 * ch;
                for r in 0..rows {
                    for c in 0..cols {
                        let v = (cell.pixels[r * cols + c].clamp(0.0, 1.0) * 255.0) as u8;
                        let (x, y) = (
                            (x0 + c as u32 * SCALE) as i32,
                            (y0 + r as u32 * SCALE) as i32,
                        );
                        root.draw(&Rectangle::new(
                            [(x, y), (x + SCALE as i32, y + SCALE as i32)],
                            RGBColor(v, v, v).filled(),
                        ))?;
                    }
                }
                let colour = if cell.wrong { RED } else { BLACK };
                if cell.wrong {
                    let (x, y) = (x0 as i32 - 2, y0 as i32 - 2);
                    let (w, h) = (
                        (cols as u32 * SCALE) as i32 + 4,
                        (rows as u32 * SCALE) as i32 + 4,
                    );
                    root.draw(&Rectangle::new(
                        [(x, y), (x + w, y + h)],
                        RED.stroke_width(2),
                    ))?;
                }
                root.draw(&Text::new(
                    cell.caption.clone(),
                    (x0 as i32, (y0 + rows as u32 * SCALE + 6) as i32),
                    caption.clone().color(&colour),
                ))?;
            }
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| ReportError::figure(path, e))
}

/// Per model of `records`, the record whose checkpoint and attack stand for it when a model is
/// drawn or compared: its first record of the study's FGSM, else its first untargeted white-box
/// one (a transfer attack would need its surrogate).
pub fn reference_records(records: &[Record]) -> BTreeMap<&str, &Record> {
    let mut first: BTreeMap<&str, &Record> = BTreeMap::new();
    for r in records {
        let info = r.info();
        if !info.targeted && info.access != Access::Transfer {
            let e = first.entry(r.model.as_str()).or_insert(r);
            if crate::stats::is_study_fgsm(info) && !crate::stats::is_study_fgsm(e.info()) {
                *e = r;
            }
        }
    }
    first
}

/// Draws `examples_<model>.png` for every model of `records` (first backend and seed, first
/// untargeted attack) from its checkpoint in `run`; returns what was written. Models whose
/// checkpoint is missing are skipped with a warning.
pub fn example_grids(
    run: &RunDir,
    records: &[Record],
    test: &Split,
    reports: &Path,
    registry: &Registry,
) -> Result<Vec<PathBuf>> {
    let first = reference_records(records);
    let indices = example_indices(test.len(), 6, 42);
    let mut written = Vec::new();
    for (model, r) in first {
        let dir = run.checkpoint_of(r);
        if !checkpoint::exists(&dir) {
            log::warn!(
                "{}: no checkpoint, no example grid for {model}",
                dir.display()
            );
            continue;
        }
        let device = backend::device(&r.backend)?;
        let (m, _, sha) = checkpoint::load(&dir, &device)?;
        if sha != r.checkpoint_sha256 {
            log::warn!(
                "{}: holds other weights than {model}'s records were evaluated with: no example grid",
                dir.display()
            );
            continue;
        }
        let spec: AttackSpec = serde_json::from_value(r.attack_config.clone())
            .map_err(|e| ReportError::Records(format!("record {}: attack_config: {e}", r.key)))?;
        let attack = registry.attack(&spec, &mut |name| {
            Err(advrob_experiment::ExperimentError::invalid(
                "attack",
                format!("{name}: transfer attacks are not drawn"),
            ))
        })?;
        let grid: Vec<f64> = {
            let mut g: Vec<f64> = records
                .iter()
                .filter(|x| x.model == r.model && x.attack == r.attack)
                .map(|x| x.eval.eps)
                .collect();
            g.sort_by(f64::total_cmp);
            g.dedup();
            g
        };
        let path = reports.join(format!("examples_{}.png", crate::file_safe(model)));
        examples(
            &m,
            attack.as_ref(),
            test,
            &indices,
            &shown_eps(&grid, 4),
            &device,
            &path,
        )?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_indices_are_distinct_and_repeatable() {
        let a = example_indices(100, 6, 42);
        assert_eq!(a, example_indices(100, 6, 42));
        let mut b = a.clone();
        b.sort();
        b.dedup();
        assert_eq!(b.len(), 6);
        assert!(a.iter().all(|&i| i < 100));
        assert_eq!(example_indices(3, 6, 1).len(), 3);
    }

    #[test]
    fn shown_eps_spreads_over_the_grid() {
        assert_eq!(shown_eps(&[0.0, 0.1, 0.2], 4), [0.1, 0.2]);
        assert_eq!(
            shown_eps(&[0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4], 4),
            [0.05, 0.15, 0.25, 0.4]
        );
    }
}
