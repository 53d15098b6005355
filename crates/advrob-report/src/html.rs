//! The self-contained report page, `index.html`: the summary tables, every figure inlined as a
//! data URI and the provenance of every trained model. It makes no network request.

use std::path::PathBuf;

use advrob_experiment::Record;
use base64::Engine;

use crate::error::{ReportError, Result};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A Markdown pipe table as an HTML table: columns aligned as the separator row says (`---:`
/// right, `---` left).
pub fn md_table_to_html(md: &str) -> String {
    table_html(md, false)
}

/// [`md_table_to_html`]; with `compact`, the columns whose every body cell is `–` (nothing
/// measured there) are left out.
fn table_html(md: &str, compact: bool) -> String {
    let rows: Vec<Vec<&str>> = md
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect()
        })
        .collect();
    let left: Vec<bool> = rows
        .get(1)
        .map(|sep| sep.iter().map(|c| !c.ends_with(':')).collect())
        .unwrap_or_default();
    let body = rows.get(2..).unwrap_or_default();
    let shown: Vec<bool> = (0..rows.first().map_or(0, Vec::len))
        .map(|j| !compact || body.is_empty() || body.iter().any(|r| r.get(j) != Some(&"–")))
        .collect();
    let mut out = String::from("<table>\n");
    for (i, row) in rows.iter().enumerate() {
        if i == 1 {
            continue; // the |---| separator
        }
        let tag = if i == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for (j, cell) in row.iter().enumerate() {
            if !shown.get(j).copied().unwrap_or(true) {
                continue;
            }
            // the first column is left-aligned by the page's style
            let class = if j > 0 && left.get(j).copied().unwrap_or(false) {
                " class=\"l\""
            } else {
                ""
            };
            out.push_str(&format!("<{tag}{class}>{}</{tag}>", escape(cell)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// What the page shows, in order: the lead (the model cards and the lead figure), then the rest
/// (the verdict, the full tables) and the other figures.
#[derive(Debug, Clone, Copy)]
pub struct Sections<'a> {
    /// Markdown the page opens on.
    pub lead_md: &'a str,
    /// Figures right below it.
    pub lead_figures: &'a [PathBuf],
    /// Markdown below those.
    pub rest_md: &'a str,
    /// The other figures.
    pub figures: &'a [PathBuf],
}

/// The self-contained report page: the sections in order, every figure inlined as a data URI, and
/// the provenance of every trained model (one row per checkpoint: configs, seed, backend, device,
/// versions, dataset and checkpoint checksums). It makes no network request.
pub fn html(title: &str, sections: &Sections<'_>, records: &[Record]) -> Result<String> {
    let mut page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\nbody{{font-family:sans-serif;margin:2em;max-width:1900px}} table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}} td:first-child,th:first-child,td.l,th.l{{text-align:left}} img{{max-width:100%;border:1px solid #ddd;margin:.5em 0}} blockquote.note{{border-left:4px solid #c80;background:#fff8ec;margin:1em 0;padding:.3em 1em}} code{{font-size:90%}} pre{{font-size:12px;white-space:pre-wrap}}\n</style></head><body>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    );
    // the lead's tables without their empty columns (an ensemble run at one ε of the grid)
    page.push_str(&markdown_html(sections.lead_md, true));
    page.push_str(&figures_html(sections.lead_figures)?);
    page.push_str(&markdown_html(sections.rest_md, false));
    if !sections.figures.is_empty() {
        page.push_str("<h2>Figures</h2>\n");
        page.push_str(&figures_html(sections.figures)?);
    }
    page.push_str("<h2>Provenance</h2>\n<p>One row per trained model; the configs are those the run recorded.</p>\n<table class=\"provenance\">\n<tr><th>model</th><th>preset</th><th>defense</th><th>backend / device</th><th>seed</th><th>dataset</th><th>checkpoint SHA-256</th><th>versions</th><th>configs</th></tr>\n");
    let mut seen = std::collections::BTreeSet::new();
    for r in records {
        if seen.insert(r.model_key().to_string()) {
            page.push_str(&provenance_row(r));
        }
    }
    page.push_str("</table>\n");
    // lets a headless browser report whether every inlined image decoded
    page.push_str("<script>window.addEventListener('load',()=>{const i=[...document.images];document.body.dataset.images=i.length;document.body.dataset.decoded=i.filter(x=>x.complete&&x.naturalWidth>0).length;});</script>\n</body></html>\n");
    Ok(page)
}

/// A line of Markdown text as HTML: escaped, with `**bold**` and `` `code` `` kept.
fn inline(text: &str) -> String {
    let escaped = escape(text);
    let mut out = String::new();
    let (mut bold, mut code) = (false, false);
    let mut rest = escaped.as_str();
    while let Some(c) = rest.chars().next() {
        if !code && rest.starts_with("**") {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = &rest[2..];
        } else if c == '`' {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = &rest[1..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    // an unmatched marker closes at the end of the line
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</strong>");
    }
    out
}

/// The lines of a Markdown quote (`> …`, the marker removed) as a note box: its paragraphs and
/// its `- ` items as a list.
fn note_html(lines: &[&str]) -> String {
    let mut out = String::from("<blockquote class=\"note\">\n");
    let mut in_list = false;
    for l in lines {
        if let Some(item) = l.strip_prefix("- ") {
            if !in_list {
                out.push_str("<ul>\n");
                in_list = true;
            }
            out.push_str(&format!("<li>{}</li>\n", inline(item)));
            continue;
        }
        if in_list {
            out.push_str("</ul>\n");
            in_list = false;
        }
        if !l.trim().is_empty() {
            out.push_str(&format!("<p>{}</p>\n", inline(l)));
        }
    }
    if in_list {
        out.push_str("</ul>\n");
    }
    out.push_str("</blockquote>\n");
    out
}

/// The Markdown summary as HTML: its headings, paragraphs, notes (quotes) and tables.
fn markdown_html(summary_md: &str, compact: bool) -> String {
    let mut page = String::new();
    let mut table = String::new();
    let mut quote: Vec<&str> = Vec::new();
    for line in summary_md.lines().chain(std::iter::once("")) {
        if let Some(q) = line.strip_prefix('>') {
            quote.push(q.strip_prefix(' ').unwrap_or(q));
            continue;
        }
        if !quote.is_empty() {
            page.push_str(&note_html(&quote));
            quote.clear();
        }
        if line.starts_with('|') {
            table.push_str(line);
            table.push('\n');
            continue;
        }
        if !table.is_empty() {
            page.push_str(&table_html(&table, compact));
            table.clear();
        }
        // a Markdown file's title is a section of the page (whose own title is its h1)
        if let Some(h) = line.strip_prefix("### ") {
            page.push_str(&format!("<h4>{}</h4>\n", inline(h)));
        } else if let Some(h) = line.strip_prefix("## ") {
            page.push_str(&format!("<h3>{}</h3>\n", inline(h)));
        } else if let Some(h) = line.strip_prefix("# ") {
            page.push_str(&format!("<h2>{}</h2>\n", inline(h)));
        } else if !line.trim().is_empty() {
            page.push_str(&format!("<p>{}</p>\n", inline(line)));
        }
    }
    page
}

/// The "Figures" section: every PNG of `figures` inlined as a data URI, captioned with its name.
fn figures_html(figures: &[PathBuf]) -> Result<String> {
    let mut page = String::new();
    for f in figures
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "png"))
    {
        let bytes = std::fs::read(f).map_err(|e| ReportError::io(f, e))?;
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
    Ok(page)
}

/// One row of the provenance table, for the model of record `r`: where and how it was trained,
/// its dataset and checkpoint checksums, the versions and its configs.
fn provenance_row(r: &Record) -> String {
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
    format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}{}<details><summary>files</summary><pre>{}</pre></details></td><td><code>{}</code></td><td>advrob {}, burn {}</td><td><details><summary>JSON</summary><pre>{}</pre></details></td></tr>\n",
        escape(&r.model),
        escape(&r.preset),
        escape(&r.defense),
        escape(&r.backend),
        escape(&r.device),
        r.seed,
        escape(&r.dataset),
        if r.dataset_verified {
            " (verified)"
        } else {
            ""
        },
        escape(&files.join("\n")),
        escape(&r.checkpoint_sha256),
        escape(&r.versions.advrob),
        escape(&r.versions.burn),
        escape(&serde_json::to_string_pretty(&configs).unwrap_or_default()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_become_boxes_with_their_lists_bold_and_code() {
        let html = markdown_html(
            "> **Quarantined records.** 1 line:\n>\n> - `out/records/a.jsonl: line 2`\n\n# t\n",
            false,
        );
        assert!(html.contains("<blockquote class=\"note\">"), "{html}");
        assert!(
            html.contains("<strong>Quarantined records.</strong>"),
            "{html}"
        );
        assert!(
            html.contains("<li><code>out/records/a.jsonl: line 2</code></li>"),
            "{html}"
        );
        assert!(!html.contains("&gt; "), "{html}");
        assert_eq!(inline("a < b **c**"), "a &lt; b <strong>c</strong>");
    }

    #[test]
    fn markdown_tables_become_html_tables() {
        let h = md_table_to_html("| a | b |\n|---|---:|\n| x<y | 1% |\n");
        assert_eq!(
            h,
            "<table>\n<tr><th>a</th><th>b</th></tr>\n<tr><td>x&lt;y</td><td>1%</td></tr>\n</table>\n"
        );
        // a left-aligned column after the first says so; compact drops the columns of dashes
        let md = "| m | e=0.1 | e=0.2 | ok |\n|---|---:|---:|---|\n| a | – | 1% | yes |\n| b | – | 2% | no |\n";
        assert_eq!(
            table_html(md, true),
            "<table>\n<tr><th>m</th><th>e=0.2</th><th class=\"l\">ok</th></tr>\n<tr><td>a</td><td>1%</td><td class=\"l\">yes</td></tr>\n<tr><td>b</td><td>2%</td><td class=\"l\">no</td></tr>\n</table>\n"
        );
        assert_eq!(table_html(md, false).matches("<th").count(), 4);
    }
}
