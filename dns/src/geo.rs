//! Geography and address space: great-circle distance and a prefix trie
//! with longest-prefix match that also reports the ECS scope of a decision.
//!
//! Layer: sans-IO core. Contract: [`PrefixTrie::lookup`] returns the value of
//! the longest configured prefix containing the address and the shortest
//! prefix length around the address inside which that answer cannot change
//! (the RFC 7871 SCOPE PREFIX-LENGTH of the decision).

use std::net::IpAddr;

use serde::Deserialize;

/// A point on the earth, in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coordinates {
    /// Latitude, -90..=90.
    pub lat: f64,
    /// Longitude, -180..=180.
    pub lon: f64,
}

impl Coordinates {
    /// Mean earth radius in km (IUGG).
    pub const EARTH_RADIUS_KM: f64 = 6371.0088;

    /// Whether the coordinates are on the globe.
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }

    /// Great-circle distance in km (haversine formula, which stays accurate
    /// for small distances).
    pub fn distance_km(&self, other: &Coordinates) -> f64 {
        let (phi1, phi2) = (self.lat.to_radians(), other.lat.to_radians());
        let dphi = (other.lat - self.lat).to_radians();
        let dlambda = (other.lon - self.lon).to_radians();
        let a =
            (dphi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (dlambda / 2.0).sin().powi(2);
        2.0 * Self::EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

#[derive(Debug, Clone, Default)]
struct Node {
    child: [u32; 2],
    value: Option<u32>,
    /// Whether any prefix is stored strictly below this node.
    has_descendants: bool,
}

const NONE: u32 = 0;

/// A binary trie over one address family.
#[derive(Debug, Clone)]
pub struct PrefixTrie {
    width: u8,
    nodes: Vec<Node>,
}

/// Result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// The value of the longest matching prefix, if any prefix matched.
    pub value: Option<u32>,
    /// Length of the prefix around the address within which every address
    /// gets the same `value`.
    pub scope: u8,
}

fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn bit_at(v: u128, i: u8) -> usize {
    ((v >> (127 - u32::from(i))) & 1) as usize
}

impl PrefixTrie {
    /// An empty trie for addresses of `width` bits (32 or 128).
    pub fn new(width: u8) -> Self {
        Self {
            width,
            // Index 0 is the root; child index 0 therefore means "none".
            nodes: vec![Node::default()],
        }
    }

    /// Inserts `addr/len` with `value`; returns the value it replaced.
    pub fn insert(&mut self, addr: IpAddr, len: u8, value: u32) -> Option<u32> {
        let (v, width) = bits(addr);
        debug_assert_eq!(width, self.width);
        let mut node = 0usize;
        for i in 0..len.min(self.width) {
            self.nodes[node].has_descendants = true;
            let b = bit_at(v, i);
            let next = self.nodes[node].child[b];
            node = if next == NONE {
                self.nodes.push(Node::default());
                let idx = self.nodes.len() - 1;
                self.nodes[node].child[b] = idx as u32;
                idx
            } else {
                next as usize
            };
        }
        self.nodes[node].value.replace(value)
    }

    /// Longest-prefix match for `addr`, of which only the first `known`
    /// bits are meaningful (the ECS source prefix; the rest are zero).
    ///
    /// The scope is the smallest `d` such that the subtree at the address's
    /// `d`-bit prefix holds no prefix longer than `d`: inside it the answer
    /// is constant. It can exceed `known` when the configuration is more
    /// specific than the client revealed (RFC 7871 sec. 7.2.1 allows a
    /// SCOPE longer than SOURCE for exactly this).
    pub fn lookup(&self, addr: IpAddr, known: u8) -> Match {
        let (v, _) = bits(crate::wire::mask(addr, known));
        let mut node = 0usize;
        let mut best = self.nodes[0].value;
        let mut depth = 0u8;
        loop {
            let n = &self.nodes[node];
            if n.value.is_some() {
                best = n.value;
            }
            if !n.has_descendants || depth >= self.width {
                return Match {
                    value: best,
                    scope: depth,
                };
            }
            let next = n.child[bit_at(v, depth)];
            if next == NONE {
                return Match {
                    value: best,
                    scope: depth + 1,
                };
            }
            node = next as usize;
            depth += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn found(value: Option<u32>, scope: u8) -> Match {
        Match { value, scope }
    }

    #[test]
    fn distance_matches_known_city_pairs() {
        let ams = Coordinates {
            lat: 52.37,
            lon: 4.90,
        };
        let nyc = Coordinates {
            lat: 40.71,
            lon: -74.01,
        };
        let d = ams.distance_km(&nyc);
        assert!((5840.0..5880.0).contains(&d), "AMS-NYC {d}");
        assert_eq!(ams.distance_km(&ams), 0.0);
        let a = Coordinates { lat: 0.0, lon: 0.0 };
        let b = Coordinates {
            lat: 0.0,
            lon: 180.0,
        };
        assert!(
            (a.distance_km(&b) - std::f64::consts::PI * Coordinates::EARTH_RADIUS_KM).abs() < 1e-6
        );
        assert!(
            !Coordinates {
                lat: 91.0,
                lon: 0.0
            }
            .is_valid()
        );
    }

    #[test]
    fn empty_trie_decides_at_scope_zero() {
        let t = PrefixTrie::new(32);
        assert_eq!(t.lookup(ip("1.2.3.4"), 32), found(None, 0));
    }

    #[test]
    fn longest_prefix_wins_and_scope_is_decision_length() {
        let mut t = PrefixTrie::new(32);
        t.insert(ip("10.0.0.0"), 8, 1);
        t.insert(ip("10.1.0.0"), 16, 2);
        // Inside the /16: decided at 16.
        assert_eq!(t.lookup(ip("10.1.2.3"), 32), found(Some(2), 16));
        // In the /8 but outside the /16: the sibling /16 (10.0/16 vs 10.1/16
        // differ at bit 15) is constant, so the scope is 16.
        assert_eq!(t.lookup(ip("10.0.2.3"), 32), found(Some(1), 16));
        // Far from the /16: 10.128/9 is constant.
        assert_eq!(t.lookup(ip("10.200.0.1"), 32), found(Some(1), 9));
        // Outside everything: 0/1 vs 128/1 -- 192.0.2.1 is in 128/1 with no
        // prefix below it.
        assert_eq!(t.lookup(ip("192.0.2.1"), 32), found(None, 1));
        // Only 8 bits known: the masked address 10.0.0.0 lands in 10.0/16's
        // region; scope 16 > source 8 tells the resolver to ask with more.
        assert_eq!(t.lookup(ip("10.0.0.0"), 8), found(Some(1), 16));
    }

    #[test]
    fn ipv6_trie() {
        let mut t = PrefixTrie::new(128);
        t.insert(ip("2001:db8::"), 32, 7);
        assert_eq!(t.lookup(ip("2001:db8:1::1"), 56), found(Some(7), 32));
        assert_eq!(t.insert(ip("2001:db8::"), 32, 8), Some(7));
    }
}
