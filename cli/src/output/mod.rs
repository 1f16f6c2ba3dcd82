//! Rendering of the controller's rows for people (tables) and programs (JSON).
//!
//! Each output type has its own module with a `json` function that builds exactly the
//! contract's keys (DESIGN.md) from the prost rows, and a `table` function.

pub mod cluster;
pub mod deploy;
pub mod events;
pub mod images;
pub mod nodes;
pub mod ps;
pub mod services;
pub mod stats;
pub mod volumes;

use std::io::Write;

use crate::args::Format;

/// Columns padded to their widest cell, two spaces apart; the last is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Writes the table or the JSON document (exactly one, pretty-printed) to stdout.
pub fn emit(
    format: Format,
    json: serde_json::Value,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&json)?;
            s.push('\n');
            s
        }
        Format::Table => table(),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// `1.5GiB`-style sizes for tables.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "NAME", "X"],
            &[
                vec!["1".into(), "web".into(), "a b".into()],
                vec!["22".into(), "w".into(), "".into()],
            ],
        );
        assert_eq!(t, "ID  NAME  X\n1   web   a b\n22  w\n");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(85899345920), "80.0GiB");
    }
}
