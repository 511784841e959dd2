//! Counters the daemons export: plain relaxed atomics, bumped once per batch
//! (never per packet), read with `snapshot()`.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    (
        $(#[$meta:meta])*
        $name:ident => $(#[$stats_meta:meta])* $stats:ident {
            $( $(#[$field_meta:meta])* $field:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: AtomicU64, )*
        }

        $(#[$stats_meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $stats {
            $( $(#[$field_meta])* pub $field: u64, )*
        }

        impl $name {
            /// A consistent-enough copy of every counter (each read relaxed).
            pub fn snapshot(&self) -> $stats {
                $stats { $( $field: self.$field.load(Ordering::Relaxed), )* }
            }
        }
    };
}

counters! {
    /// Live counters of one [`TunDevice`](crate::TunDevice).
    TunCounters =>
    /// A copy of [`TunCounters`].
    TunStats {
        /// IP packets read (offload super-packets count as their segments).
        rx_packets,
        /// Bytes of those packets.
        rx_bytes,
        /// `read` system calls that returned data.
        rx_reads,
        /// Reads whose packets were lost because tun-rs could not split them
        /// (malformed virtio header, more segments than the batch holds).
        rx_errors,
        /// IP packets handed to the kernel (before GRO coalescing).
        tx_packets,
        /// Bytes of those packets.
        tx_bytes,
        /// Batch writes in which at least one `write` failed.
        tx_errors,
        /// Packets known to be lost by those failures (a batch that tun-rs
        /// rejected before writing; single failed writes inside a batch are
        /// only visible in `tx_errors`).
        tx_dropped,
    }
}

counters! {
    /// Live counters of one [`UdpTunnel`](crate::UdpTunnel).
    UdpCounters =>
    /// A copy of [`UdpCounters`].
    UdpStats {
        /// Datagrams received (GRO trains count as their segments).
        rx_datagrams,
        /// Bytes of those datagrams.
        rx_bytes,
        /// `recvmmsg` calls that returned data.
        rx_syscalls,
        /// Transient receive errors that were skipped (e.g. ICMP errors
        /// reported on the socket).
        rx_errors,
        /// Datagrams the kernel accepted.
        tx_datagrams,
        /// Bytes of those datagrams.
        tx_bytes,
        /// `sendmsg` calls that succeeded (one per GSO train).
        tx_syscalls,
        /// `sendmsg` calls that failed with an error other than `WouldBlock`.
        tx_errors,
        /// Datagrams lost to those errors.
        tx_dropped,
    }
}

/// Adds `n` to a counter.
#[inline]
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_copies_every_field() {
        let c = UdpCounters::default();
        add(&c.tx_datagrams, 3);
        add(&c.tx_dropped, 1);
        let s = c.snapshot();
        assert_eq!(s.tx_datagrams, 3);
        assert_eq!(s.tx_dropped, 1);
        assert_eq!(s.rx_bytes, 0);
    }
}
