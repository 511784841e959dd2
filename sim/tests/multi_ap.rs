//! Several access points, small: 3 APs, 20 members, 5,000 flows through
//! the scale pump (`homeaddr_sim::scale`): every AP builds the same table,
//! learns every flow, and no flow changes member when an AP dies, neither
//! right away nor after a member joined.

use homeaddr_sim::scale::{self, ScaleConfig};

#[test]
fn three_aps_agree_and_lose_no_flow_when_one_dies() {
    let config = ScaleConfig::small();
    let report = scale::run(config).expect("the run completes");
    eprintln!("{report}");
    assert!(
        report.digest.is_some(),
        "digests disagree after registration"
    );
    assert!(
        report.join_digest.is_some(),
        "digests disagree after the join"
    );
    assert_ne!(
        report.digest, report.join_digest,
        "the join changed no table"
    );
    assert_eq!(
        report.ap_entries,
        (5_000, 5_000),
        "every AP knows every flow"
    );
    assert!(report.tables_agree());
    assert_eq!((report.opened_unreached, report.opened_split), (0, 0));
    assert!(report.death.moved_ap > 0, "the re-hash moved no flow");
    assert_eq!(report.death.lost(), 0, "AP 0 died: {:?}", report.death);
    assert!(report.death_after_join.moved_ap > 0);
    assert_eq!(
        report.death_after_join.lost(),
        0,
        "a member joined, then AP 1 died: {:?}",
        report.death_after_join
    );
}
