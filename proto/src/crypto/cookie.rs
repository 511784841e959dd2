//! Stateless cookies (docs/PROTOCOL.md section 1.3) and the X25519
//! exchange of the shim handshake.
//!
//! A cookie proves that the sender of a message receives datagrams at the
//! endpoint it claims (return routability of the outer address) without the
//! AP remembering anything: the AP recomputes it from a secret that rotates
//! every [`COOKIE_EPOCH`], accepting the current and the previous secret.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Drbg, constant_time_eq, hmac};
use crate::wire::emit_endpoint;

/// Length of a cookie.
pub const COOKIE_LEN: usize = 16;
/// How often the cookie secret is replaced (a cookie lives one to two epochs).
pub const COOKIE_EPOCH: Duration = Duration::from_secs(60);

/// A cookie.
pub type Cookie = [u8; COOKIE_LEN];

/// What a cookie is for; part of its MAC input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieKind {
    /// Registration BU (extra: the member id).
    Registration,
    /// Shim Hello (extra: the shim's nonce).
    ShimHello,
}

impl CookieKind {
    fn label(self) -> &'static [u8] {
        match self {
            CookieKind::Registration => b"reg",
            CookieKind::ShimHello => b"shim",
        }
    }
}

/// The AP's cookie secrets.
#[derive(Clone)]
pub struct CookieJar {
    current: [u8; 32],
    previous: Option<[u8; 32]>,
    rotated: Instant,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("rotated", &self.rotated)
            .finish_non_exhaustive()
    }
}

impl CookieJar {
    /// A jar with a fresh secret from `drbg`.
    pub fn new(now: Instant, drbg: &mut Drbg) -> CookieJar {
        CookieJar {
            current: drbg.key(),
            previous: None,
            rotated: now,
        }
    }

    /// Rotates the secret if an epoch has passed (call on every use; cheap).
    pub fn maybe_rotate(&mut self, now: Instant, drbg: &mut Drbg) {
        if now >= self.rotated + COOKIE_EPOCH {
            // More than two epochs idle: the old secret is too old as well.
            self.previous = (now < self.rotated + 2 * COOKIE_EPOCH).then_some(self.current);
            self.current = drbg.key();
            self.rotated = now;
        }
    }

    fn compute(secret: &[u8; 32], kind: CookieKind, from: SocketAddr, extra: &[u8]) -> Cookie {
        let d = hmac(secret, &[kind.label(), &emit_endpoint(from), extra]);
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(&d[..COOKIE_LEN]);
        c
    }

    /// The cookie for `from` under the current secret.
    pub fn make(&self, kind: CookieKind, from: SocketAddr, extra: &[u8]) -> Cookie {
        Self::compute(&self.current, kind, from, extra)
    }

    /// Is `cookie` one we gave `from` within the last one or two epochs?
    pub fn check(&self, kind: CookieKind, from: SocketAddr, extra: &[u8], cookie: &Cookie) -> bool {
        let cur = constant_time_eq(&Self::compute(&self.current, kind, from, extra), cookie);
        let prev = self
            .previous
            .is_some_and(|p| constant_time_eq(&Self::compute(&p, kind, from, extra), cookie));
        cur | prev
    }
}

/// An X25519 key pair for one handshake (secret drawn from the engine's DRBG).
#[derive(Clone)]
pub struct DhKeyPair {
    secret: x25519_dalek::StaticSecret,
    /// The public key sent in the Hello / Welcome.
    pub public: [u8; 32],
}

impl std::fmt::Debug for DhKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhKeyPair").finish_non_exhaustive()
    }
}

impl DhKeyPair {
    /// A fresh pair.
    pub fn generate(drbg: &mut Drbg) -> DhKeyPair {
        let secret = x25519_dalek::StaticSecret::from(drbg.key());
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        DhKeyPair { secret, public }
    }

    /// The shared secret with `peer`, or `None` if the peer's key is a
    /// low-order point (the result would not depend on our secret).
    pub fn agree(&self, peer: &[u8; 32]) -> Option<[u8; 32]> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(*peer));
        shared.was_contributory().then(|| shared.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_bind_endpoint_kind_and_extra_and_expire() {
        let t0 = Instant::now();
        let mut drbg = Drbg::from_u64(9);
        let mut jar = CookieJar::new(t0, &mut drbg);
        let a: SocketAddr = "[fd00::1]:4790".parse().unwrap();
        let b: SocketAddr = "[fd00::1]:4791".parse().unwrap();
        let c = jar.make(CookieKind::Registration, a, &[0, 1]);
        assert!(jar.check(CookieKind::Registration, a, &[0, 1], &c));
        assert!(!jar.check(CookieKind::Registration, b, &[0, 1], &c));
        assert!(!jar.check(CookieKind::Registration, a, &[0, 2], &c));
        assert!(!jar.check(CookieKind::ShimHello, a, &[0, 1], &c));
        jar.maybe_rotate(t0 + COOKIE_EPOCH, &mut drbg);
        assert!(
            jar.check(CookieKind::Registration, a, &[0, 1], &c),
            "previous epoch"
        );
        assert_ne!(c, jar.make(CookieKind::Registration, a, &[0, 1]));
        jar.maybe_rotate(t0 + 2 * COOKIE_EPOCH, &mut drbg);
        assert!(
            !jar.check(CookieKind::Registration, a, &[0, 1], &c),
            "two epochs old"
        );
        // A restarted AP (new jar) knows none of the old cookies.
        let fresh = CookieJar::new(t0, &mut Drbg::from_u64(10));
        assert!(!fresh.check(
            CookieKind::Registration,
            b,
            &[0, 1],
            &jar.make(CookieKind::Registration, b, &[0, 1])
        ));
    }

    #[test]
    fn idle_jar_forgets_both_secrets() {
        let t0 = Instant::now();
        let mut drbg = Drbg::from_u64(1);
        let mut jar = CookieJar::new(t0, &mut drbg);
        let a: SocketAddr = "[fd00::1]:1".parse().unwrap();
        let c = jar.make(CookieKind::ShimHello, a, &[7; 16]);
        jar.maybe_rotate(t0 + 3 * COOKIE_EPOCH, &mut drbg);
        assert!(!jar.check(CookieKind::ShimHello, a, &[7; 16], &c));
    }

    #[test]
    fn x25519_agrees_and_refuses_low_order_points() {
        let mut drbg = Drbg::from_u64(3);
        let a = DhKeyPair::generate(&mut drbg);
        let b = DhKeyPair::generate(&mut drbg);
        assert_eq!(a.agree(&b.public), b.agree(&a.public));
        assert!(a.agree(&b.public).is_some());
        assert_eq!(a.agree(&[0u8; 32]), None);
    }
}
