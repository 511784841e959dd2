//! GSO train planning: which consecutive datagrams of a batch can leave in
//! one `sendmsg` with `UDP_SEGMENT`. Pure functions, no sockets, so the rules
//! are tested without privileges.
//!
//! A *train* is a run of datagrams that
//! - go to the same destination,
//! - lie back to back in one buffer (the kernel cuts the train at `stride`),
//! - all have the length of the first (`stride`), except the last, which may
//!   be shorter and then ends the train,
//! - number at most [`gso_segment_cap`]`(max_gso_segments, stride)`.

use std::iter::Peekable;
use std::net::SocketAddr;

/// Largest GSO train, in bytes, that one `sendmsg` may carry.
///
/// The UDP length field is 16 bits; a train whose total payload exceeds it
/// fails with `EMSGSIZE` (DATAPATH-NOTES fact 1). 48 bytes are kept for the
/// IPv6 (40) and UDP (8) headers, which also covers IPv4 (20 + 8).
pub const MAX_GSO_TRAIN_BYTES: usize = 65_535 - 48;

/// How many `stride`-byte datagrams may share one GSO send.
///
/// `min(max_gso_segments, MAX_GSO_TRAIN_BYTES / stride)`, and at least 1 so
/// that a single datagram can always be sent (an oversized single datagram
/// then fails on its own with `EMSGSIZE` and is counted).
pub fn gso_segment_cap(max_gso_segments: usize, stride: usize) -> usize {
    if stride == 0 {
        return 1;
    }
    max_gso_segments.min(MAX_GSO_TRAIN_BYTES / stride).max(1)
}

/// One datagram of an outgoing batch: where it goes and where its bytes
/// (tunnel header included) lie in the batch's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutDatagram {
    /// UDP destination.
    pub to: SocketAddr,
    /// Offset of the first byte in the batch buffer.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// A run of datagrams sent with one `sendmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Train {
    /// UDP destination of every datagram in the train.
    pub to: SocketAddr,
    /// Byte range in the batch buffer: `start..end`.
    pub start: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
    /// Length of every datagram but the last (the GSO segment size).
    pub stride: usize,
    /// Number of datagrams.
    pub segments: usize,
}

impl Train {
    /// The `segment_size` to hand to the kernel: `None` for one datagram
    /// (some drivers reject GSO with a single segment).
    pub fn segment_size(&self) -> Option<usize> {
        (self.segments > 1).then_some(self.stride)
    }
}

/// Iterator that groups a batch's datagrams into [`Train`]s, in order.
///
/// `None` items are datagrams the caller dropped; they end the current train.
#[derive(Debug)]
pub struct Trains<I: Iterator<Item = Option<OutDatagram>>> {
    items: Peekable<I>,
    max_gso_segments: usize,
}

impl<I: Iterator<Item = Option<OutDatagram>>> Trains<I> {
    /// Plans trains over `items` for a socket that accepts
    /// `max_gso_segments` segments per send (1 = no GSO).
    pub fn new(items: I, max_gso_segments: usize) -> Self {
        Trains {
            items: items.peekable(),
            max_gso_segments,
        }
    }
}

impl<I: Iterator<Item = Option<OutDatagram>>> Iterator for Trains<I> {
    type Item = Train;

    fn next(&mut self) -> Option<Train> {
        let first = loop {
            if let Some(d) = self.items.next()? {
                break d;
            }
        };
        let stride = first.len;
        let cap = gso_segment_cap(self.max_gso_segments, stride);
        let mut train = Train {
            to: first.to,
            start: first.offset,
            end: first.offset + first.len,
            stride,
            segments: 1,
        };
        if stride == 0 {
            return Some(train);
        }
        // Only a train whose datagrams are all full-sized may grow: a shorter
        // datagram is the last one the kernel can cut correctly.
        while train.segments < cap && train.end - train.start == train.segments * stride {
            match self.items.peek() {
                Some(Some(d))
                    if d.to == train.to
                        && d.offset == train.end
                        && d.len > 0
                        && d.len <= stride =>
                {
                    train.end += d.len;
                    train.segments += 1;
                    self.items.next();
                }
                _ => break,
            }
        }
        Some(train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 7, 1], port))
    }

    /// Lays out datagrams back to back from offset 0.
    fn packed(spec: &[(u16, usize)]) -> Vec<Option<OutDatagram>> {
        let mut offset = 0;
        spec.iter()
            .map(|&(port, len)| {
                let d = OutDatagram {
                    to: addr(port),
                    offset,
                    len,
                };
                offset += len;
                Some(d)
            })
            .collect()
    }

    fn plan(items: Vec<Option<OutDatagram>>, max_gso: usize) -> Vec<(u16, usize, usize)> {
        Trains::new(items.into_iter(), max_gso)
            .map(|t| (t.to.port(), t.segments, t.stride))
            .collect()
    }

    #[test]
    fn cap_is_limited_by_the_udp_length_field() {
        // 1420-byte inner MTU + 16-byte header + 16-byte tag: 45 segments
        // fit, not 64.
        assert_eq!(gso_segment_cap(64, 1452), 45);
        const { assert!(45 * 1452 <= MAX_GSO_TRAIN_BYTES) };
        const { assert!(46 * 1452 > MAX_GSO_TRAIN_BYTES) };
        // Small datagrams: the socket's own limit wins.
        assert_eq!(gso_segment_cap(64, 100), 64);
        // No GSO on the socket.
        assert_eq!(gso_segment_cap(1, 1452), 1);
        // Jumbo datagrams: never below one.
        assert_eq!(gso_segment_cap(64, 9004), 7);
        assert_eq!(gso_segment_cap(64, 70_000), 1);
        assert_eq!(gso_segment_cap(64, 0), 1);
    }

    #[test]
    fn equal_datagrams_to_one_destination_form_one_train() {
        let items = packed(&[(1, 1000); 10]);
        assert_eq!(plan(items, 64), vec![(1, 10, 1000)]);
    }

    #[test]
    fn a_shorter_last_datagram_joins_and_ends_the_train() {
        let items = packed(&[(1, 1000), (1, 1000), (1, 400), (1, 1000)]);
        assert_eq!(plan(items, 64), vec![(1, 3, 1000), (1, 1, 1000)]);
    }

    #[test]
    fn a_longer_datagram_starts_a_new_train() {
        let items = packed(&[(1, 500), (1, 500), (1, 900), (1, 900)]);
        assert_eq!(plan(items, 64), vec![(1, 2, 500), (1, 2, 900)]);
    }

    #[test]
    fn destination_changes_split_trains() {
        let items = packed(&[(1, 100), (1, 100), (2, 100), (1, 100)]);
        assert_eq!(plan(items, 64), vec![(1, 2, 100), (2, 1, 100), (1, 1, 100)]);
    }

    #[test]
    fn dropped_datagrams_split_trains() {
        let mut items = packed(&[(1, 100), (1, 100), (1, 100), (1, 100)]);
        items[1] = None;
        assert_eq!(plan(items, 64), vec![(1, 1, 100), (1, 2, 100)]);
    }

    #[test]
    fn a_gap_in_the_buffer_splits_trains() {
        let items = vec![
            Some(OutDatagram {
                to: addr(1),
                offset: 0,
                len: 100,
            }),
            Some(OutDatagram {
                to: addr(1),
                offset: 104,
                len: 100,
            }),
        ];
        assert_eq!(plan(items, 64), vec![(1, 1, 100), (1, 1, 100)]);
    }

    #[test]
    fn trains_respect_the_segment_cap() {
        // 100 full-MTU datagrams: 45 + 45 + 10.
        let items = packed(&[(1, 1452); 100]);
        let trains: Vec<Train> = Trains::new(items.into_iter(), 64).collect();
        assert_eq!(
            trains.iter().map(|t| t.segments).collect::<Vec<_>>(),
            vec![45, 45, 10]
        );
        for t in &trains {
            assert!(t.end - t.start <= MAX_GSO_TRAIN_BYTES);
            assert_eq!(t.end - t.start, t.segments * t.stride);
        }
        assert_eq!(trains[1].start, trains[0].end);
        assert_eq!(trains[0].segment_size(), Some(1452));
    }

    #[test]
    fn without_gso_every_datagram_is_its_own_train() {
        let items = packed(&[(1, 100); 5]);
        let trains: Vec<Train> = Trains::new(items.into_iter(), 1).collect();
        assert_eq!(trains.len(), 5);
        assert!(trains.iter().all(|t| t.segment_size().is_none()));
    }

    #[test]
    fn empty_datagrams_travel_alone() {
        let items = packed(&[(1, 0), (1, 0), (1, 10)]);
        assert_eq!(plan(items, 64), vec![(1, 1, 0), (1, 1, 0), (1, 1, 10)]);
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert!(plan(vec![], 64).is_empty());
        assert!(plan(vec![None, None], 64).is_empty());
    }
}
