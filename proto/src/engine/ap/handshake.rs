//! The shim - AP handshake (docs/PROTOCOL.md 4.6) and the limits on shim
//! records (4.4).
//!
//! A Hello without a valid cookie gets a Shim Cookie and creates nothing.
//! A Hello with one passes the handshake rate, then the record limits
//! (global and per prefix, evicting the least recently seen record idle for
//! at least [`EVICTABLE_IDLE`], else refusing), then X25519; the Welcome
//! carries our half. A shim record exists only after a completed handshake.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::data::{NoticeState, ShimClient};
use super::sessions::{Owner, client_address, unsealed_frame};
use super::{AccessPoint, ApEvent, ApTimer};
use crate::crypto::{CookieKind, DhKeyPair, Role, Session, shim_ap_keys};
use crate::engine::sealed::{PeerSessions, SESSION_GRACE};
use crate::engine::{DataAction, DropReason, Transmit};
use crate::wire::MobilityMessage;
use crate::wire::mh::MessageBody;

/// A shim record idle at least this long may be evicted for a newcomer.
pub const EVICTABLE_IDLE: Duration = Duration::from_secs(10);

/// The fields of a received Shim Hello.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hello {
    pub instance: [u8; 8],
    pub index: u32,
    pub nonce: [u8; 16],
    pub cookie: [u8; 16],
    pub public: [u8; 32],
}

/// The AP's session with one shim and the Hello it came from.
#[derive(Debug)]
pub struct ShimSession {
    pub(super) sessions: PeerSessions,
    pub(super) shim_index: u32,
    pub(super) shim_nonce: [u8; 16],
    /// The Welcome we answered with, sent again to a retransmitted Hello.
    pub(super) welcome: Vec<u8>,
}

/// The handshakes of the current second.
#[derive(Debug, Default)]
pub(super) struct HandshakeRate {
    since: Option<Instant>,
    count: u32,
}

impl HandshakeRate {
    fn allow(&mut self, now: Instant, max: u32) -> bool {
        if self.since.is_none_or(|s| now >= s + Duration::from_secs(1)) {
            self.since = Some(now);
            self.count = 0;
        }
        if self.count >= max {
            return false;
        }
        self.count += 1;
        true
    }
}

/// The prefix a shim record counts against: the /64 of an IPv6 client,
/// the whole address (/32) of an IPv4 one.
pub(super) fn prefix_of(client: Ipv6Addr) -> Ipv6Addr {
    if client.to_ipv4_mapped().is_some() {
        return client;
    }
    let o = client.octets();
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&o[..8]);
    Ipv6Addr::from(p)
}

impl AccessPoint {
    /// A Shim Hello from `from` (canonical).
    pub(super) fn handle_shim_hello(
        &mut self,
        now: Instant,
        from: SocketAddr,
        hello: Hello,
    ) -> DataAction {
        let valid =
            self.cookie_jar(now)
                .check(CookieKind::ShimHello, from, &hello.nonce, &hello.cookie);
        if !valid {
            let cookie = self
                .cookie_jar(now)
                .make(CookieKind::ShimHello, from, &hello.nonce);
            let msg = MobilityMessage::new(MessageBody::ShimCookie {
                nonce: hello.nonce,
                cookie,
            });
            self.transmits.push_back(Transmit {
                to: from,
                payload: unsealed_frame(None, &msg),
            });
            self.counters.shim_cookies += 1;
            return DataAction::Consumed;
        }
        let client = client_address(from);
        if let Some(shim) = self.shims.get(&client)
            && shim.instance == hello.instance
            && shim.session.shim_index == hello.index
            && shim.session.shim_nonce == hello.nonce
            && shim.endpoint == from
        {
            // A retransmission: the same Welcome, no new session.
            let payload = shim.session.welcome.clone();
            self.transmits.push_back(Transmit { to: from, payload });
            return DataAction::Consumed;
        }
        if !self
            .handshake_rate
            .allow(now, self.config.max_handshakes_per_second)
        {
            self.counters.limit_hits.handshake_rate += 1;
            return self.counters.drops.drop(DropReason::Overflow);
        }
        let ours = DhKeyPair::generate(&mut self.drbg);
        let Some(shared) = ours.agree(&hello.public) else {
            return self.counters.drops.drop(DropReason::AuthFailed);
        };
        if !self.shims.contains_key(&client) && !self.admit_shim(now, client) {
            return self.counters.drops.drop(DropReason::Overflow);
        }
        let ia = self.new_index();
        let na = self.drbg.nonce16();
        let km = shim_ap_keys(
            &shared,
            &hello.nonce,
            &na,
            client,
            hello.index,
            ia,
            &hello.public,
            &ours.public,
        );
        let session = Session::new(&km, Role::Responder, ia, hello.index);
        let welcome = unsealed_frame(
            None,
            &MobilityMessage::new(MessageBody::ShimWelcome {
                nonce: hello.nonce,
                index: ia,
                ap_nonce: na,
                public: ours.public,
            }),
        );
        self.transmits.push_back(Transmit {
            to: from,
            payload: welcome.clone(),
        });
        self.index.insert(ia, Owner::Shim(client));
        self.counters.shim_handshakes += 1;
        match self.shims.get_mut(&client) {
            Some(shim) => {
                if shim.instance != hello.instance || shim.endpoint != from {
                    // A restarted (or moved) shim: its members must hear of
                    // the new instance and run return routability again.
                    for st in shim.members.values_mut() {
                        *st = NoticeState::default();
                    }
                }
                shim.endpoint = from;
                shim.instance = hello.instance;
                shim.last_seen = now;
                if let Some(gone) = shim.session.sessions.replace(session, now) {
                    self.index.remove(&gone);
                }
                shim.session.shim_index = hello.index;
                shim.session.shim_nonce = hello.nonce;
                shim.session.welcome = welcome;
                self.timers
                    .set_earliest(ApTimer::SessionSweep, now + SESSION_GRACE);
            }
            None => {
                self.shims.insert(
                    client,
                    ShimClient {
                        endpoint: from,
                        last_seen: now,
                        members: HashMap::new(),
                        instance: hello.instance,
                        session: ShimSession {
                            sessions: PeerSessions::new(session),
                            shim_index: hello.index,
                            shim_nonce: hello.nonce,
                            welcome,
                        },
                    },
                );
                self.shim_prefixes
                    .entry(prefix_of(client))
                    .or_default()
                    .insert(client);
                self.events.push_back(ApEvent::ShimClientSeen {
                    client,
                    endpoint: from,
                });
                self.timers
                    .set_earliest(ApTimer::ShimSweep, now + self.config.shim_idle);
            }
        }
        DataAction::Consumed
    }

    /// Make room for a new shim record under the per-prefix and global
    /// limits: evict the least recently seen record idle for
    /// [`EVICTABLE_IDLE`], or refuse (false).
    fn admit_shim(&mut self, now: Instant, client: Ipv6Addr) -> bool {
        let prefix = prefix_of(client);
        let in_prefix = self.shim_prefixes.get(&prefix).map_or(0, HashSet::len);
        if in_prefix >= self.config.max_shims_per_prefix {
            self.counters.limit_hits.shims_per_prefix += 1;
            let oldest = self.shim_prefixes.get(&prefix).and_then(|set| {
                set.iter()
                    .filter_map(|c| self.shims.get(c).map(|s| (s.last_seen, *c)))
                    .min()
            });
            match oldest {
                Some((seen, victim)) if now >= seen + EVICTABLE_IDLE => self.remove_shim(victim),
                _ => return false,
            }
        }
        if self.shims.len() >= self.config.max_shim_clients {
            self.counters.limit_hits.shim_clients += 1;
            let oldest = self.shims.iter().map(|(c, s)| (s.last_seen, *c)).min();
            match oldest {
                Some((seen, victim)) if now >= seen + EVICTABLE_IDLE => self.remove_shim(victim),
                _ => return false,
            }
        }
        true
    }

    /// Forget a shim record and its sessions.
    pub(super) fn remove_shim(&mut self, client: Ipv6Addr) {
        let Some(shim) = self.shims.remove(&client) else {
            return;
        };
        for i in shim.session.sessions.local_indices() {
            self.index.remove(&i);
        }
        let prefix = prefix_of(client);
        if let Some(set) = self.shim_prefixes.get_mut(&prefix) {
            set.remove(&client);
            if set.is_empty() {
                self.shim_prefixes.remove(&prefix);
            }
        }
    }

    /// A sealed frame from the shim of `client`: it is alive.
    pub(super) fn shim_refresh(&mut self, now: Instant, client: Ipv6Addr) {
        if let Some(s) = self.shims.get_mut(&client) {
            s.last_seen = now;
        }
    }
}
