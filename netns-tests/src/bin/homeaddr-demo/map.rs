//! The map: where every host is and the emulated WAN latencies between
//! them.

use std::time::Duration;

use crate::output::table;

/// The legacy client's WAN name (clients are created first, so `c0`/`c1`).
pub(crate) const LEGACY: &str = "c0";
/// The shim client's WAN name.
pub(crate) const SHIM: &str = "c1";

/// Where every host is: (WAN name, role, city).
pub(crate) const SITES: &[(&str, &str, &str)] = &[
    ("ap", "access point", "Frankfurt"),
    ("m1", "member 1", "Madrid"),
    ("m2", "member 2", "Amsterdam"),
    ("m3", "member 3", "Warsaw"),
    (LEGACY, "legacy client", "Lisbon"),
    (SHIM, "shim client", "Lisbon"),
];

/// One-way WAN latencies in ms, both directions (every pair is listed).
pub(crate) const LATENCY_MS: &[(&str, &str, u64)] = &[
    ("ap", "m1", 10),
    ("ap", "m2", 5),
    ("ap", "m3", 20),
    ("ap", LEGACY, 40),
    ("ap", SHIM, 40),
    ("m1", "m2", 12),
    ("m1", "m3", 25),
    ("m2", "m3", 18),
    ("m1", LEGACY, 3),
    ("m1", SHIM, 3),
    ("m2", LEGACY, 38),
    ("m2", SHIM, 38),
    ("m3", LEGACY, 60),
    ("m3", SHIM, 60),
    (LEGACY, SHIM, 1),
];

/// The member the access point's Maglev table gives the shim client. It
/// depends only on the member ids and the client's address (hosts are
/// numbered in creation order), and the map puts this member next to it.
/// The demo checks it and still tells the truth if hashing ever changes.
pub(crate) const NEAR_MEMBER: u16 = 1;

pub(crate) fn one_way(a: &str, b: &str) -> Duration {
    LATENCY_MS
        .iter()
        .find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a))
        .map(|(_, _, ms)| Duration::from_millis(*ms))
        .unwrap_or(Duration::ZERO)
}

/// "member 1, Madrid".
pub(crate) fn site(host: &str) -> String {
    SITES
        .iter()
        .find(|(h, _, _)| *h == host)
        .map_or("?".into(), |(_, role, city)| format!("{role}, {city}"))
}

/// "Madrid".
pub(crate) fn city(host: &str) -> &'static str {
    SITES
        .iter()
        .find(|(h, _, _)| *h == host)
        .map_or("?", |(_, _, city)| city)
}

/// The one-way latency table of the map.
pub(crate) fn print_latencies() {
    let cols = ["ap", "m1", "m2", "m3"];
    let mut rows = vec![
        std::iter::once(String::new())
            .chain(cols.iter().map(|c| format!(">{c}")))
            .collect::<Vec<_>>(),
    ];
    for host in [LEGACY, SHIM, "m1", "m2", "m3"] {
        let mut row = vec![format!("{host:<2}  {}", site(host))];
        for c in cols {
            row.push(
                if c == host || (host.starts_with('m') && c.starts_with('m') && c >= host) {
                    String::new()
                } else {
                    one_way(host, c).as_millis().to_string()
                },
            );
        }
        rows.push(row);
    }
    table(6, &rows);
}
