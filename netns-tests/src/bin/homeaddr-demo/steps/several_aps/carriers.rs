//! Which access point carried each legacy client's transfer, read from the
//! APs' affinity tables (`flows`), and the table of who served what.
//!
//! Every AP lists every flow (the members report their flows to all APs),
//! but only the AP the router sends a flow to counts its packets: a row
//! adopted from a Flow Report starts at 0 packets. So the AP whose row of
//! a client's transfer has packets is the one that carries it; the rows
//! seen before the kill name the transfer (client address and port: the
//! transfer is the only connection a legacy client has then), and AP 2's
//! packet count growing since says AP 2 carried it afterwards.

use std::net::Ipv6Addr;

use homeaddr_control::{FlowRow, FlowTable, Request};
use homeaddr_netns_tests::cluster::Cluster;
use homeaddr_netns_tests::cluster::transfer::{TransferResult, is_reset, is_stall};
use homeaddr_netns_tests::service::SERVICE_PORT;

use crate::output::{mib, ms, table};

/// How many rows of each AP's affinity table to read (the step has a
/// dozen flows at most).
const TOP: usize = 256;

/// A legacy client's transfer as the APs saw it before the kill.
#[derive(Debug, Clone)]
pub(crate) struct Carried {
    /// The client's host name (`c0`...).
    pub(crate) client: String,
    /// Its flow: client address and port (None: no AP counted it).
    pub(crate) key: Option<(Ipv6Addr, u16)>,
    /// The AP (1-based) that counted its packets.
    pub(crate) ap: Option<usize>,
    /// AP 2's packet count of the flow then.
    pub(crate) ap2_packets: u64,
}

/// AP `a`'s affinity table (empty when it does not answer).
pub(crate) fn flow_rows(c: &Cluster, a: usize) -> Vec<FlowRow> {
    c.ap(a)
        .host
        .ask::<FlowTable>(Request::Flows { top: TOP })
        .map(|t| t.flows)
        .unwrap_or_default()
}

fn row_of(rows: &[FlowRow], key: (Ipv6Addr, u16)) -> Option<&FlowRow> {
    rows.iter()
        .find(|r| r.proto == 6 && r.port == SERVICE_PORT && (r.client, r.client_port) == key)
}

/// Each legacy client's transfer and the AP carrying it, now.
pub(crate) fn before(c: &Cluster) -> Vec<Carried> {
    let tables: Vec<Vec<FlowRow>> = (1..=c.aps.len()).map(|a| flow_rows(c, a)).collect();
    c.clients
        .iter()
        .map(|host| {
            let carried = tables.iter().enumerate().find_map(|(i, rows)| {
                rows.iter()
                    .filter(|r| r.client == host.addr && r.port == SERVICE_PORT && r.packets > 0)
                    .max_by_key(|r| r.packets)
                    .map(|r| (i + 1, (r.client, r.client_port)))
            });
            let key = carried.map(|(_, k)| k);
            Carried {
                client: host.name.clone(),
                key,
                ap: carried.map(|(a, _)| a),
                ap2_packets: key
                    .and_then(|k| tables.get(1).and_then(|rows| row_of(rows, k)))
                    .map_or(0, |r| r.packets),
            }
        })
        .collect()
}

/// How many transfers AP `a` carried before the kill.
pub(crate) fn count_on(carried: &[Carried], a: usize) -> usize {
    carried.iter().filter(|c| c.ap == Some(a)).count()
}

/// Whether AP 2 counted packets of `carried`'s flow since the kill, given
/// AP 2's table now.
fn on_ap2_after(carried: &Carried, ap2_rows: &[FlowRow]) -> Option<bool> {
    let key = carried.key?;
    row_of(ap2_rows, key).map(|r| r.packets > carried.ap2_packets)
}

/// One transfer's row of the table.
fn row(
    r: &TransferResult,
    carried: Option<&Carried>,
    ap2_rows: &[FlowRow],
    bytes: u64,
) -> Vec<String> {
    let ap = |a: Option<usize>| a.map_or("?".to_string(), |a| format!("AP {a}"));
    let (before, after) = match carried {
        // The shim's transfer: route-optimized, straight to its member.
        None => ("direct".to_string(), "direct".to_string()),
        Some(c) => (
            ap(c.ap),
            match on_ap2_after(c, ap2_rows) {
                Some(true) => "AP 2".into(),
                Some(false) => "(no packets)".into(),
                None => "?".into(),
            },
        ),
    };
    match &r.result {
        Ok(g) => vec![
            r.client.clone(),
            before,
            after,
            g.server.clone(),
            if g.bytes == bytes {
                mib(bytes)
            } else {
                format!("{} of {bytes}", g.bytes)
            },
            if g.intact { "ok" } else { "WRONG" }.into(),
            ms(g.longest_stall),
        ],
        Err(e) => vec![
            r.client.clone(),
            before,
            after,
            "?".into(),
            if is_reset(e) {
                "LOST: reset".into()
            } else if is_stall(e) {
                "LOST: stalled".into()
            } else {
                format!("LOST: {e:#}")
            },
            "-".into(),
            "-".into(),
        ],
    }
}

/// Prints who carried and served every transfer.
pub(crate) fn print_table(
    results: &[TransferResult],
    carried: &[Carried],
    ap2_rows: &[FlowRow],
    bytes: u64,
) {
    let mut rows = vec![vec![
        "client".to_string(),
        "AP before the kill".into(),
        "AP after".into(),
        "served by".into(),
        ">bytes".into(),
        "SHA-256".into(),
        ">longest stall".into(),
    ]];
    for r in results {
        let c = carried.iter().find(|c| c.client == r.client);
        rows.push(row(r, c, ap2_rows, bytes));
    }
    table(6, &rows);
}

/// How many of `carried`'s flows AP 2 carried after the kill.
pub(crate) fn moved_to_ap2(carried: &[Carried], ap2_rows: &[FlowRow]) -> usize {
    carried
        .iter()
        .filter(|c| c.ap == Some(1) && on_ap2_after(c, ap2_rows) == Some(true))
        .count()
}
