//! The tunnel frame: the 4-byte header at the start of every homeaddr UDP
//! payload (docs/PROTOCOL.md section 1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Kind  |     Flags     |           Member ID           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Payload (IPv6 packet or Mobility Header) ... |
//! ```
//!
//! Two levels, as everywhere in [`crate::wire`]: [`TunnelFrame`] is a
//! zero-copy view over a buffer, [`TunnelHeader`] the typed header.

use super::{MemberId, WireError};

/// The tunnel protocol version this build speaks.
pub const TUNNEL_VERSION: u8 = 1;

/// Length of the tunnel header.
pub const TUNNEL_HEADER_LEN: usize = 4;

/// Byte offsets of the header fields.
mod field {
    /// Version (high nibble) and Kind (low nibble).
    pub const VERSION_KIND: usize = 0;
    /// Flags.
    pub const FLAGS: usize = 1;
    /// Member ID, 16 bits.
    pub const MEMBER_ID: core::ops::Range<usize> = 2..4;
    /// First byte of the payload.
    pub const PAYLOAD: usize = 4;
}

/// Flag `M`: the Member ID field is valid.
pub const FLAG_MEMBER: u8 = 0x80;

/// What a tunnel frame carries.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// One inner IPv6 packet.
    Data = 0,
    /// One Mobility Header message (docs/PROTOCOL.md section 2).
    Control = 1,
}

impl FrameKind {
    /// The kind for a 4-bit wire value, if it is one this build knows.
    pub fn from_u8(value: u8) -> Option<FrameKind> {
        match value {
            0 => Some(FrameKind::Data),
            1 => Some(FrameKind::Control),
            _ => None,
        }
    }
}

/// The typed tunnel header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelHeader {
    /// Data or control.
    pub kind: FrameKind,
    /// The member the frame is from, to, or (AP -> shim data) was served by.
    /// `None` when the `M` flag is clear.
    pub member: Option<MemberId>,
}

impl TunnelHeader {
    /// A data frame header.
    pub fn data(member: Option<MemberId>) -> Self {
        TunnelHeader {
            kind: FrameKind::Data,
            member,
        }
    }

    /// A control frame header.
    pub fn control(member: Option<MemberId>) -> Self {
        TunnelHeader {
            kind: FrameKind::Control,
            member,
        }
    }

    /// Parses the header at the start of `frame`: at least 4 bytes, version
    /// 1, kind data or control. Unknown flags are ignored; the Member ID is
    /// ignored unless `M` is set.
    pub fn parse(frame: &[u8]) -> Result<TunnelHeader, WireError> {
        TunnelFrame::new_checked(frame)?.header()
    }

    /// The 4 header bytes.
    pub fn to_bytes(&self) -> [u8; TUNNEL_HEADER_LEN] {
        let (flags, id) = match self.member {
            Some(MemberId(id)) => (FLAG_MEMBER, id),
            None => (0, 0),
        };
        let [id_hi, id_lo] = id.to_be_bytes();
        [(TUNNEL_VERSION << 4) | self.kind as u8, flags, id_hi, id_lo]
    }

    /// Writes the header into the first 4 bytes of `buf`; the rest of `buf`
    /// is left alone.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let have = buf.len();
        let out = buf
            .get_mut(..TUNNEL_HEADER_LEN)
            .ok_or(WireError::BufferTooSmall {
                need: TUNNEL_HEADER_LEN,
                have,
            })?;
        out.copy_from_slice(&self.to_bytes());
        Ok(())
    }

    /// Length of the header on the wire.
    pub const fn buffer_len(&self) -> usize {
        TUNNEL_HEADER_LEN
    }
}

/// Zero-copy view of a tunnel frame (header + payload).
///
/// After [`TunnelFrame::new_checked`] no accessor panics. With
/// [`TunnelFrame::new_unchecked`] the accessors panic on a buffer shorter
/// than 4 bytes, as smoltcp's views do.
#[derive(Debug, Clone)]
pub struct TunnelFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TunnelFrame<T> {
    /// Wraps `buffer` without any check.
    pub const fn new_unchecked(buffer: T) -> TunnelFrame<T> {
        TunnelFrame { buffer }
    }

    /// Wraps `buffer` after checking its length, version and kind.
    pub fn new_checked(buffer: T) -> Result<TunnelFrame<T>, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check()?;
        Ok(frame)
    }

    /// Checks that the buffer holds a header this build understands.
    pub fn check(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < TUNNEL_HEADER_LEN {
            return Err(WireError::Truncated("tunnel header"));
        }
        if self.version() != TUNNEL_VERSION {
            return Err(WireError::UnsupportedVersion(self.version()));
        }
        self.kind().map(|_| ())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The Version field (high nibble of byte 0).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_KIND] >> 4
    }

    /// The Kind field as a [`FrameKind`]; `Err` only for a kind that
    /// [`TunnelFrame::new_checked`] would have refused.
    pub fn kind(&self) -> Result<FrameKind, WireError> {
        let raw = self.buffer.as_ref()[field::VERSION_KIND] & 0x0f;
        FrameKind::from_u8(raw).ok_or(WireError::UnknownFrameKind(raw))
    }

    /// The raw Flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The Member ID if the `M` flag is set.
    pub fn member_id(&self) -> Option<MemberId> {
        if self.flags() & FLAG_MEMBER == 0 {
            return None;
        }
        let b = &self.buffer.as_ref()[field::MEMBER_ID];
        Some(MemberId(u16::from_be_bytes([b[0], b[1]])))
    }

    /// The typed header.
    pub fn header(&self) -> Result<TunnelHeader, WireError> {
        Ok(TunnelHeader {
            kind: self.kind()?,
            member: self.member_id(),
        })
    }

    /// Everything after the 4-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TunnelFrame<T> {
    /// Rewrites the whole header (version 1, the given kind and member).
    pub fn set_header(&mut self, header: &TunnelHeader) {
        self.buffer.as_mut()[..TUNNEL_HEADER_LEN].copy_from_slice(&header.to_bytes());
    }

    /// Sets or clears the member tag (the `M` flag and the Member ID), keeping
    /// the other flags.
    pub fn set_member_id(&mut self, member: Option<MemberId>) {
        let buf = self.buffer.as_mut();
        let id = match member {
            Some(MemberId(id)) => {
                buf[field::FLAGS] |= FLAG_MEMBER;
                id
            }
            None => {
                buf[field::FLAGS] &= !FLAG_MEMBER;
                0
            }
        };
        buf[field::MEMBER_ID].copy_from_slice(&id.to_be_bytes());
    }

    /// Everything after the 4-byte header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A data frame from member 0x0102 carrying the bytes `ab cd`.
    const DATA_M258: [u8; 6] = [0x10, 0x80, 0x01, 0x02, 0xab, 0xcd];
    /// A control frame without a member.
    const CONTROL_NONE: [u8; 4] = [0x11, 0x00, 0x00, 0x00];

    #[test]
    fn parse_fixtures() {
        assert_eq!(
            TunnelHeader::parse(&DATA_M258),
            Ok(TunnelHeader::data(Some(MemberId(0x0102))))
        );
        assert_eq!(
            TunnelHeader::parse(&CONTROL_NONE),
            Ok(TunnelHeader::control(None))
        );
        let frame = TunnelFrame::new_checked(&DATA_M258[..]).unwrap();
        assert_eq!(frame.version(), 1);
        assert_eq!(frame.kind(), Ok(FrameKind::Data));
        assert_eq!(frame.flags(), 0x80);
        assert_eq!(frame.member_id(), Some(MemberId(258)));
        assert_eq!(frame.payload(), &[0xab, 0xcd]);
    }

    #[test]
    fn emit_fixtures() {
        assert_eq!(
            TunnelHeader::data(Some(MemberId(0x0102))).to_bytes(),
            DATA_M258[..4]
        );
        assert_eq!(TunnelHeader::control(None).to_bytes(), CONTROL_NONE);
        let mut buf = [0xffu8; 6];
        TunnelHeader::control(None).emit(&mut buf).unwrap();
        assert_eq!(buf, [0x11, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(
            TunnelHeader::control(None).emit(&mut [0u8; 3]),
            Err(WireError::BufferTooSmall { need: 4, have: 3 })
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            TunnelHeader::parse(&[0x10, 0, 0]),
            Err(WireError::Truncated("tunnel header"))
        );
        assert_eq!(
            TunnelHeader::parse(&[0x20, 0, 0, 0]),
            Err(WireError::UnsupportedVersion(2))
        );
        assert_eq!(
            TunnelHeader::parse(&[0x12, 0, 0, 0]),
            Err(WireError::UnknownFrameKind(2))
        );
    }

    #[test]
    fn member_id_ignored_without_flag_and_other_flags_ignored() {
        assert_eq!(
            TunnelHeader::parse(&[0x10, 0x7f, 0x12, 0x34]),
            Ok(TunnelHeader::data(None))
        );
    }

    #[test]
    fn in_place_rewrite() {
        let mut buf = DATA_M258;
        let mut frame = TunnelFrame::new_checked(&mut buf[..]).unwrap();
        frame.set_member_id(None);
        assert_eq!(frame.member_id(), None);
        frame.set_member_id(Some(MemberId(7)));
        frame.payload_mut()[0] = 0x11;
        frame.set_header(&TunnelHeader::control(Some(MemberId(9))));
        assert_eq!(buf, [0x11, 0x80, 0, 9, 0x11, 0xcd]);
    }

    fn header() -> impl Strategy<Value = TunnelHeader> {
        (
            prop_oneof![Just(FrameKind::Data), Just(FrameKind::Control)],
            proptest::option::of(any::<u16>().prop_map(MemberId)),
        )
            .prop_map(|(kind, member)| TunnelHeader { kind, member })
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(b in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok(frame) = TunnelFrame::new_checked(&b[..]) {
                let h = frame.header().unwrap();
                let _ = (frame.flags(), frame.payload());
                // The typed header normalises flags and the unused Member ID.
                prop_assert_eq!(TunnelHeader::parse(&h.to_bytes()), Ok(h));
            }
        }

        #[test]
        fn header_round_trips(h in header()) {
            prop_assert_eq!(TunnelHeader::parse(&h.to_bytes()), Ok(h));
        }
    }
}
