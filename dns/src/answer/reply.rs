//! The reply under construction: question, records, OPT, and the header
//! written last, with truncation to the transport's size limit.

use crate::config::Zone;
use crate::wire::{
    self, ClientSubnet, Edns, Header, Question, class, flag, put_opt, put_rr_header,
};

use super::Transport;

/// The answer section.
pub(super) const AN: usize = 0;
/// The authority section.
pub(super) const NS: usize = 1;

/// What the end of every reply to one query depends on: the query's header
/// and OPT, our payload size, and the size limit of the transport.
#[derive(Debug, Clone, Copy)]
pub(super) struct Envelope<'q> {
    header: Header,
    edns: Option<&'q Edns>,
    our_payload: u16,
    limit: usize,
}

impl<'q> Envelope<'q> {
    pub(super) fn new(
        zone: &Zone,
        header: Header,
        edns: Option<&'q Edns>,
        transport: Transport,
    ) -> Self {
        let limit = match (transport, edns) {
            (Transport::Tcp, _) => usize::from(u16::MAX),
            (Transport::Udp, None) => wire::CLASSIC_UDP_LIMIT,
            (Transport::Udp, Some(e)) => {
                usize::from(e.udp_payload.clamp(512, zone.max_udp_payload))
            }
        };
        Self {
            header,
            edns,
            our_payload: zone.max_udp_payload,
            limit,
        }
    }
}

/// A reply under construction.
pub(super) struct Reply<'o> {
    out: &'o mut Vec<u8>,
    counts: [u16; 3],
    has_question: bool,
}

impl Reply<'_> {
    pub(super) fn start<'o>(out: &'o mut Vec<u8>, question: Option<&Question>) -> Reply<'o> {
        out.clear();
        out.resize(wire::HEADER_LEN, 0);
        if let Some(q) = question {
            out.extend_from_slice(q.name.as_wire());
            out.extend_from_slice(&q.qtype.to_be_bytes());
            out.extend_from_slice(&q.qclass.to_be_bytes());
        }
        Reply {
            out,
            counts: [0; 3],
            has_question: question.is_some(),
        }
    }

    pub(super) fn record(
        &mut self,
        section: usize,
        owner: &[u8],
        rtype: u16,
        ttl: u32,
        rdata: &[u8],
    ) {
        put_rr_header(self.out, owner, rtype, class::IN, ttl, rdata.len());
        self.out.extend_from_slice(rdata);
        self.counts[section] += 1;
    }

    /// Records in the answer section so far.
    pub(super) fn answers(&self) -> u16 {
        self.counts[AN]
    }

    /// Writes OPT and the header, then truncates to the envelope's limit if
    /// needed. Returns whether it truncated (TC set).
    pub(super) fn finish(
        mut self,
        env: &Envelope<'_>,
        rcode: u16,
        aa: bool,
        ecs: Option<&ClientSubnet>,
    ) -> bool {
        let opt_at = self.out.len();
        if let Some(e) = env.edns {
            put_opt(
                self.out,
                env.our_payload,
                (rcode >> 4) as u8,
                e.dnssec_ok,
                ecs,
            );
        }
        let mut counts = self.counts;
        let mut ar = u16::from(env.edns.is_some());
        let truncated = self.out.len() > env.limit;
        if truncated {
            counts = [0; 3];
            if !self.truncate(opt_at, env.limit) {
                ar = 0;
            }
        }
        let mut flags = flag::QR
            | (env.header.flags & (0xf << flag::OPCODE_SHIFT))
            | (env.header.flags & (flag::RD | flag::CD))
            | (rcode & 0xf);
        if aa {
            flags |= flag::AA;
        }
        if truncated {
            flags |= flag::TC;
        }
        self.out[0..2].copy_from_slice(&env.header.id.to_be_bytes());
        self.out[2..4].copy_from_slice(&flags.to_be_bytes());
        self.out[4..6].copy_from_slice(&u16::from(self.has_question).to_be_bytes());
        self.out[6..8].copy_from_slice(&counts[AN].to_be_bytes());
        self.out[8..10].copy_from_slice(&counts[NS].to_be_bytes());
        self.out[10..12].copy_from_slice(&ar.to_be_bytes());
        truncated
    }

    /// RFC 2181 sec. 9: a truncated reply is only good for retrying over
    /// TCP; drop every record but keep the question and the OPT at `opt_at`
    /// (the ECS option tells the resolver how it will be scoped). Returns
    /// whether the OPT still fits in `limit` (else it is dropped too).
    fn truncate(&mut self, opt_at: usize, limit: usize) -> bool {
        let question_end = self.question_end();
        let opt = self.out[opt_at..].to_vec();
        self.out.truncate(question_end);
        self.out.extend_from_slice(&opt);
        if self.out.len() > limit {
            self.out.truncate(question_end);
            return false;
        }
        true
    }

    /// Where the question (name + 4 octets, right after the header) ends.
    fn question_end(&self) -> usize {
        if !self.has_question {
            return wire::HEADER_LEN;
        }
        let mut end = wire::HEADER_LEN;
        while let Some(&len) = self.out.get(end) {
            end += 1;
            if len == 0 {
                break;
            }
            end += len as usize;
        }
        end + 4
    }
}
