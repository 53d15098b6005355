//! Figures of a report, drawn with plotters (PNG and SVG): metric × ε curves with one line per
//! model and one panel per (backend, attack), and training curves per model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use advrob_experiment::Record;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::register_font;
use polars::prelude::*;

/// DejaVu Sans (Bitstream Vera license, `assets/DejaVuSans-LICENSE.txt`), embedded so that figures
/// render the same everywhere with no system font library.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

pub(crate) fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // the bytes are a valid TrueType font (checked by the tests that draw text)
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Line colours, distinct and readable on white.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One point of a curve: ε and the mean, min and max over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The budget.
    pub eps: f64,
    /// Mean over seeds.
    pub mean: f64,
    /// Minimum over seeds.
    pub min: f64,
    /// Maximum over seeds.
    pub max: f64,
    /// Seeds behind the point.
    pub seeds: u32,
    /// Whether an attack was run at this ε; `false` for the clean accuracy put at ε = 0 under an
    /// accuracy curve whose grid has no 0 (drawn as a hollow marker, never joined to the curve).
    pub attacked: bool,
}

/// A panel: one (dataset, backend, attack) and a curve per model, undefended models first.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// The dataset.
    pub dataset: String,
    /// The backend.
    pub backend: String,
    /// The attack (or the worst case).
    pub attack: String,
    /// One curve per model: its name and points.
    pub curves: Vec<(String, Vec<Point>)>,
}

fn str_at(df: &DataFrame, col: &str, i: usize) -> PolarsResult<String> {
    Ok(df
        .column(col)?
        .str()?
        .get(i)
        .unwrap_or_default()
        .to_string())
}

fn f64_at(df: &DataFrame, col: &str, i: usize) -> PolarsResult<Option<f64>> {
    Ok(df.column(col)?.get(i)?.extract::<f64>())
}

/// The curves of `metric` (a column of [`crate::tables::frame`]): per (backend, attack, model,
/// ε) the mean, min and max over seeds. With `clean_at_zero`, a point at ε = 0 holds the clean
/// accuracy when the grid has no 0 (an accuracy curve starts from the unattacked model).
// polars deprecates eager group-by aggregations in favour of `lazy` (see tables.rs)
#[allow(deprecated)]
pub fn panels(df: &DataFrame, metric: &str, clean_at_zero: bool) -> crate::Result<Vec<Panel>> {
    let keys = ["dataset", "backend", "attack", "model", "defense", "eps"];
    let g = |agg: &str| -> crate::Result<DataFrame> {
        let grouped = df.group_by(keys)?;
        let sel = grouped.select([metric]);
        Ok(match agg {
            "mean" => sel.mean()?,
            "min" => sel.min()?,
            "max" => sel.max()?,
            _ => sel.count()?,
        }
        .sort(keys, SortMultipleOptions::default())?)
    };
    let (mean, min, max) = (g("mean")?, g("min")?, g("max")?);
    let seeds = df
        .group_by(keys)?
        .select(["seed"])
        .n_unique()?
        .sort(keys, SortMultipleOptions::default())?;
    type Curves = BTreeMap<(bool, String), Vec<Point>>;
    let mut by_panel: BTreeMap<(String, String, String), Curves> = BTreeMap::new();
    for i in 0..mean.height() {
        let Some(m) = f64_at(&mean, &format!("{metric}_mean"), i)? else {
            continue;
        };
        let point = Point {
            eps: f64_at(&mean, "eps", i)?.unwrap_or(0.0),
            mean: m,
            min: f64_at(&min, &format!("{metric}_min"), i)?.unwrap_or(m),
            max: f64_at(&max, &format!("{metric}_max"), i)?.unwrap_or(m),
            seeds: seeds
                .column("seed_n_unique")?
                .get(i)?
                .extract::<u32>()
                .unwrap_or(1),
            attacked: true,
        };
        let defended = str_at(&mean, "defense", i)? != "none";
        by_panel
            .entry((
                str_at(&mean, "dataset", i)?,
                str_at(&mean, "backend", i)?,
                str_at(&mean, "attack", i)?,
            ))
            .or_default()
            .entry((defended, str_at(&mean, "model", i)?))
            .or_default()
            .push(point);
    }
    let mut out = Vec::new();
    for ((dataset, backend, attack), curves) in by_panel {
        let mut cs = Vec::new();
        for ((_, model), mut pts) in curves {
            pts.sort_by(|a, b| a.eps.total_cmp(&b.eps));
            if clean_at_zero && pts.first().is_some_and(|p| p.eps > 0.0) {
                let clean = clean_point(df, &[&dataset, &backend, &attack, &model])?;
                pts.insert(0, clean);
            }
            cs.push((model, pts));
        }
        out.push(Panel {
            dataset,
            backend,
            attack,
            curves: cs,
        });
    }
    Ok(out)
}

/// `panels` with each attacked point's band the bootstrap 95% interval over test examples of
/// `intervals` ([`crate::stats::intervals`]: matched by model, attack, backend and ε) where it
/// has one; elsewhere the band stays the min–max over seeds.
pub fn with_intervals(mut panels: Vec<Panel>, intervals: &DataFrame) -> crate::Result<Vec<Panel>> {
    let mut ci: BTreeMap<(String, String, String, u64), (f64, f64)> = BTreeMap::new();
    for i in 0..intervals.height() {
        let (Some(lo), Some(hi)) = (
            f64_at(intervals, "ci_low", i)?,
            f64_at(intervals, "ci_high", i)?,
        ) else {
            continue;
        };
        let eps = f64_at(intervals, "eps", i)?.unwrap_or(0.0);
        ci.insert(
            (
                str_at(intervals, "model", i)?,
                str_at(intervals, "attack", i)?,
                str_at(intervals, "backend", i)?,
                eps.to_bits(),
            ),
            (lo, hi),
        );
    }
    for p in &mut panels {
        for (model, pts) in &mut p.curves {
            for pt in pts.iter_mut().filter(|pt| pt.attacked) {
                let key = (
                    model.clone(),
                    p.attack.clone(),
                    p.backend.clone(),
                    pt.eps.to_bits(),
                );
                if let Some(&(lo, hi)) = ci.get(&key) {
                    (pt.min, pt.max) = (lo, hi);
                }
            }
        }
    }
    Ok(panels)
}

/// Clean accuracy as a point at ε = 0 (mean, min and max over seeds).
fn clean_point(df: &DataFrame, key: &[&str; 4]) -> crate::Result<Point> {
    let col =
        |c: &str, v: &str| -> crate::Result<BooleanChunked> { Ok(df.column(c)?.str()?.equal(v)) };
    let mask = col("dataset", key[0])?
        & col("backend", key[1])?
        & col("attack", key[2])?
        & col("model", key[3])?;
    let part = df.filter(&mask)?;
    let c = part.column("clean_accuracy")?.f64()?;
    let seeds = part.column("seed")?.n_unique()? as u32;
    Ok(Point {
        eps: 0.0,
        mean: c.mean().unwrap_or(0.0),
        min: c.min().unwrap_or(0.0),
        max: c.max().unwrap_or(0.0),
        seeds,
        attacked: false,
    })
}

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Width of the legend beside each panel, in pixels: the legend sits outside the plotting area,
/// where it can hide no curve.
const LEGEND_WIDTH: u32 = 380;

/// One panel: the curves on the left, each joining only the ε its attack was run at (a single ε is
/// a point; the clean accuracy at ε = 0 a hollow marker), and the legend on the right.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    y_label: &str,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let (width, _) = area.dim_in_pixel();
    let (area, legend_area) = area.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
    let area = &area;
    let x_max = panel
        .curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.eps))
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} — {}, {}", panel.attack, panel.backend, panel.dataset),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max * 1.02, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("ε (L∞ budget)")
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    for (i, (_, pts)) in panel.curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let attacked: Vec<&Point> = pts.iter().filter(|p| p.attacked).collect();
        if attacked.len() > 1 && attacked.iter().any(|p| p.max > p.min) {
            // min–max over seeds (or an interval) as a band
            let mut band: Vec<(f64, f64)> = attacked.iter().map(|p| (p.eps, p.max)).collect();
            band.extend(attacked.iter().rev().map(|p| (p.eps, p.min)));
            chart.draw_series(std::iter::once(Polygon::new(band, colour.mix(0.2))))?;
        }
        if attacked.len() > 1 {
            chart.draw_series(LineSeries::new(
                attacked.iter().map(|p| (p.eps, p.mean)),
                colour.stroke_width(2),
            ))?;
        }
        chart.draw_series(
            attacked
                .iter()
                .map(|p| Circle::new((p.eps, p.mean), 4, colour.filled())),
        )?;
        chart.draw_series(
            pts.iter()
                .filter(|p| !p.attacked)
                .map(|p| Circle::new((p.eps, p.mean), 5, colour.stroke_width(2))),
        )?;
    }
    draw_legend(&legend_area, panel)
}

/// The legend of a panel, in its own area: a line per model in its curve's colour, and what the
/// hollow marker is when a panel has one.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let font = ("sans-serif", 15).into_font();
    let (top, step) = (60i32, 22i32);
    draw_names(area, panel.curves.iter().map(|(m, _)| m.as_str()))?;
    if panel
        .curves
        .iter()
        .flat_map(|(_, p)| p)
        .any(|p| !p.attacked)
    {
        let y = top + step * (panel.curves.len() as i32 + 1);
        area.draw(&Circle::new((19, y), 5, BLACK.stroke_width(2)))?;
        area.draw(&Text::new("clean accuracy (no attack)", (38, y - 8), font))?;
    }
    Ok(())
}

/// A legend line per curve, in its colour: the names in order.
fn draw_names<'a, DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    names: impl Iterator<Item = &'a str>,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let font = ("sans-serif", 15).into_font();
    for (i, name) in names.enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let y = 60 + 22 * i as i32;
        area.draw(&PathElement::new(
            vec![(8, y), (30, y)],
            colour.stroke_width(3),
        ))?;
        area.draw(&Text::new(name.to_string(), (38, y - 8), font.clone()))?;
    }
    Ok(())
}

fn draw_panels<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[Panel],
    y_label: &str,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let cols = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(cols).max(1);
    let areas = root.split_evenly((rows, cols));
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel, y_label)?;
    }
    root.present()?;
    Ok(())
}

/// Pixel size of a figure of `n` panels: 900 × 600 per panel and its legend beside it
/// ([`LEGEND_WIDTH`]), two panels per row.
pub fn figure_size(n: usize) -> (u32, u32) {
    let cols = n.clamp(1, 2) as u32;
    let rows = n.div_ceil(2).max(1) as u32;
    ((900 + LEGEND_WIDTH) * cols, 600 * rows)
}

/// Draws `panels` into `<stem>.png` and `<stem>.svg`; returns both paths.
pub fn curves(panels: &[Panel], y_label: &str, stem: &Path) -> crate::Result<Vec<PathBuf>> {
    fonts();
    let size = figure_size(panels.len());
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let err = |e: Box<dyn std::error::Error>| crate::ReportError::figure(stem, e);
    draw_panels(
        BitMapBackend::new(&png, size).into_drawing_area(),
        panels,
        y_label,
    )
    .map_err(err)?;
    draw_panels(
        SVGBackend::new(&svg, size).into_drawing_area(),
        panels,
        y_label,
    )
    .map_err(err)?;
    Ok(vec![png, svg])
}

/// A panel of cost curves: one (dataset, backend, attack, ε) and, per model, robust accuracy
/// against the passes spent per example, as a staircase of points.
#[derive(Debug, Clone, PartialEq)]
pub struct CostPanel {
    /// The panel's title.
    pub title: String,
    /// One curve per model: its name and (passes, robust accuracy) points.
    pub curves: Vec<(String, Vec<(f64, f64)>)>,
}

fn draw_cost_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &CostPanel,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let (width, _) = area.dim_in_pixel();
    let (area, legend_area) = area.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
    let x_max = panel
        .curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(10.0f64, f64::max);
    let mut chart = ChartBuilder::on(&area)
        .caption(&panel.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0..x_max * 1.1).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("model passes spent per example (forward 1, forward + backward 2; log scale)")
        .y_desc("robust accuracy")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    for (i, (_, pts)) in panel.curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart.draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))?;
        if let Some(&last) = pts.last() {
            chart.draw_series(std::iter::once(Circle::new(last, 4, colour.filled())))?;
        }
    }
    draw_names(&legend_area, panel.curves.iter().map(|(m, _)| m.as_str()))
}

/// Draws cost-curve `panels` into `<stem>.png` and `<stem>.svg`; returns both paths.
pub fn cost_curves(panels: &[CostPanel], stem: &Path) -> crate::Result<Vec<PathBuf>> {
    fonts();
    let size = figure_size(panels.len());
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    fn draw<DB: DrawingBackend>(
        root: DrawingArea<DB, Shift>,
        panels: &[CostPanel],
    ) -> DrawResult<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let cols = panels.len().clamp(1, 2);
        let rows = panels.len().div_ceil(cols).max(1);
        for (area, panel) in root.split_evenly((rows, cols)).iter().zip(panels) {
            draw_cost_panel(area, panel)?;
        }
        root.present()?;
        Ok(())
    }
    let err = |e: Box<dyn std::error::Error>| crate::ReportError::figure(stem, e);
    draw(BitMapBackend::new(&png, size).into_drawing_area(), panels).map_err(err)?;
    draw(SVGBackend::new(&svg, size).into_drawing_area(), panels).map_err(err)?;
    Ok(vec![png, svg])
}

/// Per stage of a run, its name and (epoch, loss, accuracy) per epoch.
type Stages = Vec<(String, Vec<(f64, f64, f64)>)>;

/// Training curves of one model: loss and training accuracy per epoch, one line per stage (and
/// per backend and seed when there are several).
pub fn training(records: &[&Record], model: &str, path: &Path) -> crate::Result<()> {
    fonts();
    let runs = training_runs(records);
    let draw = || -> DrawResult<()> {
        let root = BitMapBackend::new(path, (1200, 450)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);
        let max_epoch = runs
            .values()
            .flatten()
            .flat_map(|(_, p)| p.iter().map(|q| q.0))
            .fold(1.0f64, f64::max);
        let max_loss = runs
            .values()
            .flatten()
            .flat_map(|(_, p)| p.iter().map(|q| q.1))
            .fold(0.0f64, f64::max)
            .max(1e-3);
        for (area, (what, y_max)) in [left, right]
            .iter()
            .zip([("loss", max_loss * 1.05), ("training accuracy", 1.0)])
        {
            draw_training_panel(area, model, what, y_max, max_epoch, &runs)?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| crate::ReportError::figure(path, e))
}

/// The training curves of `records` per run (backend and seed), from the first record of each.
fn training_runs(records: &[&Record]) -> BTreeMap<String, Stages> {
    let mut runs: BTreeMap<String, Stages> = BTreeMap::new();
    for r in records {
        let label = format!("{} s{}", r.backend, r.seed);
        if runs.contains_key(&label) {
            continue;
        }
        let stages = r
            .stages
            .iter()
            .map(|s| {
                let pts = s
                    .record
                    .epochs
                    .iter()
                    .map(|e| (e.epoch as f64, e.loss, e.accuracy))
                    .collect();
                (s.name.clone(), pts)
            })
            .collect();
        runs.insert(label, stages);
    }
    runs
}

/// One panel of the training curves: `what` (the loss or the training accuracy) per epoch up to
/// `y_max`, a line per stage of each run, with its legend.
fn draw_training_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    model: &str,
    what: &str,
    y_max: f64,
    max_epoch: f64,
    runs: &BTreeMap<String, Stages>,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{model}: {what}"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5..max_epoch + 0.5, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(what)
        .label_style(("sans-serif", 14))
        .draw()?;
    let mut i = 0;
    for (run, stages) in runs {
        for (stage, pts) in stages {
            let colour = COLOURS[i % COLOURS.len()];
            i += 1;
            let label = if runs.len() > 1 {
                format!("{stage} ({run})")
            } else {
                stage.clone()
            };
            let value = |p: &(f64, f64, f64)| if what == "loss" { p.1 } else { p.2 };
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.0, value(p))),
                    colour.stroke_width(2),
                ))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(3))
                });
            chart.draw_series(
                pts.iter()
                    .map(|p| Circle::new((p.0, value(p)), 3, colour.filled())),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::frame;
    use crate::testing::rec;

    /// `c` as SVG writes a colour.
    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).expect("png");
        assert_eq!(&bytes[1..4], b"PNG", "{}", path.display());
        // IHDR: width and height, big-endian, at bytes 16..24
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    #[test]
    fn panels_average_over_seeds_and_start_from_clean_accuracy() {
        let records = vec![
            rec("a", 1, 0.1, 0.9, 0.5),
            rec("a", 2, 0.1, 0.8, 0.3),
            rec("b", 1, 0.1, 0.7, 0.6),
        ];
        let df = frame(&records).expect("frame");
        let p = panels(&df, "adversarial_accuracy", true).expect("panels");
        assert_eq!(p.len(), 1);
        let (model, pts) = &p[0].curves[0];
        assert_eq!(model, "a");
        // ε = 0 from clean accuracy (0.9, 0.8), ε = 0.1 from the attack (0.5, 0.3)
        assert_eq!(pts.len(), 2);
        assert!((pts[0].mean - 0.85).abs() < 1e-12 && pts[0].eps == 0.0);
        assert!((pts[1].mean - 0.4).abs() < 1e-12);
        assert_eq!((pts[1].min, pts[1].max, pts[1].seeds), (0.3, 0.5, 2));
    }

    #[test]
    fn figures_are_written_with_the_right_size() {
        let records = vec![
            rec("a", 1, 0.0, 0.9, 0.9),
            rec("a", 1, 0.1, 0.9, 0.5),
            rec("a", 2, 0.0, 0.8, 0.8),
            rec("a", 2, 0.1, 0.8, 0.3),
            rec("b", 1, 0.0, 0.7, 0.7),
            rec("b", 1, 0.1, 0.7, 0.6),
        ];
        let df = frame(&records).expect("frame");
        let dir = tempfile::tempdir().expect("temp");
        let p = panels(&df, "adversarial_accuracy", true).expect("panels");
        let files = curves(&p, "accuracy", &dir.path().join("acc")).expect("draw");
        assert_eq!(png_size(&files[0]), figure_size(1));
        let svg = std::fs::read_to_string(&files[1]).expect("svg");
        assert!(
            svg.starts_with("<svg") && svg.contains(&format!("width=\"{}\"", figure_size(1).0)),
            "{svg:.300}"
        );
        // the legend names each model
        assert!(
            svg.contains(">\na\n</text>") || svg.contains(">a</text>"),
            "{svg}"
        );
        let t = dir.path().join("training.png");
        let refs: Vec<&Record> = records.iter().collect();
        training(&refs, "a", &t).expect("training");
        assert_eq!(png_size(&t), (1200, 450));
    }

    #[test]
    fn an_attack_run_at_one_eps_is_a_point_and_clean_accuracy_is_not_joined_to_it() {
        // one attacked ε (0.1) and clean accuracy at ε = 0: no line at all, one filled point and
        // one hollow marker
        let one = vec![rec("a", 1, 0.1, 0.9, 0.5)];
        let df = frame(&one).expect("frame");
        let p = panels(&df, "adversarial_accuracy", true).expect("panels");
        let attacked: Vec<bool> = p[0].curves[0].1.iter().map(|x| x.attacked).collect();
        assert_eq!(attacked, [false, true]);
        let dir = tempfile::tempdir().expect("temp");
        let files = curves(&p, "accuracy", &dir.path().join("one")).expect("draw");
        let svg = std::fs::read_to_string(&files[1]).expect("svg");
        // the curve's line: its colour at width 2 (axes are black, the legend's swatch width 3)
        let line = format!("stroke=\"{}\" stroke-width=\"2\" points=", hex(COLOURS[0]));
        assert!(!svg.contains(&line), "a single ε drawn as a line: {svg}");
        assert!(svg.contains("clean accuracy (no attack)"), "{svg}");
        // two attacked ε: one line between them, and still not from the clean point
        let two = vec![rec("a", 1, 0.1, 0.9, 0.5), rec("a", 1, 0.2, 0.9, 0.3)];
        let df = frame(&two).expect("frame");
        let p = panels(&df, "adversarial_accuracy", true).expect("panels");
        let files = curves(&p, "accuracy", &dir.path().join("two")).expect("draw");
        let svg = std::fs::read_to_string(&files[1]).expect("svg");
        assert_eq!(svg.matches(&line).count(), 1, "{svg}");
    }

    #[test]
    fn several_backends_get_one_panel_each() {
        let mut other = rec("a", 1, 0.1, 0.9, 0.4);
        other.backend = "wgpu".into();
        other.key = "wgpu-key/fgsm/0.1".into();
        let records = vec![rec("a", 1, 0.1, 0.9, 0.5), other];
        let df = frame(&records).expect("frame");
        let p = panels(&df, "adversarial_accuracy", true).expect("panels");
        let backends: Vec<&str> = p.iter().map(|x| x.backend.as_str()).collect();
        assert_eq!(backends, ["ndarray", "wgpu"]);
        let dir = tempfile::tempdir().expect("temp");
        let files = curves(&p, "accuracy", &dir.path().join("acc")).expect("draw");
        assert_eq!(png_size(&files[0]), ((900 + LEGEND_WIDTH) * 2, 600));
    }
}
