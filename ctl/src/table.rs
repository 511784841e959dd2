//! Aligned text tables and human units for the default output.

use serde_json::Value;

/// A table: a header and rows of cells, printed with aligned columns
/// (numbers right-aligned, text left-aligned).
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    /// Columns left-aligned even when every cell starts with a digit.
    text: Vec<usize>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
            text: Vec::new(),
        }
    }

    /// Left-align column `i` whatever its cells look like (hex digests).
    pub fn text(mut self, i: usize) -> Self {
        self.text.push(i);
        self
    }

    /// Add a row (as many cells as columns).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                width[i] = width[i].max(cell.chars().count());
            }
        }
        // A column is numeric when every cell starts with a digit or is "-".
        let numeric: Vec<bool> = (0..columns)
            .map(|i| {
                !self.rows.is_empty()
                    && !self.text.contains(&i)
                    && self.rows.iter().all(|r| {
                        r.get(i).is_some_and(|c| {
                            c == "-" || c.starts_with(|ch: char| ch.is_ascii_digit())
                        }) && !r[i].contains(['[', ':'])
                    })
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = width[i].saturating_sub(cell.chars().count());
                if i > 0 {
                    out.push_str("  ");
                }
                if numeric[i] {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    if i + 1 < cells.len() {
                        out.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.trim_end().to_string()
        };
        let mut out = line(self.header.clone());
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
            out.push('\n');
        }
        out
    }
}

/// Seconds as `850ms`, `12.3s`, `4m05s`, `2h03m` or `-` when absent.
pub fn duration(seconds: Option<f64>) -> String {
    let Some(s) = seconds.filter(|s| s.is_finite() && *s >= 0.0) else {
        return "-".into();
    };
    if s < 1.0 {
        format!("{}ms", (s * 1000.0).round() as u64)
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        let s = s.round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = (s / 60.0).round() as u64;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// Bytes with a binary unit: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A JSON value as a table cell: strings without quotes, `-` for null.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_numbers_right_and_text_left() {
        let mut t = Table::new(&["ID", "CARE-OF", "STATE", "BYTES"]);
        t.row(vec![
            "1".into(),
            "[fd00::2]:4790".into(),
            "active".into(),
            "12 B".into(),
        ]);
        t.row(vec![
            "12".into(),
            "[fd00::3]:4790".into(),
            "draining".into(),
            "1.5 KiB".into(),
        ]);
        assert_eq!(
            t.render(),
            "ID  CARE-OF         STATE       BYTES\n\
             \x201  [fd00::2]:4790  active       12 B\n\
             12  [fd00::3]:4790  draining  1.5 KiB\n"
        );
    }

    #[test]
    fn units_read_like_an_operator_writes_them() {
        assert_eq!(duration(Some(0.25)), "250ms");
        assert_eq!(duration(Some(12.34)), "12.3s");
        assert_eq!(duration(Some(245.0)), "4m05s");
        assert_eq!(duration(Some(7380.0)), "2h03m");
        assert_eq!(duration(None), "-");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }
}
