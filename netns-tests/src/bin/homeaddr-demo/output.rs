//! Output helpers: numbers with their units, aligned tables, narration.

use std::time::Duration;

pub(crate) fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

pub(crate) fn us_ms(us: u64) -> String {
    ms(Duration::from_micros(us))
}

pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

pub(crate) fn mbit(bytes: u64, d: Duration) -> String {
    format!(
        "{:.0} Mbit/s",
        bytes as f64 * 8.0 / d.as_secs_f64().max(1e-9) / 1e6
    )
}

/// Prints rows as an aligned table, indented; the first row is the header.
/// Columns whose header starts with '>' are right-aligned.
pub(crate) fn table(indent: usize, rows: &[Vec<String>]) {
    let Some(header) = rows.first() else { return };
    let cols = header.len();
    let right: Vec<bool> = header.iter().map(|h| h.starts_with('>')).collect();
    let cell = |r: usize, c: usize| -> &str {
        let s = rows[r].get(c).map_or("", String::as_str);
        if r == 0 { s.trim_start_matches('>') } else { s }
    };
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            (0..rows.len())
                .map(|r| cell(r, c).chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in 0..rows.len() {
        let mut line = " ".repeat(indent);
        for c in 0..cols {
            let s = cell(r, c);
            let pad = width[c] - s.chars().count();
            if right[c] {
                line.push_str(&" ".repeat(pad));
                line.push_str(s);
            } else {
                line.push_str(s);
                if c + 1 < cols {
                    line.push_str(&" ".repeat(pad));
                }
            }
            if c + 1 < cols {
                line.push_str("  ");
            }
        }
        println!("{}", line.trim_end());
    }
}

pub(crate) fn say(text: &str) {
    println!("    {text}");
}
