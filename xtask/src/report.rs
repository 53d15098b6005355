//! The parts of a report that are not plain tables: example grids of adversarial digits (drawn
//! from the checkpoints of a run) and the self-contained `index.html`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use advrob_attack::Attack;
use advrob_data::Split;
use advrob_data::rng::SplitMix64;
use advrob_model::{Classifier, backend, checkpoint};
use base64::Engine;
use bench_runner::matrix::AttackSpec;
use bench_runner::record::Record;
use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};
use plotters::prelude::*;

/// The checkpoint directory a record was evaluated from, inside its run directory.
pub fn checkpoint_dir(run: &Path, r: &Record) -> PathBuf {
    let key = r.key.split('/').next().unwrap_or_default();
    run.join("models")
        .join(format!("{}-{}-s{}-{key}", r.model, r.backend, r.seed))
}

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
) -> anyhow::Result<()> {
    let size = test.image_size();
    let (rows, cols) = (test.images.rows, test.images.cols);
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
    let x = Tensor::<3>::from_data(TensorData::new(pixels.clone(), [n, rows, cols]), device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [n]), device);
    let advs = attack.perturb_grid(model, x.clone(), y.clone(), eps)?;
    let predict = |t: Tensor<3>| -> anyhow::Result<(Vec<i64>, Vec<f32>)> {
        let p = softmax(model.logits(t.without_autodiff()), 1);
        let conf = p.clone().max_dim(1).flatten::<1>(0, 1);
        let pred = p.argmax(1).flatten::<1>(0, 1);
        Ok((
            pred.into_data()
                .try_into_vec_as::<i64>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            conf.into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        ))
    };
    let host = |t: Tensor<3>| -> anyhow::Result<Vec<f32>> {
        t.into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    let mut columns: Vec<(String, Vec<Cell>)> = Vec::new();
    let (p0, c0) = predict(x)?;
    let cells = |px: &[f32], pred: &[i64], conf: &[f32]| -> Vec<Cell> {
        (0..n)
            .map(|j| Cell {
                pixels: px[j * size..(j + 1) * size].to_vec(),
                caption: format!("{} ({:.2})", pred[j], conf[j]),
                wrong: pred[j] != labels[j],
            })
            .collect()
    };
    columns.push(("original".into(), cells(&pixels, &p0, &c0)));
    let mut adv_columns = Vec::new();
    let mut last: Option<(f64, Vec<f32>)> = None;
    for (adv, &e) in advs.into_iter().zip(eps) {
        let (p, c) = predict(adv.clone())?;
        let a = host(adv)?;
        adv_columns.push((format!("ε = {}", trim(e)), cells(&a, &p, &c)));
        last = Some((e, a));
    }
    if let Some((e, a)) = last {
        // δ / ε mapped to [0, 1]: black −ε, mid-grey 0, white +ε
        let scale = if e > 0.0 { 0.5 / e as f32 } else { 0.0 };
        let delta: Vec<f32> = a
            .iter()
            .zip(&pixels)
            .map(|(p, q)| 0.5 + (p - q) * scale)
            .collect();
        let cells = (0..n)
            .map(|j| Cell {
                pixels: delta[j * size..(j + 1) * size].to_vec(),
                caption: format!("label {}", labels[j]),
                wrong: false,
            })
            .collect();
        columns.push((format!("δ at ε = {} (scaled)", trim(e)), cells));
    }
    columns.extend(adv_columns);
    draw_grid(&columns, rows, cols, path)
}

fn trim(e: f64) -> String {
    let s = format!("{e:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

const SCALE: u32 = 4;

fn draw_grid(
    columns: &[(String, Vec<Cell>)],
    rows: usize,
    cols: usize,
    path: &Path,
) -> anyhow::Result<()> {
    crate::plots::fonts();
    let n = columns.first().map_or(0, |c| c.1.len()) as u32;
    let (cw, ch) = (cols as u32 * SCALE + 40, rows as u32 * SCALE + 34);
    let width = (cw * columns.len() as u32).max(200);
    let height = ch * n + 40;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
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
    draw().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Per model of `records`, the record whose checkpoint and attack stand for it when a model is
/// drawn or compared: its first FGSM record (the study's attack), else its first untargeted
/// white-box one (a transfer attack would need its surrogate).
pub fn reference_records(records: &[Record]) -> BTreeMap<&str, &Record> {
    let mut first: BTreeMap<&str, &Record> = BTreeMap::new();
    for r in records {
        let untargeted = r
            .attack_config
            .get("target")
            .is_none_or(serde_json::Value::is_null)
            && !r.attack.starts_with("transfer-");
        if untargeted {
            let e = first.entry(r.model.as_str()).or_insert(r);
            if r.attack == "fgsm" && e.attack != "fgsm" {
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
    run: &Path,
    records: &[Record],
    test: &Split,
    reports: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let first = reference_records(records);
    let indices = example_indices(test.len(), 6, 42);
    let mut written = Vec::new();
    for (model, r) in first {
        let dir = checkpoint_dir(run, r);
        if !checkpoint::exists(&dir) {
            log::warn!(
                "{}: no checkpoint, no example grid for {model}",
                dir.display()
            );
            continue;
        }
        let device = backend::device(&r.backend)?;
        let (m, _, _) = checkpoint::load_deployed(&dir, &device)?;
        let spec: AttackSpec = serde_json::from_value(r.attack_config.clone())
            .map_err(|e| anyhow::anyhow!("{}: attack config: {e}", r.key))?;
        let attack = bench_runner::run::build_attack(&spec, &mut |name| {
            anyhow::bail!("{name}: transfer attacks are not drawn")
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
        let path = reports.join(format!("examples_{model}.png"));
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

/// Examples the unbounded-ε attack of [`probes`] runs on (the first of the test set).
pub const UNBOUNDED_EXAMPLES: usize = 1000;

/// Per (model, backend), measured on each model's first checkpoint found in `run`: the share of
/// test examples whose cross-entropy input gradient (against the true label, through the deployed
/// model) is all zero or not finite, and the accuracy under plain L∞ PGD (20 steps, random start)
/// at ε = 1 on the first [`UNBOUNDED_EXAMPLES`] test examples.
pub fn probes(
    run: &Path,
    records: &[Record],
    test: &Split,
) -> anyhow::Result<BTreeMap<(String, String), crate::verdict::Probe>> {
    let mut first: BTreeMap<(String, String), &Record> = BTreeMap::new();
    for r in records {
        first
            .entry((r.model.clone(), r.backend.clone()))
            .or_insert(r);
    }
    let unbounded = advrob_attack::Pgd::linf(20);
    let mut out = BTreeMap::new();
    for (key, r) in first {
        let dir = checkpoint_dir(run, r);
        if !checkpoint::exists(&dir) {
            continue;
        }
        let device = backend::device(&r.backend)?;
        let (m, config, _) = checkpoint::load_deployed(&dir, &device)?;
        // the examples the run evaluated (a `--test-limit` run: the first N)
        let test = &test.take(r.eval.examples);
        let size = test.image_size();
        let mut flat = 0usize;
        for start in (0..test.len()).step_by(1000) {
            let (x, y) = advrob_data::range_tensors(test, start, 1000, &device);
            let g = advrob_attack::input_gradient(&m, x, y)?
                .into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            flat += g
                .chunks(size)
                .filter(|ex| ex.iter().all(|v| *v == 0.0) || ex.iter().any(|v| !v.is_finite()))
                .count();
        }
        let n = test.len().min(UNBOUNDED_EXAMPLES);
        let mut correct = 0i64;
        for start in (0..n).step_by(500) {
            let (x, y) = advrob_data::range_tensors(test, start, 500.min(n - start), &device);
            let adv = unbounded.perturb(&m, x, y.clone(), 1.0)?;
            let pred = m.logits(adv).argmax(1).flatten::<1>(0, 1);
            correct += pred.equal(y).int().sum().into_scalar::<i64>();
        }
        out.insert(
            key,
            crate::verdict::Probe {
                zero_gradient_share: flat as f64 / test.len().max(1) as f64,
                unbounded_accuracy: correct as f64 / n.max(1) as f64,
                unbounded_examples: n,
                classes: config.classes,
            },
        );
    }
    Ok(out)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A Markdown pipe table as an HTML table.
pub fn md_table_to_html(md: &str) -> String {
    let mut out = String::from("<table>\n");
    for (i, line) in md.lines().filter(|l| l.starts_with('|')).enumerate() {
        if i == 1 {
            continue; // the |---| separator
        }
        let tag = if i == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for cell in line.trim().trim_matches('|').split('|') {
            out.push_str(&format!("<{tag}>{}</{tag}>", escape(cell.trim())));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// The self-contained report page: the summary tables, every figure inlined as a data URI, and
/// the provenance of every trained model (one row per checkpoint: configs, seed, backend, device,
/// versions, dataset and checkpoint checksums). It makes no network request.
pub fn html(
    title: &str,
    summary_md: &str,
    figures: &[PathBuf],
    records: &[Record],
) -> anyhow::Result<String> {
    let mut page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\nbody{{font-family:sans-serif;margin:2em;max-width:1900px}} table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}} td:first-child,th:first-child{{text-align:left}} img{{max-width:100%;border:1px solid #ddd;margin:.5em 0}} pre{{font-size:12px;white-space:pre-wrap}}\n</style></head><body>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    );
    // the Markdown summary: headings, paragraphs and tables
    let mut table = String::new();
    for line in summary_md.lines().chain(std::iter::once("")) {
        if line.starts_with('|') {
            table.push_str(line);
            table.push('\n');
            continue;
        }
        if !table.is_empty() {
            page.push_str(&md_table_to_html(&table));
            table.clear();
        }
        if let Some(h) = line.strip_prefix("## ") {
            page.push_str(&format!("<h2>{}</h2>\n", escape(h)));
        } else if let Some(h) = line.strip_prefix("# ") {
            page.push_str(&format!("<p><em>{}</em></p>\n", escape(h)));
        } else if !line.trim().is_empty() {
            page.push_str(&format!("<p>{}</p>\n", escape(line)));
        }
    }
    page.push_str("<h2>Figures</h2>\n");
    for f in figures
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "png"))
    {
        let bytes = std::fs::read(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        page.push_str(&format!(
            "<figure><img alt=\"{}\" src=\"data:image/png;base64,{}\"><figcaption>{}</figcaption></figure>\n",
            escape(&name),
            base64::engine::general_purpose::STANDARD.encode(&bytes),
            escape(&name)
        ));
    }
    page.push_str("<h2>Provenance</h2>\n<p>One row per trained model; the configs are those the run recorded.</p>\n<table class=\"provenance\">\n<tr><th>model</th><th>preset</th><th>defense</th><th>backend / device</th><th>seed</th><th>dataset</th><th>checkpoint SHA-256</th><th>versions</th><th>configs</th></tr>\n");
    let mut seen = std::collections::BTreeSet::new();
    for r in records {
        let key = r.key.split('/').next().unwrap_or_default().to_string();
        if !seen.insert(key) {
            continue;
        }
        let files: Vec<String> = r
            .dataset_files
            .iter()
            .map(|f| format!("{} {}", f.name, f.sha256))
            .collect();
        let configs = serde_json::json!({
            "model": r.model_config,
            "train": r.train_config,
            "defense": r.defense_config,
            "deploy": r.deploy_config,
            "fine_tuned_from": r.fine_tuned_from,
            "teacher": r.teacher,
            "train_examples": r.train_examples,
        });
        page.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}{}<details><summary>files</summary><pre>{}</pre></details></td><td><code>{}</code></td><td>advrob {}, burn {}</td><td><details><summary>JSON</summary><pre>{}</pre></details></td></tr>\n",
            escape(&r.model),
            escape(&r.preset),
            escape(&r.defense),
            escape(&r.backend),
            escape(&r.device),
            r.seed,
            escape(&r.dataset),
            if r.dataset_verified { " (verified)" } else { "" },
            escape(&files.join("\n")),
            escape(&r.checkpoint_sha256),
            escape(&r.versions.advrob),
            escape(&r.versions.burn),
            escape(&serde_json::to_string_pretty(&configs)?),
        ));
    }
    page.push_str("</table>\n");
    // lets a headless browser report whether every inlined image decoded
    page.push_str("<script>window.addEventListener('load',()=>{const i=[...document.images];document.body.dataset.images=i.length;document.body.dataset.decoded=i.filter(x=>x.complete&&x.naturalWidth>0).length;});</script>\n</body></html>\n");
    Ok(page)
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

    #[test]
    fn markdown_tables_become_html_tables() {
        let h = md_table_to_html("| a | b |\n|---|---:|\n| x<y | 1% |\n");
        assert_eq!(
            h,
            "<table>\n<tr><th>a</th><th>b</th></tr>\n<tr><td>x&lt;y</td><td>1%</td></tr>\n</table>\n"
        );
    }
}
