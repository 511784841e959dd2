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
use crate::wire::mh::MessageBody;
use crate::wire::{MobilityMessage, MobilityOption};

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
    /// Its Endpoint option: the shim's local endpoint as it knows it.
    pub local: Option<SocketAddr>,
    /// Its Home Address option: the HoA the shim serves.
    pub home: Option<Ipv6Addr>,
}

/// Why a proven shim gets no client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoAddress {
    /// A pool address is needed and that family's pool is not configured.
    NoPool { ipv4: bool },
    /// The instance's IPv4 pool address is held by another instance.
    Collision,
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
        let home = hello.home.unwrap_or(self.config.home_address);
        if !self.config.homes().is_home(home) {
            return self.counters.drops.drop(DropReason::UnknownHomeAddress);
        }
        let client = match self.client_address_for(from, &hello, home) {
            Ok(c) => c,
            Err(NoAddress::NoPool { ipv4 }) => {
                self.counters.no_client_address += 1;
                let reported = if ipv4 {
                    &mut self.no_pool_reported.1
                } else {
                    &mut self.no_pool_reported.0
                };
                if !std::mem::replace(reported, true) {
                    self.events.push_back(ApEvent::NoClientAddress {
                        ipv4,
                        endpoint: from,
                    });
                }
                return DataAction::Consumed;
            }
            Err(NoAddress::Collision) => {
                // No record, no session: the Welcome only tells the shim
                // (it echoes its nonce) to draw another instance.
                self.counters.pool_collisions += 1;
                let welcome = MobilityMessage::new(MessageBody::ShimWelcome {
                    nonce: hello.nonce,
                    index: 0,
                    ap_nonce: [0; 16],
                    public: [0; 32],
                })
                .with(MobilityOption::Endpoint(from));
                self.transmits.push_back(Transmit {
                    to: from,
                    payload: unsealed_frame(None, &welcome),
                });
                return DataAction::Consumed;
            }
        };
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
        let prefix = prefix_of(client_address(from));
        if !self.shims.contains_key(&client) && !self.admit_shim(now, prefix) {
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
            })
            .with(MobilityOption::Endpoint(from))
            .with(MobilityOption::ClientAddress(client)),
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
                shim.home = home;
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
                        home,
                        prefix,
                        session: ShimSession {
                            sessions: PeerSessions::new(session),
                            shim_index: hello.index,
                            shim_nonce: hello.nonce,
                            welcome,
                        },
                    },
                );
                self.shim_prefixes.entry(prefix).or_default().insert(client);
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

    /// The client address of a proven shim (docs/PROTOCOL.md 4.6): its
    /// source address when its HoA has the source's family and the Hello's
    /// local endpoint is that source (no NAT), else from the pool of the
    /// HoA's family.
    fn client_address_for(
        &self,
        from: SocketAddr,
        hello: &Hello,
        home: Ipv6Addr,
    ) -> Result<Ipv6Addr, NoAddress> {
        let ipv4 = home.to_ipv4_mapped().is_some();
        let same_family = ipv4 == from.is_ipv4();
        let untranslated = hello
            .local
            .is_none_or(|l| crate::engine::canonical(l).ip() == from.ip());
        if same_family && untranslated {
            return Ok(client_address(from));
        }
        if !ipv4 {
            let prefix = self
                .config
                .shim_prefix_v6
                .ok_or(NoAddress::NoPool { ipv4 })?;
            let mut c = prefix.octets();
            c[8..].copy_from_slice(&hello.instance);
            return Ok(Ipv6Addr::from(c));
        }
        let pool = self.config.shim_pool_v4.ok_or(NoAddress::NoPool { ipv4 })?;
        let c = pool
            .pool_address(hello.instance)
            .ok_or(NoAddress::NoPool { ipv4 })?
            .to_ipv6_mapped();
        if self
            .shims
            .get(&c)
            .is_some_and(|s| s.instance != hello.instance)
        {
            return Err(NoAddress::Collision);
        }
        Ok(c)
    }

    /// Make room for a new shim record under the per-prefix and global
    /// limits: evict the least recently seen record idle for
    /// [`EVICTABLE_IDLE`], or refuse (false). `prefix` is that of the
    /// Hello's source (a pool address says nothing about who asks).
    fn admit_shim(&mut self, now: Instant, prefix: Ipv6Addr) -> bool {
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
        if let Some(set) = self.shim_prefixes.get_mut(&shim.prefix) {
            set.remove(&client);
            if set.is_empty() {
                self.shim_prefixes.remove(&shim.prefix);
            }
        }
    }

    /// A frame that opened in the current session of `client`'s shim with
    /// its newest counter came from `from`: if that is not the record's
    /// endpoint, the shim moved (a NAT rebinding, a new network), and the
    /// record follows it (WireGuard's roaming). Its members hear of the
    /// new endpoint at the next Shim Notice, which is due at once.
    pub(super) fn shim_roam(&mut self, client: Ipv6Addr, from: SocketAddr) {
        let Some(shim) = self.shims.get_mut(&client) else {
            return;
        };
        if shim.endpoint == from {
            return;
        }
        let old = std::mem::replace(&mut shim.endpoint, from);
        for st in shim.members.values_mut() {
            st.last_notice = None;
        }
        self.counters.roams += 1;
        self.events.push_back(ApEvent::ShimRoamed {
            client,
            from: old,
            to: from,
        });
    }

    /// A sealed frame from the shim of `client`: it is alive.
    pub(super) fn shim_refresh(&mut self, now: Instant, client: Ipv6Addr) {
        if let Some(s) = self.shims.get_mut(&client) {
            s.last_seen = now;
        }
    }
}
