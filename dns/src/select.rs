//! Site selection: which site answers a client, and for which client prefix
//! that decision holds (the ECS scope).
//!
//! Layer: sans-IO core. Contract: [`select`] is a pure function of the zone,
//! the health view and the client prefix. Order of rules: longest-prefix
//! match of the client on the configured networks (else the default
//! policy); that policy's preference list, precomputed at load time from
//! explicit sites, region and great-circle distance; the first site in that
//! list that serves the service, has addresses of the asked type and is
//! healthy wins; none healthy is [`Selection::AllDown`].

use std::net::IpAddr;

use crate::config::{Weighted, Zone};
use crate::health::SiteHealth;
use crate::wire::mask;

/// What kind of data the answer needs from a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Home addresses (AAAA).
    Aaaa,
    /// IPv4 addresses (A).
    A,
    /// The discovery record (every site has one).
    Discovery,
}

/// The client as far as selection is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPrefix {
    /// Address (bits beyond `known` are ignored).
    pub addr: IpAddr,
    /// Number of meaningful leading bits.
    pub known: u8,
}

/// Outcome of selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Answer with this site.
    Site {
        /// Index into `zone.sites`.
        site: usize,
        /// Prefix length around the client for which this holds.
        scope: u8,
        /// The site's state is uncertain, or a more preferred site was
        /// passed over because it is down: answer with the short TTL so
        /// clients come back soon.
        short_ttl: bool,
    },
    /// No capable site is healthy; the zone's all-down policy applies.
    AllDown {
        /// Prefix length around the client for which this holds.
        scope: u8,
    },
}

fn capable(zone: &Zone, site: usize, need: Need) -> bool {
    let s = &zone.sites[site];
    match need {
        Need::Aaaa => !s.hoas.is_empty(),
        Need::A => !s.ipv4.is_empty(),
        Need::Discovery => true,
    }
}

/// The policy (preference list index) and its scope for a client prefix.
pub fn policy_for(zone: &Zone, client: ClientPrefix) -> (usize, u8) {
    let m = match client.addr {
        IpAddr::V4(_) => zone.networks_v4.lookup(client.addr, client.known),
        IpAddr::V6(_) => zone.networks_v6.lookup(client.addr, client.known),
    };
    (m.value.map_or(0, |v| v as usize), m.scope)
}

/// Selects the site that answers `client` for `service`.
pub fn select(
    zone: &Zone,
    health: &[SiteHealth],
    service: usize,
    need: Need,
    client: ClientPrefix,
) -> Selection {
    let (policy, scope) = policy_for(zone, client);
    let allowed = &zone.services[service].allowed;
    let mut passed_over = false;
    for &site in &zone.policies[policy] {
        if !allowed[site] || !capable(zone, site, need) {
            continue;
        }
        let h = health.get(site).copied().unwrap_or(SiteHealth::UP);
        if h.serving {
            return Selection::Site {
                site,
                scope,
                short_ttl: h.uncertain || passed_over,
            };
        }
        passed_over = true;
    }
    Selection::AllDown { scope }
}

/// Sites in preference order for the all-down fail-open answer.
pub fn fail_open_sites(
    zone: &Zone,
    service: usize,
    need: Need,
    client: ClientPrefix,
) -> impl Iterator<Item = usize> + '_ {
    let (policy, _) = policy_for(zone, client);
    let allowed = &zone.services[service].allowed;
    zone.policies[policy]
        .iter()
        .copied()
        .filter(move |&s| allowed[s] && capable(zone, s, need))
}

/// Prefix length of the client key used to spread clients over a site's
/// addresses when an answer carries fewer than all of them.
pub const SPREAD_BITS_V4: u8 = 24;
/// See [`SPREAD_BITS_V4`].
pub const SPREAD_BITS_V6: u8 = 48;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Key for rendezvous hashing: the client address masked to `bits`.
pub fn spread_key(addr: IpAddr, bits: u8) -> u64 {
    match mask(addr, bits) {
        IpAddr::V4(a) => splitmix(u64::from(u32::from(a))),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            splitmix(splitmix((v >> 64) as u64) ^ v as u64)
        }
    }
}

/// Orders a site's addresses by weighted rendezvous hashing on `key`
/// (highest random weight, Thaler & Ravishankar; weighted as
/// -w / ln(u)), so the same client prefix always gets the same order and
/// each address leads for a share of prefixes proportional to its weight.
pub fn rendezvous_order<A: Copy + Into<IpAddr>>(addrs: &[Weighted<A>], key: u64) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = addrs
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let h = splitmix(key ^ spread_key(w.addr.into(), 128));
            // Uniform in (0, 1): top 53 bits, never 0.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            (-f64::from(w.weight) / u.ln(), i)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn full(s: &str) -> ClientPrefix {
        let addr = ip(s);
        ClientPrefix {
            addr,
            known: if addr.is_ipv4() { 32 } else { 128 },
        }
    }
    const AMS: usize = 0;
    const FRA: usize = 1;
    const NYC: usize = 2;

    fn all_up() -> Vec<SiteHealth> {
        vec![SiteHealth::UP; 3]
    }

    #[test]
    fn longest_prefix_then_preference() {
        let z = sample();
        let h = all_up();
        // The /56 inside the eu /40 prefers fra.
        assert_eq!(
            select(&z, &h, 0, Need::Aaaa, full("2001:db8:100:ff00::1")),
            Selection::Site {
                site: FRA,
                scope: 56,
                short_ttl: false
            }
        );
        // Elsewhere in the /40: eu region, ams first.
        match select(&z, &h, 0, Need::Aaaa, full("2001:db8:180::1")) {
            Selection::Site { site, scope, .. } => {
                assert_eq!(site, AMS);
                // 2001:db8:180:: differs from the /56 at bit 40, so the /41
                // around it is constant.
                assert_eq!(scope, 41);
            }
            other => panic!("{other:?}"),
        }
        // San Francisco network: nyc is nearest.
        assert_eq!(
            select(&z, &h, 0, Need::Aaaa, full("203.0.113.9")),
            Selection::Site {
                site: NYC,
                scope: 24,
                short_ttl: false
            }
        );
        // Unknown client: default (London) -> ams.
        assert!(matches!(
            select(&z, &h, 0, Need::Aaaa, full("192.0.2.1")),
            Selection::Site { site: AMS, .. }
        ));
    }

    #[test]
    fn fallback_skips_down_and_incapable_sites() {
        let z = sample();
        let mut h = all_up();
        h[FRA] = SiteHealth::DOWN;
        assert_eq!(
            select(&z, &h, 0, Need::Aaaa, full("2001:db8:100:ff00::1")),
            Selection::Site {
                site: AMS,
                scope: 56,
                short_ttl: true
            }
        );
        // A records: fra has no IPv4, so ams is first without being a fallback.
        h[FRA] = SiteHealth::UP;
        assert_eq!(
            select(&z, &h, 0, Need::A, full("2001:db8:100:ff00::1")),
            Selection::Site {
                site: AMS,
                scope: 56,
                short_ttl: false
            }
        );
        // Service restricted to ams+nyc skips fra.
        assert!(matches!(
            select(&z, &h, 1, Need::Aaaa, full("2001:db8:100:ff00::1")),
            Selection::Site { site: AMS, .. }
        ));
        h = vec![SiteHealth::DOWN; 3];
        assert_eq!(
            select(&z, &h, 0, Need::Aaaa, full("203.0.113.9")),
            Selection::AllDown { scope: 24 }
        );
        assert_eq!(
            fail_open_sites(&z, 0, Need::A, full("203.0.113.9")).collect::<Vec<_>>(),
            vec![NYC, AMS]
        );
    }

    #[test]
    fn uncertain_site_gets_short_ttl() {
        let z = sample();
        let mut h = all_up();
        h[NYC] = SiteHealth {
            serving: true,
            uncertain: true,
        };
        assert_eq!(
            select(&z, &h, 0, Need::Aaaa, full("203.0.113.9")),
            Selection::Site {
                site: NYC,
                scope: 24,
                short_ttl: true
            }
        );
    }

    #[test]
    fn rendezvous_is_stable_and_weighted() {
        let addrs = [
            Weighted {
                addr: std::net::Ipv6Addr::LOCALHOST,
                weight: 1,
            },
            Weighted {
                addr: std::net::Ipv6Addr::UNSPECIFIED,
                weight: 3,
            },
        ];
        let mut first = [0usize; 2];
        for k in 0..4000u32 {
            let key = spread_key(IpAddr::V4(k.into()), 32);
            let order = rendezvous_order(&addrs, key);
            assert_eq!(order, rendezvous_order(&addrs, key));
            first[order[0]] += 1;
        }
        // Expect about 1:3.
        let share = first[1] as f64 / 4000.0;
        assert!((0.70..0.80).contains(&share), "weighted share {share}");
    }
}
