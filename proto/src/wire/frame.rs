//! The tunnel frame: the 16-byte header at the start of every homeaddr UDP
//! payload, version 2 (docs/PROTOCOL.md section 1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Kind  |     Flags     |           Member ID           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Session (receiver index)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                         Counter (64)                          +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Payload (IPv6 packet or Mobility Header; ciphertext if E)  ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            Tag (16 bytes, only when Session != 0)             |
//! ```
//!
//! Two levels, as everywhere in [`crate::wire`]: [`TunnelFrame`] is a
//! zero-copy view over a buffer, [`TunnelHeader`] the typed header. This
//! module knows nothing of sealing: the payload of a view is everything
//! after the header, tag included.

use super::{MemberId, WireError};

/// The tunnel protocol version this build speaks.
pub const TUNNEL_VERSION: u8 = 2;

/// Length of the tunnel frame header.
pub const FRAME_HEADER_LEN: usize = 16;

/// Length of the authentication tag at the end of a sealed frame.
pub const TAG_LEN: usize = 16;

/// Byte offsets of the header fields (crate-wide: the session layer seals
/// by them).
pub(crate) mod field {
    use core::ops::Range;
    /// Version (high nibble) and Kind (low nibble).
    pub const VERSION_KIND: usize = 0;
    /// Flags.
    pub const FLAGS: usize = 1;
    /// Member ID, 16 bits.
    pub const MEMBER_ID: Range<usize> = 2..4;
    /// Session (the receiver's index), 32 bits.
    pub const SESSION: Range<usize> = 4..8;
    /// Counter, 64 bits.
    pub const COUNTER: Range<usize> = 8..16;
    /// First byte of the payload.
    pub const PAYLOAD: usize = 16;
}

/// Flag `M`: the Member ID field is valid.
pub const FLAG_MEMBER: u8 = 0x80;

/// Flag `E`: the payload is encrypted (meaningful only when Session != 0).
pub const FLAG_ENCRYPTED: u8 = 0x40;

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
    /// The `E` flag: the payload is encrypted.
    pub encrypted: bool,
    /// The receiver's session index; 0 for an unsealed frame.
    pub session: u32,
    /// The sender's per-session counter; 0 in an unsealed frame.
    pub counter: u64,
}

impl TunnelHeader {
    /// An unsealed data frame header (session 0, counter 0, `E` clear).
    pub fn data(member: Option<MemberId>) -> Self {
        TunnelHeader {
            kind: FrameKind::Data,
            member,
            encrypted: false,
            session: 0,
            counter: 0,
        }
    }

    /// An unsealed control frame header (session 0, counter 0, `E` clear).
    pub fn control(member: Option<MemberId>) -> Self {
        TunnelHeader {
            kind: FrameKind::Control,
            ..Self::data(member)
        }
    }

    /// Parses the header at the start of `frame`: at least 16 bytes,
    /// version 2, kind data or control. Unknown flags are ignored; the
    /// Member ID is ignored unless `M` is set.
    pub fn parse(frame: &[u8]) -> Result<TunnelHeader, WireError> {
        TunnelFrame::new_checked(frame)?.header()
    }

    /// The 16 header bytes.
    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_LEN] {
        let (mut flags, id) = match self.member {
            Some(MemberId(id)) => (FLAG_MEMBER, id),
            None => (0, 0),
        };
        if self.encrypted {
            flags |= FLAG_ENCRYPTED;
        }
        let mut out = [0u8; FRAME_HEADER_LEN];
        out[field::VERSION_KIND] = (TUNNEL_VERSION << 4) | self.kind as u8;
        out[field::FLAGS] = flags;
        out[field::MEMBER_ID].copy_from_slice(&id.to_be_bytes());
        out[field::SESSION].copy_from_slice(&self.session.to_be_bytes());
        out[field::COUNTER].copy_from_slice(&self.counter.to_be_bytes());
        out
    }

    /// Writes the header into the first 16 bytes of `buf`; the rest of
    /// `buf` is left alone.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let have = buf.len();
        let out = buf
            .get_mut(..FRAME_HEADER_LEN)
            .ok_or(WireError::BufferTooSmall {
                need: FRAME_HEADER_LEN,
                have,
            })?;
        out.copy_from_slice(&self.to_bytes());
        Ok(())
    }

    /// Length of the header on the wire.
    pub const fn buffer_len(&self) -> usize {
        FRAME_HEADER_LEN
    }
}

/// Zero-copy view of a tunnel frame (header + payload).
///
/// After [`TunnelFrame::new_checked`] no accessor panics. With
/// [`TunnelFrame::new_unchecked`] the accessors panic on a buffer shorter
/// than 16 bytes, as smoltcp's views do.
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

    /// Checks that the buffer holds a header this build understands. The
    /// version is checked first, so a short frame of another version still
    /// reports [`WireError::UnsupportedVersion`].
    pub fn check(&self) -> Result<(), WireError> {
        let Some(first) = self.buffer.as_ref().first() else {
            return Err(WireError::Truncated("tunnel header"));
        };
        let version = first >> 4;
        if version != TUNNEL_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        if self.buffer.as_ref().len() < FRAME_HEADER_LEN {
            return Err(WireError::Truncated("tunnel header"));
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

    /// The `E` flag.
    pub fn encrypted(&self) -> bool {
        self.flags() & FLAG_ENCRYPTED != 0
    }

    /// The Member ID if the `M` flag is set.
    pub fn member_id(&self) -> Option<MemberId> {
        if self.flags() & FLAG_MEMBER == 0 {
            return None;
        }
        let b = &self.buffer.as_ref()[field::MEMBER_ID];
        Some(MemberId(u16::from_be_bytes([b[0], b[1]])))
    }

    /// The Session field (the receiver's index; 0: unsealed).
    pub fn session(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SESSION];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The Counter field.
    pub fn counter(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::COUNTER]);
        u64::from_be_bytes(b)
    }

    /// The typed header.
    pub fn header(&self) -> Result<TunnelHeader, WireError> {
        Ok(TunnelHeader {
            kind: self.kind()?,
            member: self.member_id(),
            encrypted: self.encrypted(),
            session: self.session(),
            counter: self.counter(),
        })
    }

    /// The 16 header bytes (the AAD of a sealed frame).
    pub fn header_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..field::PAYLOAD]
    }

    /// Everything after the 16-byte header (tag included, if any).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TunnelFrame<T> {
    /// Rewrites the whole header (version 2 and the given fields).
    pub fn set_header(&mut self, header: &TunnelHeader) {
        self.buffer.as_mut()[..FRAME_HEADER_LEN].copy_from_slice(&header.to_bytes());
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

    /// Sets or clears the `E` flag, keeping the other flags.
    pub fn set_encrypted(&mut self, encrypted: bool) {
        let flags = &mut self.buffer.as_mut()[field::FLAGS];
        if encrypted {
            *flags |= FLAG_ENCRYPTED;
        } else {
            *flags &= !FLAG_ENCRYPTED;
        }
    }

    /// Sets the Session field.
    pub fn set_session(&mut self, session: u32) {
        self.buffer.as_mut()[field::SESSION].copy_from_slice(&session.to_be_bytes());
    }

    /// Sets the Counter field.
    pub fn set_counter(&mut self, counter: u64) {
        self.buffer.as_mut()[field::COUNTER].copy_from_slice(&counter.to_be_bytes());
    }

    /// Everything after the 16-byte header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A data frame from member 0x0102, encrypted, session 0x0a0b0c0d,
    /// counter 0x0102030405060708, carrying the bytes `ab cd`.
    const DATA_M258: [u8; 18] = [
        0x20, 0xc0, 0x01, 0x02, 0x0a, 0x0b, 0x0c, 0x0d, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
        0x08, 0xab, 0xcd,
    ];
    /// An unsealed control frame without a member.
    const CONTROL_NONE: [u8; 16] = [0x21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    fn sealed_data() -> TunnelHeader {
        TunnelHeader {
            encrypted: true,
            session: 0x0a0b_0c0d,
            counter: 0x0102_0304_0506_0708,
            ..TunnelHeader::data(Some(MemberId(0x0102)))
        }
    }

    #[test]
    fn parse_fixtures() {
        assert_eq!(TunnelHeader::parse(&DATA_M258), Ok(sealed_data()));
        assert_eq!(
            TunnelHeader::parse(&CONTROL_NONE),
            Ok(TunnelHeader::control(None))
        );
        let frame = TunnelFrame::new_checked(&DATA_M258[..]).unwrap();
        assert_eq!(frame.version(), 2);
        assert_eq!(frame.kind(), Ok(FrameKind::Data));
        assert_eq!(frame.flags(), 0xc0);
        assert!(frame.encrypted());
        assert_eq!(frame.member_id(), Some(MemberId(258)));
        assert_eq!(frame.session(), 0x0a0b_0c0d);
        assert_eq!(frame.counter(), 0x0102_0304_0506_0708);
        assert_eq!(frame.header_bytes(), &DATA_M258[..16]);
        assert_eq!(frame.payload(), &[0xab, 0xcd]);
    }

    #[test]
    fn emit_fixtures() {
        assert_eq!(sealed_data().to_bytes(), DATA_M258[..16]);
        assert_eq!(TunnelHeader::control(None).to_bytes(), CONTROL_NONE);
        assert_eq!(
            TunnelHeader::data(Some(MemberId(7))).to_bytes(),
            [0x20, 0x80, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let mut buf = [0xffu8; 18];
        TunnelHeader::control(None).emit(&mut buf).unwrap();
        assert_eq!(buf[..16], CONTROL_NONE);
        assert_eq!(buf[16..], [0xff, 0xff]);
        assert_eq!(
            TunnelHeader::control(None).emit(&mut [0u8; 15]),
            Err(WireError::BufferTooSmall { need: 16, have: 15 })
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            TunnelHeader::parse(&[]),
            Err(WireError::Truncated("tunnel header"))
        );
        assert_eq!(
            TunnelHeader::parse(&CONTROL_NONE[..15]),
            Err(WireError::Truncated("tunnel header"))
        );
        // A v1 frame (4-byte header), whatever its length.
        assert_eq!(
            TunnelHeader::parse(&[0x10, 0x80, 0, 1]),
            Err(WireError::UnsupportedVersion(1))
        );
        let mut v1 = [0u8; 60];
        v1[0] = 0x10;
        assert_eq!(
            TunnelHeader::parse(&v1),
            Err(WireError::UnsupportedVersion(1))
        );
        let mut bad_kind = CONTROL_NONE;
        bad_kind[0] = 0x22;
        assert_eq!(
            TunnelHeader::parse(&bad_kind),
            Err(WireError::UnknownFrameKind(2))
        );
    }

    #[test]
    fn member_id_ignored_without_flag_and_other_flags_ignored() {
        let mut b = CONTROL_NONE;
        b[0] = 0x20;
        b[1] = 0x3f;
        b[2] = 0x12;
        b[3] = 0x34;
        assert_eq!(TunnelHeader::parse(&b), Ok(TunnelHeader::data(None)));
    }

    #[test]
    fn in_place_rewrite() {
        let mut buf = DATA_M258;
        let mut frame = TunnelFrame::new_checked(&mut buf[..]).unwrap();
        frame.set_member_id(None);
        assert_eq!(frame.member_id(), None);
        assert!(frame.encrypted(), "other flags kept");
        frame.set_member_id(Some(MemberId(7)));
        frame.set_encrypted(false);
        frame.set_session(5);
        frame.set_counter(9);
        assert_eq!(
            frame.header(),
            Ok(TunnelHeader {
                session: 5,
                counter: 9,
                ..TunnelHeader::data(Some(MemberId(7)))
            })
        );
        frame.payload_mut()[0] = 0x11;
        frame.set_header(&TunnelHeader::control(Some(MemberId(9))));
        assert_eq!(buf[..4], [0x21, 0x80, 0, 9]);
        assert_eq!(buf[4..16], [0; 12]);
        assert_eq!(buf[16..], [0x11, 0xcd]);
    }

    fn header() -> impl Strategy<Value = TunnelHeader> {
        (
            prop_oneof![Just(FrameKind::Data), Just(FrameKind::Control)],
            proptest::option::of(any::<u16>().prop_map(MemberId)),
            any::<bool>(),
            any::<u32>(),
            any::<u64>(),
        )
            .prop_map(|(kind, member, encrypted, session, counter)| TunnelHeader {
                kind,
                member,
                encrypted,
                session,
                counter,
            })
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(frame) = TunnelFrame::new_checked(&b[..]) {
                let h = frame.header().unwrap();
                let _ = (frame.flags(), frame.payload(), frame.header_bytes());
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
