//! What every engine needs to use sealed sessions (docs/PROTOCOL.md
//! section 1.1): a peer's current and previous session, sealed control
//! frames, and the drop reason for a frame that does not open.

use std::time::{Duration, Instant};

use crate::crypto::session::{HEADER_LEN, TAG_LEN};
use crate::crypto::{Protection, Session, SessionError};
use crate::wire::{MemberId, MobilityMessage, TunnelHeader};

use super::DropReason;

/// How long a replaced session still opens frames (in flight or sent by a
/// peer that has not switched yet).
pub const SESSION_GRACE: Duration = Duration::from_secs(10);

/// The sessions of one peer: the current one (used to send) and the one it
/// replaced, which still opens frames until its grace period ends.
#[derive(Debug)]
pub struct PeerSessions {
    current: Session,
    /// Boxed: present only during a grace period, and a session is 1.4 KB.
    previous: Option<Box<(Session, Instant)>>,
}

impl PeerSessions {
    /// A peer with one session.
    pub fn new(session: Session) -> PeerSessions {
        PeerSessions {
            current: session,
            previous: None,
        }
    }

    /// Makes `session` current; the old one opens frames until `now +
    /// SESSION_GRACE`. Returns the local index of a session that is now
    /// gone for good (the engine removes it from its index map).
    pub fn replace(&mut self, session: Session, now: Instant) -> Option<u32> {
        let old = std::mem::replace(&mut self.current, session);
        self.previous
            .replace(Box::new((old, now + SESSION_GRACE)))
            .map(|p| p.0.local_index)
    }

    /// The session used to send.
    pub fn current(&self) -> &Session {
        &self.current
    }

    /// Our receive indices of this peer (current, then previous).
    pub fn local_indices(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.current.local_index)
            .chain(self.previous.as_ref().map(|p| p.0.local_index))
    }

    /// Forgets the previous session if its grace is over; returns its
    /// local index then.
    pub fn expire(&mut self, now: Instant) -> Option<u32> {
        if self.previous.as_ref().is_some_and(|p| now >= p.1) {
            return self.previous.take().map(|p| p.0.local_index);
        }
        None
    }

    /// Seals `frame` (header | payload | tag) with the current session.
    pub fn seal(&mut self, protection: Protection, frame: &mut [u8]) -> Result<(), SessionError> {
        self.current.seal(protection, frame)
    }

    /// Opens a frame addressed to our receive index `index` with the
    /// session it names (current, or previous within its grace).
    pub fn open(
        &mut self,
        now: Instant,
        index: u32,
        protection: Protection,
        frame: &mut [u8],
    ) -> Result<(), SessionError> {
        self.open_newest(now, index, protection, frame).map(|_| ())
    }

    /// [`PeerSessions::open`], also saying whether the frame opened in the
    /// current session with a counter above every one accepted before in
    /// it: only such a frame may move the peer's endpoint (roaming,
    /// docs/PROTOCOL.md 4.6). A frame of the previous session never does.
    pub fn open_newest(
        &mut self,
        now: Instant,
        index: u32,
        protection: Protection,
        frame: &mut [u8],
    ) -> Result<bool, SessionError> {
        let require = protection == Protection::Encrypt;
        let previous = match self.previous.as_deref_mut() {
            Some((s, until)) if s.local_index == index && now < *until => Some(s),
            _ => None,
        };
        if self.current.local_index != index {
            return previous.map_or(Err(SessionError::AuthFailed), |s| {
                s.open(require, frame).map(|()| false)
            });
        }
        let Some(previous) = previous else {
            return self.current.open_newest(require, frame);
        };
        // Both sessions have this index (a peer that keeps its index across
        // a re-key, as a member does with the AP): a failed open leaves the
        // buffer unspecified, so the newer one is tried on a copy. Only
        // during the grace period.
        let copy = frame.to_vec();
        match self.current.open_newest(require, frame) {
            Err(e @ (SessionError::AuthFailed | SessionError::Replay)) => {
                frame.copy_from_slice(&copy);
                // Neither opens it: say what the current session said.
                previous.open(require, frame).map(|()| false).map_err(|_| e)
            }
            other => other,
        }
    }
}

/// The payload of a frame (header | payload | tag): after opening, the
/// plaintext inner packet or message. Empty if the frame is too short.
pub fn payload(frame: &[u8]) -> &[u8] {
    let len = frame.len();
    &frame[HEADER_LEN.min(len)..len.saturating_sub(TAG_LEN).max(HEADER_LEN.min(len))]
}

/// [`payload`], to edit in place.
pub fn payload_mut(frame: &mut [u8]) -> &mut [u8] {
    let len = frame.len();
    &mut frame[HEADER_LEN.min(len)..len.saturating_sub(TAG_LEN).max(HEADER_LEN.min(len))]
}

/// The drop reason for a frame that did not open.
pub fn open_drop_reason(e: SessionError) -> DropReason {
    match e {
        SessionError::Replay => DropReason::Replay,
        SessionError::Truncated => DropReason::Malformed,
        _ => DropReason::AuthFailed,
    }
}

/// A sealed control frame: header | Mobility Header message | tag.
pub fn sealed_control(
    sessions: &mut PeerSessions,
    protection: Protection,
    member: Option<MemberId>,
    msg: &MobilityMessage,
) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; HEADER_LEN + msg.buffer_len() + TAG_LEN];
    buf[..HEADER_LEN].copy_from_slice(&TunnelHeader::control(member).to_bytes());
    // Sized by buffer_len(): emit cannot fail.
    let _ = msg.emit(&mut buf[HEADER_LEN..HEADER_LEN + msg.buffer_len()]);
    sessions.seal(protection, &mut buf).ok()?;
    Some(buf)
}

/// Writes the first header bytes of a data frame into `frame` and seals it.
pub fn seal_data(
    sessions: &mut PeerSessions,
    protection: Protection,
    member: Option<MemberId>,
    frame: &mut [u8],
) -> Result<(), SessionError> {
    if frame.len() < HEADER_LEN + TAG_LEN {
        return Err(SessionError::Truncated);
    }
    // Session and counter zero: the session writes them.
    frame[..HEADER_LEN].copy_from_slice(&TunnelHeader::data(member).to_bytes());
    sessions.seal(protection, frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{KeyMaterial, Role};
    use crate::wire::MessageBody;

    fn pair(seed: u8, a: u32, b: u32) -> (Session, Session) {
        let km = KeyMaterial::derive(&[seed; 32], b"salt", &[b"test"]);
        (
            Session::new(&km, Role::Initiator, a, b),
            Session::new(&km, Role::Responder, b, a),
        )
    }

    #[test]
    fn previous_session_opens_only_during_its_grace() {
        let t0 = Instant::now();
        let (a1, b1) = pair(1, 10, 20);
        let (a2, b2) = pair(2, 11, 21);
        let mut alice = PeerSessions::new(a1);
        let mut bob = PeerSessions::new(b1);
        let mut old = vec![0u8; 64];
        seal_data(&mut alice, Protection::Encrypt, None, &mut old).unwrap();
        assert_eq!(alice.replace(a2, t0), None);
        assert_eq!(bob.replace(b2, t0), None);
        assert_eq!(bob.local_indices().collect::<Vec<_>>(), vec![21, 20]);
        let mut new = vec![0u8; 64];
        seal_data(&mut alice, Protection::Encrypt, None, &mut new).unwrap();
        assert_eq!(&new[4..8], &21u32.to_be_bytes(), "sent on the new session");
        bob.open(t0, 21, Protection::Encrypt, &mut new).unwrap();
        let mut late = old.clone();
        bob.open(t0 + SESSION_GRACE / 2, 20, Protection::Encrypt, &mut old)
            .unwrap();
        assert_eq!(
            bob.open(t0 + SESSION_GRACE, 20, Protection::Encrypt, &mut late),
            Err(SessionError::AuthFailed),
            "grace over: the old index opens nothing"
        );
        assert_eq!(bob.expire(t0 + SESSION_GRACE), Some(20));
        assert_eq!(bob.local_indices().collect::<Vec<_>>(), vec![21]);
    }

    #[test]
    fn a_re_key_that_keeps_the_index_still_opens_old_frames_in_grace() {
        let t0 = Instant::now();
        let (a1, b1) = pair(1, 10, 20);
        let (a2, b2) = pair(2, 10, 20);
        let mut alice = PeerSessions::new(a1);
        let mut bob = PeerSessions::new(b1);
        let mut old = vec![0u8; 64];
        seal_data(&mut alice, Protection::Encrypt, None, &mut old).unwrap();
        alice.replace(a2, t0);
        bob.replace(b2, t0);
        let mut new = vec![0u8; 64];
        seal_data(&mut alice, Protection::Encrypt, None, &mut new).unwrap();
        bob.open(t0, 20, Protection::Encrypt, &mut new).unwrap();
        let mut late = old.clone();
        bob.open(t0, 20, Protection::Encrypt, &mut old).unwrap();
        assert_eq!(&old[HEADER_LEN..old.len() - TAG_LEN], &[0u8; 32][..]);
        assert_eq!(
            bob.open(t0 + SESSION_GRACE, 20, Protection::Encrypt, &mut late),
            Err(SessionError::Replay),
            "grace over: only the current session, which saw counter 0"
        );
    }

    #[test]
    fn sealed_control_round_trips() {
        let (a, b) = pair(3, 1, 2);
        let mut alice = PeerSessions::new(a);
        let mut bob = PeerSessions::new(b);
        let msg = MobilityMessage::new(MessageBody::BindingRefreshRequest);
        let mut f =
            sealed_control(&mut alice, Protection::Integrity, Some(MemberId(4)), &msg).unwrap();
        assert_eq!(f[0] >> 4, crate::wire::TUNNEL_VERSION);
        assert_eq!(f[0] & 0xf, 1);
        let idx = u32::from_be_bytes(f[4..8].try_into().unwrap());
        assert_eq!(
            bob.open(Instant::now(), idx, Protection::Encrypt, &mut f.clone()),
            Err(SessionError::NotEncrypted)
        );
        bob.open(Instant::now(), idx, Protection::Integrity, &mut f)
            .unwrap();
        let body = &f[HEADER_LEN..f.len() - TAG_LEN];
        assert_eq!(MobilityMessage::parse(body).unwrap(), msg);
        assert_eq!(open_drop_reason(SessionError::Replay), DropReason::Replay);
    }
}
