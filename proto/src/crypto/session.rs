//! Sealed sessions: the AEAD that authenticates (and by default encrypts)
//! every tunnel frame after a handshake, its key schedule, and the replay
//! window (docs/PROTOCOL.md section 1.1, 1.2).
//!
//! A [`Session`] holds one key per direction, the index the peer chose for
//! it (written into every frame we send) and the index we chose (the peer
//! writes it; the engine finds the session by it). Frames are sealed and
//! opened in place: `frame = header(16) | payload | tag(16)`.
//!
//! AES-256-GCM from `ring`; nonce = 4 zero bytes | the frame's 64-bit
//! counter. With [`Protection::Encrypt`] the header is the AAD and the
//! payload is encrypted; with [`Protection::Integrity`] the header and the
//! payload together are the AAD and nothing is encrypted (GMAC). The `E`
//! flag says which, and is itself authenticated.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::hkdf;

use crate::wire::frame::field;
/// The v2 frame header the session seals under, the tag at the end of a
/// sealed frame, and flag `E` (the payload is encrypted): wire::frame's.
pub use crate::wire::frame::{FLAG_ENCRYPTED, FRAME_HEADER_LEN as HEADER_LEN, TAG_LEN};
/// Counters at or above this are never sent: the session must be replaced.
pub const COUNTER_LIMIT: u64 = 1 << 60;
/// Number of counters the replay window remembers below the highest one.
pub const REPLAY_WINDOW: u64 = 2048;

/// How frames are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protection {
    /// Authenticated and encrypted (the default).
    #[default]
    Encrypt,
    /// Authenticated only: the payload crosses the network in the clear
    /// (trusted networks; cheaper).
    Integrity,
}

impl Protection {
    /// The configuration name: `encrypt` or `integrity`.
    pub fn name(self) -> &'static str {
        match self {
            Protection::Encrypt => "encrypt",
            Protection::Integrity => "integrity",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Option<Protection> {
        match name {
            "encrypt" => Some(Protection::Encrypt),
            "integrity" => Some(Protection::Integrity),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Protection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protection::from_name(s).ok_or_else(|| {
            format!("unknown protection {s:?}: use \"encrypt\" (default) or \"integrity\"")
        })
    }
}

/// Why a frame could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The frame is shorter than header + tag.
    #[error("frame too short to be sealed")]
    Truncated,
    /// The counter is below the window or was seen already.
    #[error("replayed or too old counter")]
    Replay,
    /// The tag did not verify.
    #[error("authentication failed")]
    AuthFailed,
    /// The frame is not encrypted but this receiver requires encryption.
    #[error("unencrypted frame refused (protection is encrypt)")]
    NotEncrypted,
    /// The session has sent [`COUNTER_LIMIT`] frames.
    #[error("session exhausted: handshake again")]
    Exhausted,
}

/// Which side of the handshake we were: decides which half of the key
/// material is our sending key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We sent the first message (member to AP, shim to AP, member to shim).
    Initiator,
    /// We answered it.
    Responder,
}

/// 64 bytes of key material: initiator -> responder key, then responder ->
/// initiator key.
#[derive(Clone)]
pub struct KeyMaterial([u8; 64]);

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial(..)")
    }
}

struct Len64;
impl hkdf::KeyType for Len64 {
    fn len(&self) -> usize {
        64
    }
}

impl KeyMaterial {
    /// HKDF-SHA256 (RFC 5869): Expand(Extract(salt, ikm), info, 64). `info`
    /// is given in parts and hashed as their concatenation.
    pub fn derive(ikm: &[u8], salt: &[u8], info: &[&[u8]]) -> KeyMaterial {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
        let mut out = [0u8; 64];
        // 64 bytes is far below HKDF-SHA256's limit of 255 * 32: cannot fail.
        prk.expand(info, Len64)
            .and_then(|okm| okm.fill(&mut out))
            .expect("HKDF output of 64 bytes");
        KeyMaterial(out)
    }

    /// From raw bytes (tests).
    pub fn from_bytes(bytes: [u8; 64]) -> KeyMaterial {
        KeyMaterial(bytes)
    }
}

/// Key material of a member - AP session (docs/PROTOCOL.md 1.2; the member
/// is the initiator): ikm = the registration key, salt = Nm | Na.
pub fn member_ap_keys(
    key: &[u8],
    member_nonce: &[u8; 16],
    ap_nonce: &[u8; 16],
    member: u16,
    instance: u64,
    member_index: u32,
    ap_index: u32,
) -> KeyMaterial {
    KeyMaterial::derive(
        key,
        &[&member_nonce[..], &ap_nonce[..]].concat(),
        &[
            b"homeaddr v2 member-ap",
            &member.to_be_bytes(),
            &instance.to_be_bytes(),
            &member_index.to_be_bytes(),
            &ap_index.to_be_bytes(),
        ],
    )
}

/// Key material of a shim - AP session (the shim is the initiator): ikm =
/// the X25519 shared secret, salt = Ns | Na.
#[allow(clippy::too_many_arguments)]
pub fn shim_ap_keys(
    shared: &[u8; 32],
    shim_nonce: &[u8; 16],
    ap_nonce: &[u8; 16],
    client: std::net::Ipv6Addr,
    shim_index: u32,
    ap_index: u32,
    shim_public: &[u8; 32],
    ap_public: &[u8; 32],
) -> KeyMaterial {
    KeyMaterial::derive(
        shared,
        &[&shim_nonce[..], &ap_nonce[..]].concat(),
        &[
            b"homeaddr v2 shim-ap",
            &client.octets(),
            &shim_index.to_be_bytes(),
            &ap_index.to_be_bytes(),
            shim_public,
            ap_public,
        ],
    )
}

/// Key material of a member - shim session (the member is the initiator):
/// ikm = Kbm, salt = Nm | Ns.
pub fn member_shim_keys(
    kbm: &[u8; 32],
    member_nonce: &[u8; 16],
    shim_nonce: &[u8; 16],
    member: u16,
    member_index: u32,
    shim_index: u32,
) -> KeyMaterial {
    KeyMaterial::derive(
        kbm,
        &[&member_nonce[..], &shim_nonce[..]].concat(),
        &[
            b"homeaddr v2 member-shim",
            &member.to_be_bytes(),
            &member_index.to_be_bytes(),
            &shim_index.to_be_bytes(),
        ],
    )
}

fn aead_key(bytes: &[u8]) -> LessSafeKey {
    // A 32-byte slice is always a valid AES-256 key.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES-256 key"))
}

/// The anti-replay window of one receive direction (RFC 6479: a bitmap of
/// [`REPLAY_WINDOW`] counters below the highest one accepted).
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest counter accepted + 1 (0: nothing accepted yet).
    next: u64,
    bits: [u64; WORDS],
}

const WORDS: usize = (REPLAY_WINDOW / 64) as usize + 1;

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            next: 0,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Could `counter` be fresh? (No state change; call before the AEAD.)
    pub fn check(&self, counter: u64) -> bool {
        if counter >= COUNTER_LIMIT {
            return false;
        }
        if counter >= self.next {
            return true;
        }
        if self.next - counter > REPLAY_WINDOW {
            return false;
        }
        let word = (counter / 64) as usize % WORDS;
        self.bits[word] & (1 << (counter % 64)) == 0
    }

    /// Records `counter` as seen; false if it was not fresh. Call only
    /// after the frame authenticated.
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            let cur = self.next.saturating_sub(1) / 64;
            let top = counter / 64;
            // Clear the words the window slides over (at most all of them).
            let steps = (top.saturating_sub(cur)).min(WORDS as u64);
            for i in 1..=steps {
                self.bits[((cur + i) % WORDS as u64) as usize] = 0;
            }
            if self.next == 0 {
                self.bits[(top % WORDS as u64) as usize] = 0;
            }
            self.next = counter + 1;
        }
        let word = (counter / 64) as usize % WORDS;
        self.bits[word] |= 1 << (counter % 64);
        true
    }

    /// The highest counter accepted, if any.
    pub fn highest(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }
}

/// One established session: keys, indices, send counter, replay window.
pub struct Session {
    /// The index we chose: peers put it in the Session field of frames to us.
    pub local_index: u32,
    /// The index the peer chose: we put it in frames we send.
    pub remote_index: u32,
    send: LessSafeKey,
    recv: LessSafeKey,
    next_counter: u64,
    window: ReplayWindow,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("sent", &self.next_counter)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session from derived key material.
    pub fn new(keys: &KeyMaterial, role: Role, local_index: u32, remote_index: u32) -> Session {
        let (i2r, r2i) = keys.0.split_at(32);
        let (send, recv) = match role {
            Role::Initiator => (i2r, r2i),
            Role::Responder => (r2i, i2r),
        };
        Session {
            local_index,
            remote_index,
            send: aead_key(send),
            recv: aead_key(recv),
            next_counter: 0,
            window: ReplayWindow::default(),
        }
    }

    /// Frames sent so far.
    pub fn sent(&self) -> u64 {
        self.next_counter
    }

    /// Seals `frame` = header | payload | tag in place. The caller has
    /// written header bytes 0..4 (version, kind, flags, member id); this
    /// writes the Session field (the peer's index), the Counter, the `E`
    /// flag and the tag, and encrypts the payload under
    /// [`Protection::Encrypt`].
    pub fn seal(&mut self, protection: Protection, frame: &mut [u8]) -> Result<(), SessionError> {
        if frame.len() < HEADER_LEN + TAG_LEN {
            return Err(SessionError::Truncated);
        }
        if self.next_counter >= COUNTER_LIMIT {
            return Err(SessionError::Exhausted);
        }
        let counter = self.next_counter;
        self.next_counter += 1;
        frame[field::SESSION].copy_from_slice(&self.remote_index.to_be_bytes());
        frame[field::COUNTER].copy_from_slice(&counter.to_be_bytes());
        let tag_at = frame.len() - TAG_LEN;
        let nonce = nonce(counter);
        let tag = match protection {
            Protection::Encrypt => {
                frame[field::FLAGS] |= FLAG_ENCRYPTED;
                let (header, rest) = frame.split_at_mut(HEADER_LEN);
                let payload = &mut rest[..tag_at - HEADER_LEN];
                self.send
                    .seal_in_place_separate_tag(nonce, Aad::from(&*header), payload)
            }
            Protection::Integrity => {
                frame[field::FLAGS] &= !FLAG_ENCRYPTED;
                self.send
                    .seal_in_place_separate_tag(nonce, Aad::from(&frame[..tag_at]), &mut [])
            }
        }
        // AES-GCM sealing fails only for inputs over 2^36 bytes.
        .map_err(|_| SessionError::Truncated)?;
        frame[tag_at..].copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens `frame` = header | payload | tag in place (decrypting the
    /// payload if `E` is set) and records its counter. `require_encrypted`:
    /// refuse frames without `E` (this receiver's protection is encrypt).
    /// On success the inner payload is `frame[HEADER_LEN..len - TAG_LEN]`.
    pub fn open(&mut self, require_encrypted: bool, frame: &mut [u8]) -> Result<(), SessionError> {
        self.open_newest(require_encrypted, frame).map(|_| ())
    }

    /// [`Session::open`], also saying whether the frame's counter is above
    /// every counter accepted before in this session (what may move a
    /// peer's endpoint: roaming, docs/PROTOCOL.md 4.6).
    pub fn open_newest(
        &mut self,
        require_encrypted: bool,
        frame: &mut [u8],
    ) -> Result<bool, SessionError> {
        if frame.len() < HEADER_LEN + TAG_LEN {
            return Err(SessionError::Truncated);
        }
        let encrypted = frame[field::FLAGS] & FLAG_ENCRYPTED != 0;
        if require_encrypted && !encrypted {
            return Err(SessionError::NotEncrypted);
        }
        let counter = counter_of(frame);
        if !self.window.check(counter) {
            return Err(SessionError::Replay);
        }
        let nonce = nonce(counter);
        let tag_at = frame.len() - TAG_LEN;
        let ok = if encrypted {
            let (header, rest) = frame.split_at_mut(HEADER_LEN);
            let (payload, tag) = rest.split_at_mut(tag_at - HEADER_LEN);
            let tag = Tag::try_from(&*tag).map_err(|_| SessionError::Truncated)?;
            self.recv
                .open_in_place_separate_tag(nonce, Aad::from(&*header), tag, payload, 0..)
                .is_ok()
        } else {
            let (aad, tag) = frame.split_at_mut(tag_at);
            let tag = Tag::try_from(&*tag).map_err(|_| SessionError::Truncated)?;
            self.recv
                .open_in_place_separate_tag(nonce, Aad::from(&*aad), tag, &mut [], 0..)
                .is_ok()
        };
        if !ok {
            return Err(SessionError::AuthFailed);
        }
        let newest = self.window.highest().is_none_or(|h| counter > h);
        self.window.update(counter);
        Ok(newest)
    }
}

/// The Session field (receiver index) of a v2 frame, if it is long enough.
pub fn session_index_of(frame: &[u8]) -> Option<u32> {
    frame
        .get(field::SESSION)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
}

fn counter_of(frame: &[u8]) -> u64 {
    u64::from_be_bytes(frame[field::COUNTER].try_into().expect("8 bytes"))
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        let km = KeyMaterial::derive(b"ikm", b"salt", &[b"homeaddr v2 test", &[1, 2]]);
        (
            Session::new(&km, Role::Initiator, 11, 22),
            Session::new(&km, Role::Responder, 22, 11),
        )
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x20, 0x80, 0, 7];
        f.resize(HEADER_LEN, 0);
        f.extend_from_slice(payload);
        f.resize(f.len() + TAG_LEN, 0);
        f
    }

    #[test]
    fn hkdf_matches_rfc5869_case_1() {
        // RFC 5869 A.1 (L = 42; our output is the first 42 of 64 bytes,
        // since HKDF-Expand output is a prefix-stable stream).
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let km = KeyMaterial::derive(&ikm, &salt, &[&info[..4], &info[4..]]);
        let hex: String = km.0[..42].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn encrypt_round_trip_hides_the_payload() {
        let (mut a, mut b) = pair();
        let mut f = frame(b"hello inner packet");
        a.seal(Protection::Encrypt, &mut f).unwrap();
        assert_eq!(session_index_of(&f), Some(22));
        assert_ne!(f[1] & FLAG_ENCRYPTED, 0);
        assert!(!f.windows(5).any(|w| w == b"hello"));
        b.open(true, &mut f).unwrap();
        assert_eq!(&f[HEADER_LEN..f.len() - TAG_LEN], b"hello inner packet");
    }

    #[test]
    fn integrity_leaves_the_payload_clear_but_authenticated() {
        let (mut a, mut b) = pair();
        let mut f = frame(b"clear text");
        a.seal(Protection::Integrity, &mut f).unwrap();
        assert_eq!(f[1] & FLAG_ENCRYPTED, 0);
        assert_eq!(&f[HEADER_LEN..f.len() - TAG_LEN], b"clear text");
        // An encrypt-only receiver refuses it; an integrity one accepts it.
        assert_eq!(
            b.open(true, &mut f.clone()),
            Err(SessionError::NotEncrypted)
        );
        let mut forged = f.clone();
        forged[HEADER_LEN] ^= 1;
        assert_eq!(b.open(false, &mut forged), Err(SessionError::AuthFailed));
        b.open(false, &mut f).unwrap();
    }

    #[test]
    fn every_byte_is_authenticated() {
        let (mut a, _) = pair();
        let mut f = frame(b"0123456789");
        a.seal(Protection::Encrypt, &mut f).unwrap();
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x01;
            let mut b = Session::new(
                &KeyMaterial::derive(b"ikm", b"salt", &[b"homeaddr v2 test", &[1, 2]]),
                Role::Responder,
                22,
                11,
            );
            // Flipping the counter may make it "fresh" but the tag fails;
            // flipping E turns it into an integrity frame whose tag fails.
            assert!(b.open(false, &mut g).is_err(), "byte {i} not covered");
        }
    }

    #[test]
    fn replays_are_refused_and_reordering_is_fine() {
        let (mut a, mut b) = pair();
        let frames: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                let mut f = frame(&[i; 20]);
                a.seal(Protection::Encrypt, &mut f).unwrap();
                f
            })
            .collect();
        for i in [3usize, 0, 4, 1, 2] {
            b.open(true, &mut frames[i].clone()).unwrap();
        }
        for f in &frames {
            assert_eq!(b.open(true, &mut f.clone()), Err(SessionError::Replay));
        }
        // A forged frame with a fresh counter does not advance the window.
        let mut forged = frames[0].clone();
        forged[field::COUNTER].copy_from_slice(&100u64.to_be_bytes());
        assert_eq!(b.open(true, &mut forged), Err(SessionError::AuthFailed));
        assert_eq!(b.window.highest(), Some(4));
    }

    #[test]
    fn wrong_direction_or_session_fails() {
        let (mut a, _) = pair();
        let (_, mut other) = {
            let km = KeyMaterial::derive(b"ikm2", b"salt", &[b"x"]);
            (
                Session::new(&km, Role::Initiator, 1, 2),
                Session::new(&km, Role::Responder, 2, 1),
            )
        };
        let mut f = frame(b"x");
        a.seal(Protection::Encrypt, &mut f).unwrap();
        assert_eq!(
            other.open(true, &mut f.clone()),
            Err(SessionError::AuthFailed)
        );
        // The initiator cannot open its own frames (separate keys).
        assert_eq!(a.open(true, &mut f), Err(SessionError::AuthFailed));
        assert_eq!(
            a.seal(Protection::Encrypt, &mut [0u8; 31]),
            Err(SessionError::Truncated)
        );
    }

    #[test]
    fn window_slides_and_forgets_old_counters() {
        let mut w = ReplayWindow::default();
        assert!(w.update(0));
        assert!(!w.update(0));
        assert!(w.update(REPLAY_WINDOW + 10));
        assert!(!w.check(5), "far below the window");
        assert!(w.check(REPLAY_WINDOW + 9));
        assert!(w.update(REPLAY_WINDOW + 9));
        assert!(!w.update(REPLAY_WINDOW + 9));
        // A jump of many words clears the bitmap: old-but-in-window
        // counters are fresh again only if never seen.
        assert!(w.update(10 * REPLAY_WINDOW));
        assert!(w.check(10 * REPLAY_WINDOW - 1));
        assert!(!w.check(10 * REPLAY_WINDOW));
        assert!(!w.check(9 * REPLAY_WINDOW), "just below the window");
        for c in (9 * REPLAY_WINDOW + 1)..(10 * REPLAY_WINDOW) {
            assert!(w.update(c), "{c}");
        }
        for c in (9 * REPLAY_WINDOW + 1)..=(10 * REPLAY_WINDOW) {
            assert!(!w.check(c), "{c} seen");
        }
        assert!(!w.check(COUNTER_LIMIT));
    }

    #[test]
    fn the_three_schedules_differ_and_both_ends_agree() {
        let n1 = [1u8; 16];
        let n2 = [2u8; 16];
        let a = member_ap_keys(b"k", &n1, &n2, 1, 7, 10, 20);
        assert_eq!(a.0, member_ap_keys(b"k", &n1, &n2, 1, 7, 10, 20).0);
        assert_ne!(a.0, member_ap_keys(b"k", &n1, &n2, 2, 7, 10, 20).0);
        assert_ne!(a.0, member_ap_keys(b"k", &n2, &n1, 1, 7, 10, 20).0);
        let s = shim_ap_keys(
            &[3; 32],
            &n1,
            &n2,
            "fd00::1".parse().unwrap(),
            10,
            20,
            &[4; 32],
            &[5; 32],
        );
        let m = member_shim_keys(&[3; 32], &n1, &n2, 1, 10, 20);
        assert_ne!(s.0, m.0);
        let mut i = Session::new(&m, Role::Initiator, 10, 20);
        let mut r = Session::new(
            &member_shim_keys(&[3; 32], &n1, &n2, 1, 10, 20),
            Role::Responder,
            20,
            10,
        );
        let mut f = frame(b"agree");
        i.seal(Protection::Encrypt, &mut f).unwrap();
        r.open(true, &mut f).unwrap();
    }

    #[test]
    fn protection_names_parse() {
        assert_eq!("encrypt".parse::<Protection>(), Ok(Protection::Encrypt));
        assert_eq!("integrity".parse::<Protection>(), Ok(Protection::Integrity));
        assert!(
            "none"
                .parse::<Protection>()
                .unwrap_err()
                .contains("integrity")
        );
    }
}
