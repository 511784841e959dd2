//! Where the first fragment of each recent fragmented packet went.
//!
//! Only the first fragment of an IPv6 or IPv4 packet holds the ports; every later
//! fragment of every fragmented packet of a client has the same flow key
//! (source, destination, protocol, ports 0). Routed as a flow of its own,
//! that key sticks to whichever member it first went to, so after a member
//! joins (AP) or the client binds to another member (shim), the first
//! fragment of a new datagram goes to one member and the rest to another,
//! where neither can reassemble it. The engines remember, per (source,
//! identification), where a first fragment went and send the later ones
//! the same way.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use crate::wire::Fragment;

/// How long a first fragment's route is kept: the fragments of one packet
/// leave their sender back to back.
pub(crate) const FRAGMENT_ROUTE_LIFETIME: Duration = Duration::from_secs(1);

/// Most routes kept; beyond, later fragments fall back to their flow key.
pub(crate) const MAX_FRAGMENT_ROUTES: usize = 16_384;

/// Routes of recent first fragments, by (source, identification).
#[derive(Debug, Clone)]
pub(crate) struct FragmentRoutes<T> {
    routes: HashMap<(Ipv6Addr, u32), (T, Instant)>,
    /// Insertion order, for expiry.
    order: VecDeque<((Ipv6Addr, u32), Instant)>,
}

impl<T> Default for FragmentRoutes<T> {
    fn default() -> Self {
        Self {
            routes: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T: Copy> FragmentRoutes<T> {
    /// A first fragment from `src` was sent to `route`.
    pub(crate) fn first(&mut self, now: Instant, src: Ipv6Addr, fragment: Fragment, route: T) {
        self.expire(now);
        if self.routes.len() >= MAX_FRAGMENT_ROUTES {
            return;
        }
        let key = (src, fragment.id);
        self.routes.insert(key, (route, now));
        self.order.push_back((key, now));
    }

    /// The route of a later fragment from `src`: its first fragment's, if
    /// seen recently. The last fragment (no M flag) ends the entry.
    pub(crate) fn later(&mut self, now: Instant, src: Ipv6Addr, fragment: Fragment) -> Option<T> {
        let key = (src, fragment.id);
        let (route, at) = *self.routes.get(&key)?;
        if now >= at + FRAGMENT_ROUTE_LIFETIME || !fragment.more {
            self.routes.remove(&key);
        }
        (now < at + FRAGMENT_ROUTE_LIFETIME).then_some(route)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(key, at)) = self.order.front() {
            if now < at + FRAGMENT_ROUTE_LIFETIME {
                break;
            }
            self.order.pop_front();
            // A newer packet with the same identification keeps its entry.
            if self.routes.get(&key).is_some_and(|(_, t)| *t == at) {
                self.routes.remove(&key);
            }
        }
    }

    /// Routes kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(id: u32, offset: u16, more: bool) -> Fragment {
        Fragment { id, offset, more }
    }

    #[test]
    fn later_fragments_follow_the_first_until_the_last() {
        let now = Instant::now();
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let mut r = FragmentRoutes::default();
        r.first(now, src, frag(9, 0, true), 2u16);
        assert_eq!(r.later(now, src, frag(9, 181, true)), Some(2));
        assert_eq!(r.later(now, src, frag(8, 181, true)), None);
        let other: Ipv6Addr = "2001:db8::8".parse().unwrap();
        assert_eq!(r.later(now, other, frag(9, 181, true)), None);
        assert_eq!(r.later(now, src, frag(9, 362, false)), Some(2));
        assert_eq!(r.later(now, src, frag(9, 362, false)), None);
    }

    #[test]
    fn routes_expire_and_are_bounded() {
        let now = Instant::now();
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let mut r = FragmentRoutes::default();
        r.first(now, src, frag(1, 0, true), 1u16);
        let late = now + FRAGMENT_ROUTE_LIFETIME;
        assert_eq!(r.later(late, src, frag(1, 10, true)), None);
        for id in 0..(MAX_FRAGMENT_ROUTES as u32 + 10) {
            r.first(late, src, frag(id, 0, true), 1);
        }
        assert_eq!(r.len(), MAX_FRAGMENT_ROUTES);
        // Expired entries make room again.
        r.first(late + FRAGMENT_ROUTE_LIFETIME, src, frag(1, 0, true), 3);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r.later(late + FRAGMENT_ROUTE_LIFETIME, src, frag(1, 10, true)),
            Some(3)
        );
    }
}
