//! Cryptographic helpers: return-routability keygen tokens and Kbm
//! (RFC 6275 sec. 5.2.5, with HMAC-SHA256 where the RFC has HMAC-SHA1),
//! the Binding Authorization Data authenticator (sec. 6.2.7), the member <->
//! access point message authenticator (in the spirit of RFC 4285), and a
//! small deterministic random bit generator so engines never read the OS.
//!
//! Everything here is a pure function of its inputs.

use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::wire::{ENDPOINT_LEN, MemberId, emit_endpoint};

pub mod cookie;
pub mod session;

pub use cookie::{COOKIE_EPOCH, COOKIE_LEN, Cookie, CookieJar, CookieKind, DhKeyPair};
pub use session::{
    KeyMaterial, Protection, ReplayWindow, Role, Session, SessionError, member_ap_keys,
    member_shim_keys, shim_ap_keys,
};

type HmacSha256 = Hmac<Sha256>;

/// Length of a keygen token and of a cookie (64 bits, RFC 6275 sec. 5.2.5).
pub const TOKEN_LEN: usize = 8;
/// Length of the Binding Authorization Data authenticator (96 bits).
pub const BINDING_AUTH_LEN: usize = 12;
/// Length of the member <-> AP authentication data (128 bits).
pub const REGISTRATION_AUTH_LEN: usize = 16;

/// A keygen token or nonce or cookie: 64 bits.
pub type Token = [u8; TOKEN_LEN];
/// The binding management key Kbm.
pub type Kbm = [u8; 32];

pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for HMAC.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn first<const N: usize>(digest: &[u8; 32]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&digest[..N]);
    out
}

/// Home keygen token = First(64, HMAC_SHA256(Kcn, HoA | BID | nonce | 0)).
///
/// RFC 6275 sec. 5.2.5 hashes the home address only; homeaddr adds the
/// member's Binding ID because many members share one HoA (deviation D6).
pub fn home_keygen_token(kcn: &[u8; 32], hoa: Ipv6Addr, member: MemberId, nonce: &Token) -> Token {
    first(&hmac(
        kcn,
        &[&hoa.octets(), &member.0.to_be_bytes(), nonce, &[0]],
    ))
}

/// Care-of keygen token = First(64, HMAC_SHA256(Kcn, CoA endpoint | nonce | 1)).
///
/// The care-of "address" is the UDP endpoint (address and port) the CoTI
/// came from, encoded as 18 bytes (deviation D6).
pub fn care_of_keygen_token(kcn: &[u8; 32], care_of: SocketAddr, nonce: &Token) -> Token {
    first(&hmac(kcn, &[&emit_endpoint(care_of), nonce, &[1]]))
}

/// Length of a care-of ticket (docs/PROTOCOL.md: option 205).
pub const TICKET_LEN: usize = 8;

/// Care-of ticket = First(64, HMAC_SHA256(Kcn, HoA | BID | home nonce | 2)).
///
/// The shim puts it in the HoT (which reaches the member sealed, through
/// the AP); the member must show it in its CoTI, so the shim answers care-of
/// tests only from members it has home-tested: a port scan gets nothing.
pub fn care_of_ticket(kcn: &[u8; 32], hoa: Ipv6Addr, member: MemberId, nonce: &Token) -> Token {
    first(&hmac(
        kcn,
        &[&hoa.octets(), &member.0.to_be_bytes(), nonce, &[2]],
    ))
}

/// Kbm = SHA256(home keygen token | care-of keygen token) (RFC 6275 sec. 5.2.5).
pub fn kbm(home_token: &Token, care_of_token: &Token) -> Kbm {
    let mut h = Sha256::new();
    h.update(home_token);
    h.update(care_of_token);
    h.finalize().into()
}

fn without<'a>(message: &'a [u8], auth: &Range<usize>) -> [&'a [u8]; 2] {
    [&message[..auth.start], &message[auth.end..]]
}

/// Binding Authorization Data authenticator: First(96, HMAC_SHA256(Kbm,
/// MH data)), where MH data is the Mobility Header without the authenticator
/// field (`auth` is its range). RFC 6275 sec. 6.2.7 also covers the care-of
/// and correspondent addresses; we leave the endpoints out so that a member
/// behind a NAPT, which knows neither its mapped endpoint nor the one the shim
/// is seen at, can sign: the care-of keygen token inside Kbm already binds the
/// care-of endpoint the shim saw, and Kbm is the shim's own
/// (docs/PROTOCOL.md section 5.5).
pub fn binding_authenticator(
    kbm: &Kbm,
    message: &[u8],
    auth: Range<usize>,
) -> [u8; BINDING_AUTH_LEN] {
    let [a, b] = without(message, &auth);
    first(&hmac(kbm, &[a, b]))
}

/// Member <-> AP authenticator (RFC 4285 sec. 5.1 with HMAC-SHA256):
/// First(128, HMAC_SHA256(key, HoA | MH data)), where MH data is the
/// Mobility Header without the authentication data field (`auth`).
pub fn registration_authenticator(
    key: &[u8],
    hoa: Ipv6Addr,
    message: &[u8],
    auth: Range<usize>,
) -> [u8; REGISTRATION_AUTH_LEN] {
    let [a, b] = without(message, &auth);
    first(&hmac(key, &[&hoa.octets(), a, b]))
}

/// Compare two MACs in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A deterministic random bit generator: HMAC-SHA256 in counter mode over a
/// 32-byte seed. The shells seed it from the OS; the simulator from its seed.
/// Used for Kcn, nonces, cookies and initial sequence numbers.
#[derive(Clone)]
pub struct Drbg {
    key: [u8; 32],
    counter: u64,
}

impl std::fmt::Debug for Drbg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drbg")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Drbg {
    /// A generator from a seed.
    pub fn new(seed: [u8; 32]) -> Self {
        Self {
            key: seed,
            counter: 0,
        }
    }

    /// A generator from a 64-bit seed (simulator and tests).
    pub fn from_u64(seed: u64) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_be_bytes());
        Self::new(s)
    }

    fn block(&mut self) -> [u8; 32] {
        self.counter += 1;
        hmac(&self.key, &[&self.counter.to_be_bytes()])
    }

    /// Fill `out` with pseudo-random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(32) {
            let b = self.block();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }

    /// 32 random bytes.
    pub fn key(&mut self) -> [u8; 32] {
        self.block()
    }

    /// 8 random bytes (a nonce or cookie).
    pub fn token(&mut self) -> Token {
        first(&self.block())
    }

    /// A random u64.
    pub fn next_u64(&mut self) -> u64 {
        u64::from_be_bytes(self.token())
    }

    /// A random u16.
    pub fn next_u16(&mut self) -> u16 {
        self.next_u64() as u16
    }

    /// A random non-zero u32: a session index (0 means "not sealed").
    pub fn session_index(&mut self) -> u32 {
        loop {
            let i = self.next_u64() as u32;
            if i != 0 {
                return i;
            }
        }
    }

    /// 16 random bytes: a session nonce.
    pub fn nonce16(&mut self) -> [u8; 16] {
        let mut n = [0u8; 16];
        self.fill(&mut n);
        n
    }
}

/// Length of an endpoint inside a MAC, re-exported for documentation.
pub const ENDPOINT_MAC_LEN: usize = ENDPOINT_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        let d = hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_depend_on_every_input() {
        let kcn = [7u8; 32];
        let hoa: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let n = [1u8; 8];
        let t = home_keygen_token(&kcn, hoa, MemberId(1), &n);
        assert_ne!(t, home_keygen_token(&kcn, hoa, MemberId(2), &n));
        assert_ne!(t, home_keygen_token(&kcn, hoa, MemberId(1), &[2u8; 8]));
        assert_ne!(t, home_keygen_token(&[8u8; 32], hoa, MemberId(1), &n));
        let a: SocketAddr = "[2001:db8::2]:4790".parse().unwrap();
        let b: SocketAddr = "[2001:db8::2]:4791".parse().unwrap();
        assert_ne!(
            care_of_keygen_token(&kcn, a, &n),
            care_of_keygen_token(&kcn, b, &n)
        );
        // Home and care-of tokens over the same bytes differ by the trailing 0/1.
        assert_ne!(kbm(&t, &n), kbm(&n, &t));
    }

    #[test]
    fn care_of_ticket_differs_from_the_home_token() {
        let kcn = [7u8; 32];
        let hoa: Ipv6Addr = "fd00::1".parse().unwrap();
        let n = [1u8; 8];
        let t = care_of_ticket(&kcn, hoa, MemberId(1), &n);
        assert_ne!(t, home_keygen_token(&kcn, hoa, MemberId(1), &n));
        assert_ne!(t, care_of_ticket(&kcn, hoa, MemberId(2), &n));
    }

    #[test]
    fn authenticator_excludes_its_own_field() {
        let kbm = [3u8; 32];
        let mut msg = vec![0u8; 32];
        let mac1 = binding_authenticator(&kbm, &msg, 20..32);
        msg[25] = 0xff; // inside the excluded range
        assert_eq!(mac1, binding_authenticator(&kbm, &msg, 20..32));
        msg[3] = 0xff; // outside
        assert_ne!(mac1, binding_authenticator(&kbm, &msg, 20..32));
        assert_ne!(mac1, binding_authenticator(&[4u8; 32], &msg, 20..32));
    }

    #[test]
    fn drbg_is_deterministic_and_varies() {
        let mut a = Drbg::from_u64(1);
        let mut b = Drbg::from_u64(1);
        let mut c = Drbg::from_u64(2);
        let x = a.token();
        assert_eq!(x, b.token());
        assert_ne!(x, c.token());
        assert_ne!(x, a.token());
        assert!(constant_time_eq(&[1, 2], &[1, 2]));
        assert!(!constant_time_eq(&[1, 2], &[1, 3]));
        assert!(!constant_time_eq(&[1], &[1, 3]));
    }
}
