//! `homeaddr-ctl --control A --control B aps`: several access points of one
//! home address side by side, and whether they built the same Maglev table
//! (docs/PROTOCOL.md section 10: equal table digests).

use std::collections::BTreeMap;

use homeaddr_control::{ApStatus, MemberState, Request, Status};
use serde::Serialize;

use crate::client::{CtlError, Daemon};
use crate::table::Table;

/// One access point as `aps` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApRow {
    /// Its control socket.
    pub control: String,
    /// Members in the active state.
    pub members_active: u64,
    /// Members in its table (active, draining, down).
    pub members: u64,
    /// Flows in its affinity table.
    pub flows: u64,
    /// Its table digest (16 hex digits), if it answered with one.
    pub table_digest: Option<String>,
    /// Still settling after its start.
    pub settling: bool,
    /// Why it could not be asked, if so.
    pub error: Option<String>,
}

impl ApRow {
    /// The row of an AP's status.
    pub fn of(control: String, s: &ApStatus) -> Self {
        let active = s
            .members
            .iter()
            .filter(|m| m.state == MemberState::Active)
            .count();
        Self {
            control,
            members_active: active as u64,
            members: s.members.len() as u64,
            flows: s.flows,
            table_digest: (!s.table_digest.is_empty()).then(|| s.table_digest.clone()),
            settling: s.settling,
            error: None,
        }
    }

    /// The row of an AP that did not answer, or is not an AP.
    pub fn failed(control: String, error: String) -> Self {
        Self {
            control,
            members_active: 0,
            members: 0,
            flows: 0,
            table_digest: None,
            settling: false,
            error: Some(error),
        }
    }
}

/// Whether the APs that answered agree on their table digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Every AP that answered has the same digest.
    pub agree: bool,
    /// That digest, when they agree.
    pub digest: Option<String>,
    /// The control sockets by digest (`"none"`: a daemon without one).
    pub digests: BTreeMap<String, Vec<String>>,
}

/// The digest an old daemon without one is filed under.
const NO_DIGEST: &str = "none";

/// Compare the digests of the rows without an error. No AP, or one
/// without a digest, does not agree.
pub fn compare(rows: &[ApRow]) -> Comparison {
    let mut digests: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.error.is_none()) {
        let digest = row.table_digest.clone().unwrap_or_else(|| NO_DIGEST.into());
        digests.entry(digest).or_default().push(row.control.clone());
    }
    let agree = digests.len() == 1 && !digests.contains_key(NO_DIGEST);
    Comparison {
        agree,
        digest: agree.then(|| digests.keys().next().cloned()).flatten(),
        digests,
    }
}

/// The verdict line: `tables agree (digest X)` or `TABLES DISAGREE: ...`.
pub fn verdict(c: &Comparison) -> String {
    if let Some(digest) = c.digest.as_ref().filter(|_| c.agree) {
        return format!("tables agree (digest {digest})");
    }
    if c.digests.is_empty() {
        return "TABLES DISAGREE: no access point answered".into();
    }
    let groups: Vec<String> = c
        .digests
        .iter()
        .map(|(digest, aps)| {
            let what = if digest == NO_DIGEST {
                "no digest (a daemon from before table digests)".to_string()
            } else {
                format!("digest {digest}")
            };
            format!("{} has {what}", aps.join(", "))
        })
        .collect();
    format!("TABLES DISAGREE: {}", groups.join("; "))
}

/// The table of `rows`.
pub fn table(rows: &[ApRow]) -> Table {
    let mut t = Table::new(&["AP", "ACTIVE", "MEMBERS", "FLOWS", "DIGEST", "SETTLING"]).text(4);
    for r in rows {
        let (digest, settling) = match &r.error {
            Some(e) => (format!("error: {e}"), "-".into()),
            None => (
                r.table_digest.clone().unwrap_or_else(|| NO_DIGEST.into()),
                if r.settling { "yes" } else { "no" }.into(),
            ),
        };
        t.row(vec![
            r.control.clone(),
            r.members_active.to_string(),
            r.members.to_string(),
            r.flows.to_string(),
            digest,
            settling,
        ]);
    }
    t
}

/// What `aps --json` prints.
#[derive(Debug, Serialize)]
struct Report<'a> {
    aps: &'a [ApRow],
    #[serde(flatten)]
    comparison: &'a Comparison,
}

/// Ask every daemon for its status; the output, and the error that sets
/// the exit status: 1 when the tables disagree; else 3 when an AP could not
/// be reached; else 1 when a daemon answered with an error or is not an AP.
pub fn run(daemons: &[Daemon], json: bool) -> (String, Option<CtlError>) {
    let mut unreachable = None;
    let rows: Vec<ApRow> = daemons
        .iter()
        .map(|d| {
            let control = d.path.display().to_string();
            match d.ask::<Status>(Request::Status) {
                Ok(Status::AccessPoint(s)) => ApRow::of(control, &s),
                Ok(other) => {
                    ApRow::failed(control, format!("not an access point (a {})", other.role()))
                }
                Err(e) => {
                    let text = e.to_string();
                    if let CtlError::Connect(_) = e {
                        unreachable.get_or_insert(e);
                    }
                    ApRow::failed(control, text)
                }
            }
        })
        .collect();
    let comparison = compare(&rows);
    let line = verdict(&comparison);
    let out = if json {
        let report = Report {
            aps: &rows,
            comparison: &comparison,
        };
        // Through a Value: keys sorted, as every other --json output.
        let value = serde_json::to_value(&report).unwrap_or_default();
        let mut s = serde_json::to_string_pretty(&value).unwrap_or_default();
        s.push('\n');
        s
    } else {
        format!("{}{line}\n", table(&rows).render())
    };
    let refused = rows
        .iter()
        .find_map(|r| Some(format!("{}: {}", r.control, r.error.as_ref()?)));
    let error = if !comparison.digests.is_empty() && !comparison.agree {
        Some(CtlError::Daemon(line))
    } else if let Some(e) = unreachable {
        Some(e)
    } else {
        refused
            .or_else(|| (!comparison.agree).then_some(line))
            .map(CtlError::Daemon)
    };
    (out, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::tests::{ap_status, member};

    fn row(control: &str, digest: &str) -> ApRow {
        let mut s = ap_status(
            vec![
                member(1, MemberState::Active, 100),
                member(2, MemberState::Draining, 0),
            ],
            Vec::new(),
        );
        s.table_digest = digest.into();
        ApRow::of(control.into(), &s)
    }

    #[test]
    fn a_row_counts_active_members_and_keeps_the_digest() {
        let r = row("/run/a.sock", "00000000000000aa");
        assert_eq!((r.members_active, r.members, r.flows), (1, 2, 2));
        assert_eq!(r.table_digest.as_deref(), Some("00000000000000aa"));
        assert_eq!(row("/run/a.sock", "").table_digest, None);
    }

    #[test]
    fn equal_digests_agree() {
        let rows = [row("a.sock", "1111"), row("b.sock", "1111")];
        let c = compare(&rows);
        assert!(c.agree);
        assert_eq!(c.digest.as_deref(), Some("1111"));
        assert_eq!(verdict(&c), "tables agree (digest 1111)");
        let out = table(&[row("a.sock", "b32cb1d739e3dcd6")]).render();
        assert_eq!(
            out,
            "AP      ACTIVE  MEMBERS  FLOWS  DIGEST            SETTLING\n\
             a.sock       1        2      2  b32cb1d739e3dcd6  no\n"
        );
    }

    #[test]
    fn different_digests_disagree_and_say_which_ap_has_which() {
        let rows = [
            row("a.sock", "1111"),
            row("b.sock", "2222"),
            row("c.sock", "1111"),
        ];
        let c = compare(&rows);
        assert!(!c.agree);
        assert_eq!(c.digest, None);
        assert_eq!(
            verdict(&c),
            "TABLES DISAGREE: a.sock, c.sock has digest 1111; b.sock has digest 2222"
        );
        let v = serde_json::to_value(Report {
            aps: &rows,
            comparison: &c,
        })
        .unwrap();
        assert_eq!(v["agree"], false);
        assert_eq!(v["digests"]["2222"][0], "b.sock");
        assert_eq!(v["aps"][1]["table_digest"], "2222");
    }

    #[test]
    fn an_ap_without_a_digest_or_no_ap_at_all_does_not_agree() {
        let c = compare(&[row("a.sock", "")]);
        assert!(!c.agree);
        assert!(
            verdict(&c).contains("a.sock has no digest"),
            "{}",
            verdict(&c)
        );
        let c = compare(&[ApRow::failed("a.sock".into(), "no daemon".into())]);
        assert!(!c.agree);
        assert_eq!(verdict(&c), "TABLES DISAGREE: no access point answered");
        // An AP that did not answer is left out of the comparison.
        let rows = [
            row("a.sock", "1111"),
            ApRow::failed("b.sock".into(), "no daemon".into()),
        ];
        assert!(compare(&rows).agree);
        assert!(table(&rows).render().contains("error: no daemon"));
    }

    #[test]
    fn unreachable_aps_exit_3() {
        let missing = [
            Daemon::new("/nonexistent/a.sock", crate::client::Chosen::Given),
            Daemon::new("/nonexistent/b.sock", crate::client::Chosen::Given),
        ];
        let (out, error) = run(&missing, false);
        assert_eq!(error.map(|e| e.exit_code()), Some(3));
        assert!(out.contains("/nonexistent/b.sock"), "{out}");
        assert!(out.contains("no access point answered"), "{out}");
    }
}
