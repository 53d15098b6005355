//! Example grids of adversarial digits, drawn from the images a run observed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use advrob_experiment::Record;
use advrob_experiment::observe::{Column, ExampleGrid, Observations};
use plotters::prelude::*;

use crate::error::{ReportError, Result};

/// One cell of the grid: the image and what the model says of it.
struct Cell {
    pixels: Vec<f32>,
    caption: String,
    wrong: bool,
}

/// Grid of `examples_<model>.png`: one row per digit — the original, the perturbation at the
/// largest budget shown (scaled to the full grey range: mid-grey is 0), and the adversarial image at
/// each budget, each captioned with the predicted class and its confidence; misclassified ones in
/// red. Drawn from what the run observed ([`ExampleGrid`]), nothing recomputed.
pub fn draw(grid: &ExampleGrid, path: &Path) -> Result<()> {
    let size = grid.channels * grid.rows * grid.cols;
    let cells = |c: &Column| column_cells(c, &grid.labels, size);
    let mut columns: Vec<(String, Vec<Cell>)> = vec![("original".into(), cells(&grid.clean))];
    if let Some((e, last)) = grid.adversarial.last() {
        columns.push(delta_column(
            *e,
            &last.pixels,
            &grid.clean.pixels,
            &grid.labels,
            size,
        ));
    }
    for (e, c) in &grid.adversarial {
        columns.push((format!("ε = {}", trim(*e)), cells(c)));
    }
    draw_grid(&columns, [grid.channels, grid.rows, grid.cols], path)
}

/// One column's cells: each image captioned with its prediction and confidence, marked wrong
/// when the prediction is not its label.
fn column_cells(c: &Column, labels: &[i64], size: usize) -> Vec<Cell> {
    (0..labels.len())
        .map(|j| Cell {
            pixels: c.pixels[j * size..(j + 1) * size].to_vec(),
            caption: format!("{} ({:.2})", c.predicted[j], c.confidence[j]),
            wrong: c.predicted[j] != labels[j],
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

/// The colour of pixel (`r`, `c`) of an image `[channels, rows, cols]`: grey from one channel,
/// red, green and blue from the first three planes of more.
fn pixel_colour(
    pixels: &[f32],
    [channels, rows, cols]: [usize; 3],
    r: usize,
    c: usize,
) -> RGBColor {
    let at = |ch: usize| (pixels[ch * rows * cols + r * cols + c].clamp(0.0, 1.0) * 255.0) as u8;
    if channels >= 3 {
        RGBColor(at(0), at(1), at(2))
    } else {
        let v = at(0);
        RGBColor(v, v, v)
    }
}

fn draw_grid(columns: &[(String, Vec<Cell>)], image: [usize; 3], path: &Path) -> Result<()> {
    let [_, rows, cols] = image;
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
                        let (x, y) = (
                            (x0 + c as u32 * SCALE) as i32,
                            (y0 + r as u32 * SCALE) as i32,
                        );
                        root.draw(&Rectangle::new(
                            [(x, y), (x + SCALE as i32, y + SCALE as i32)],
                            pixel_colour(&cell.pixels, image, r, c).filled(),
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
/// drawn or compared, by the rule the run draws its example grids by
/// ([`advrob_experiment::observe::grid_attack`]): its first record of the study's FGSM, else its
/// first untargeted one that is not a transfer attack (that one would need its surrogate).
pub fn reference_records(records: &[Record]) -> BTreeMap<&str, &Record> {
    let mut by_model: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_model.entry(r.model.as_str()).or_default().push(r);
    }
    by_model
        .into_iter()
        .filter_map(|(model, rs)| {
            let i = advrob_experiment::observe::grid_attack(rs.iter().map(|r| r.info()))?;
            Some((model, rs[i]))
        })
        .collect()
}

/// Draws `examples_<model>.png` for every model of `records` from the example grid the run
/// observed on the checkpoint of its [`reference_records`] record (`observations`: every run's,
/// by checkpoint digest and backend); returns what was written. A model without one (a run of an
/// earlier version, or a matrix without an attack to draw) is skipped with a warning.
pub fn example_grids(
    observations: &[Observations],
    records: &[Record],
    reports: &Path,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (model, r) in reference_records(records) {
        let grid = observations
            .iter()
            .filter(|o| o.checkpoint_sha256 == r.checkpoint_sha256 && o.backend == r.backend)
            .find_map(|o| o.grid.as_ref());
        let Some(grid) = grid else {
            log::warn!("the run holds no example images of {model}: no example grid");
            continue;
        };
        let path = reports.join(format!("examples_{}.png", crate::file_safe(model)));
        draw(grid, &path)?;
        written.push(path);
    }
    Ok(written)
}
