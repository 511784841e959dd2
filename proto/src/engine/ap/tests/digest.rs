//! The table digest: the same member set gives the same digest on every AP.

use super::*;

/// An AP with `members` registered in this order (id, advertised weight).
fn ap_with_members(members: &[(MemberId, u16)]) -> AccessPoint {
    let mut ap = ap();
    let now = t0();
    for &(id, weight) in members {
        let ep = SocketAddr::new(
            Ipv6Addr::new(0x2001, 0xdb8, id.0, 0, 0, 0, 0, 1).into(),
            4790,
        );
        TestMember::new(id, ep).register(&mut ap, now);
        if weight != 100 {
            ap.set_weight(id, weight.into()).unwrap();
        }
    }
    ap
}

#[test]
fn two_aps_fed_the_same_members_in_another_order_agree() {
    let empty = ap();
    let a = ap_with_members(&[(M1, 100), (M2, 100), (MemberId(3), 100)]);
    let b = ap_with_members(&[(MemberId(3), 100), (M1, 100), (M2, 100)]);
    assert_eq!(a.table_digest(), b.table_digest());
    assert_ne!(a.table_digest(), empty.table_digest());
    // Same table, too: every client gets the same member.
    for n in 1..200 {
        assert_eq!(a.choose_member(&client(n)), b.choose_member(&client(n)));
    }
}

#[test]
fn the_digest_differs_when_a_weight_or_the_member_set_differs() {
    let a = ap_with_members(&[(M1, 100), (M2, 100)]);
    let heavier = ap_with_members(&[(M1, 100), (M2, 150)]);
    let fewer = ap_with_members(&[(M1, 100)]);
    assert_ne!(a.table_digest(), heavier.table_digest());
    assert_ne!(a.table_digest(), fewer.table_digest());
    // A drained member owns no slot: the table, and the digest, are those
    // without it.
    let mut drained = ap_with_members(&[(M1, 100), (M2, 100)]);
    drained.drain(t0(), M2, None).unwrap();
    assert_eq!(drained.table_digest(), fewer.table_digest());
}
