//! The legacy clients of the scale run: one TCP flow per client address,
//! the ECMP router in front of the APs, the waves of packets the clients
//! send, and the ledger of which member each flow reached.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use homeaddr_proto::wire::MemberId;
use homeaddr_proto::wire::inner;

use super::pump::Traffic;
use crate::packet::{TcpControl, tcp_segment};
use crate::{SERVICE_PORT, home_address};

/// The /64 of the clients: flow `i`'s client is `fd00:4841:c::i`.
const CLIENT_PREFIX: u128 = 0xfd00_4841_000c_0000_u128 << 64;
/// The client's initial sequence number and the server's (the SYN-ACK is
/// not simulated: members' answers do not matter to the APs' tables).
const CLIENT_ISN: u32 = 1_000;
const SERVER_ISN: u32 = 5_000;
/// Bytes of data per segment: the flow's index.
const DATA_LEN: u32 = 4;

/// Flow `i`'s client endpoint.
pub(crate) fn client(i: u32) -> SocketAddrV6 {
    let addr = Ipv6Addr::from_bits(CLIENT_PREFIX | u128::from(i));
    SocketAddrV6::new(addr, 1024 + (i % 60_000) as u16, 0, 0)
}

/// The flow whose client is `addr`, if it is one of ours.
fn flow_of(addr: Ipv6Addr) -> Option<u32> {
    let bits = addr.to_bits();
    (bits >> 64 == CLIENT_PREFIX >> 64).then_some(bits as u32)
}

/// The router's ECMP pick for flow `i` among `n` next hops: a fixed hash
/// of the 5-tuple (FNV-1a 64, then the splitmix64 finaliser), modulo `n`,
/// as a plain (not resilient) ECMP group hashes: when a next hop goes,
/// most flows move to another one.
pub(crate) fn ecmp(i: u32, n: usize) -> usize {
    let c = client(i);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = c
        .ip()
        .octets()
        .into_iter()
        .chain(home_address().octets())
        .chain(c.port().to_be_bytes())
        .chain(SERVICE_PORT.to_be_bytes())
        .chain([6]);
    for b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % n as u64) as usize
}

/// What a wave of packets is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaveKind {
    /// Each flow opens: SYN, then one RTT later its first data segment
    /// (ACK, PSH).
    Open,
    /// Each flow sends its data segment number `n` (the opening wave's
    /// is number 0).
    Next(u32),
}

/// One packet per flow (two for [`WaveKind::Open`]), flow `i` at
/// `start + i / rate`, each to the AP `ecmp` picks among the live ones;
/// and the member each flow's packets reached.
#[derive(Debug)]
pub(crate) struct Wave {
    kind: WaveKind,
    start: Instant,
    /// Flows per second.
    rate: u64,
    rtt: Duration,
    flows: u32,
    /// Next flow whose first (or only) packet is due.
    first: u32,
    /// Next flow whose second packet (Open) is due.
    second: u32,
    /// The live APs, router order.
    next_hops: Vec<usize>,
    /// The member each flow reached in this wave (0: none yet).
    pub reached: Vec<u16>,
    /// Flows whose packets reached two different members in this wave.
    pub split: u32,
}

impl Wave {
    pub(crate) fn new(
        kind: WaveKind,
        start: Instant,
        flows: u32,
        rate: u64,
        rtt: Duration,
        next_hops: Vec<usize>,
    ) -> Self {
        Self {
            kind,
            start,
            rate,
            rtt,
            flows,
            first: 0,
            second: 0,
            next_hops,
            reached: vec![0; flows as usize],
            split: 0,
        }
    }

    fn first_at(&self, i: u32) -> Instant {
        self.start + Duration::from_nanos(u64::from(i) * 1_000_000_000 / self.rate.max(1))
    }

    fn second_at(&self, i: u32) -> Instant {
        self.first_at(i) + self.rtt
    }

    /// When its last packet is sent.
    pub(crate) fn last_send(&self) -> Instant {
        let last = self.flows.saturating_sub(1);
        match self.kind {
            WaveKind::Open => self.second_at(last),
            WaveKind::Next(_) => self.first_at(last),
        }
    }

    /// The AP the router sends flow `i` to.
    pub(crate) fn ap_of(&self, i: u32) -> usize {
        self.next_hops[ecmp(i, self.next_hops.len())]
    }

    fn due_second(&self) -> Option<Instant> {
        (self.kind == WaveKind::Open && self.second < self.first)
            .then(|| self.second_at(self.second))
    }

    fn due_first(&self) -> Option<Instant> {
        (self.first < self.flows).then(|| self.first_at(self.first))
    }

    /// Flows none of whose packets reached a member.
    pub(crate) fn unreached(&self) -> usize {
        self.reached.iter().filter(|&&m| m == 0).count()
    }
}

impl Traffic for Wave {
    fn next_at(&self) -> Option<Instant> {
        [self.due_first(), self.due_second()]
            .into_iter()
            .flatten()
            .min()
    }

    fn pop(&mut self) -> (usize, Vec<u8>) {
        let service = SocketAddrV6::new(home_address(), SERVICE_PORT, 0, 0);
        let ack = Some(SERVER_ISN + 1);
        let second_first = match (self.due_first(), self.due_second()) {
            (Some(f), Some(s)) => s <= f,
            (None, Some(_)) => true,
            _ => false,
        };
        let (i, packet) = if second_first {
            let i = self.second;
            self.second += 1;
            let data = i.to_be_bytes();
            let p = tcp_segment(
                client(i),
                service,
                TcpControl::Psh,
                CLIENT_ISN + 1,
                ack,
                &data,
            );
            (i, p)
        } else {
            let i = self.first;
            self.first += 1;
            let p = match self.kind {
                WaveKind::Open => {
                    tcp_segment(client(i), service, TcpControl::Syn, CLIENT_ISN, None, &[])
                }
                WaveKind::Next(n) => {
                    let seq = CLIENT_ISN + 1 + DATA_LEN * n;
                    tcp_segment(
                        client(i),
                        service,
                        TcpControl::Psh,
                        seq,
                        ack,
                        &i.to_be_bytes(),
                    )
                }
            };
            (i, p)
        };
        (self.ap_of(i), packet)
    }

    fn delivered(&mut self, member: MemberId, packet: &[u8]) {
        let Some(i) = inner::addresses(packet)
            .ok()
            .and_then(|(src, _)| flow_of(src))
            .filter(|&i| i < self.flows)
        else {
            return;
        };
        let slot = &mut self.reached[i as usize];
        if *slot == 0 {
            *slot = member.0;
        } else if *slot != member.0 {
            self.split += 1;
        }
    }
}

/// How a later wave compares with the opening one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Continuity {
    /// Flows the router sent to another AP than in the opening wave.
    pub moved_ap: u32,
    /// Flows whose packet reached another member than the one serving them.
    pub changed_member: u32,
    /// Flows whose packet reached no member.
    pub unreached: u32,
}

impl Continuity {
    /// Flows lost: changed member (its kernel answers with an RST) or
    /// never delivered.
    pub fn lost(&self) -> u32 {
        self.changed_member + self.unreached
    }

    /// Compare `later` with the opening wave `open`.
    pub(crate) fn between(open: &Wave, later: &Wave) -> Self {
        let mut c = Continuity::default();
        for i in 0..open.flows {
            if open.ap_of(i) != later.ap_of(i) {
                c.moved_ap += 1;
            }
            match later.reached[i as usize] {
                0 => c.unreached += 1,
                m if m != open.reached[i as usize] => c.changed_member += 1,
                _ => {}
            }
        }
        c.changed_member += later.split;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_round_trip_and_ecmp_spreads() {
        assert_eq!(flow_of(*client(123_456).ip()), Some(123_456));
        assert_eq!(flow_of(home_address()), None);
        let mut per = [0u32; 10];
        for i in 0..100_000 {
            per[ecmp(i, 10)] += 1;
        }
        assert!(per.iter().all(|&n| (9_000..11_000).contains(&n)), "{per:?}");
    }

    #[test]
    fn an_open_wave_sends_syn_then_data_in_time_order() {
        let t = Instant::now();
        let mut w = Wave::new(
            WaveKind::Open,
            t,
            3,
            1000,
            Duration::from_millis(2),
            vec![0, 1],
        );
        let mut got = Vec::new();
        while let Some(at) = w.next_at() {
            let (_, p) = w.pop();
            let info = inner::inspect(&p).unwrap();
            let syn = info.tcp.unwrap().flags.syn;
            got.push(((at - t).as_micros(), flow_of(info.flow.src).unwrap(), syn));
        }
        assert_eq!(
            got,
            vec![
                (0, 0, true),
                (1000, 1, true),
                (2000, 0, false),
                (2000, 2, true),
                (3000, 1, false),
                (4000, 2, false)
            ]
        );
    }
}
