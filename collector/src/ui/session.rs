//! Console sessions: a token given once on the login page becomes a
//! session kept in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` under
//! HTTPS). The session carries the token's principal (role and commons
//! scope) and a CSRF token that every write from the console sends back in
//! `X-CSRF-Token`. Sessions live in memory for 12 hours; a restart asks
//! for the token again. The token itself is never stored or logged.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::auth::Principal;

/// Name of the session cookie.
pub const COOKIE: &str = "csoc_session";
/// Header that carries the CSRF token on writes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;
/// At most this many sessions; the oldest go first.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub principal: Principal,
    /// The CSRF token of this session.
    pub csrf: String,
    /// When it ends (ms).
    pub expires_ms: i64,
}

/// The console's state shared by the handlers.
pub struct Console {
    /// Whether `/status` is served without authentication.
    pub public_status: bool,
    /// Whether the HTTP listener is HTTPS (session cookies get `Secure`).
    pub https: bool,
    sessions: Mutex<HashMap<String, Session>>,
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    if getrandom::fill(&mut b).is_err() {
        // Without OS randomness no session can be made safely: an
        // impossible-to-guess-free ID is refused by `login`.
        return String::new();
    }
    hex::encode(b)
}

impl Console {
    /// A console with no sessions.
    pub fn new(public_status: bool) -> Self {
        Console {
            public_status,
            https: false,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Marks the listener as HTTPS.
    pub fn with_https(mut self, https: bool) -> Self {
        self.https = https;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session; returns its ID (the cookie value), or `None` when
    /// no randomness is available.
    pub fn login(&self, principal: Principal, now: i64) -> Option<String> {
        let id = random_hex(32);
        let csrf = random_hex(16);
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let mut m = self.lock();
        m.retain(|_, s| s.expires_ms > now);
        if m.len() >= MAX_SESSIONS
            && let Some(oldest) = m.iter().min_by_key(|(_, s)| s.expires_ms).map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(
            id.clone(),
            Session {
                principal,
                csrf,
                expires_ms: now + SESSION_MS,
            },
        );
        Some(id)
    }

    /// The session of a cookie value, if it is live.
    pub fn session(&self, id: &str, now: i64) -> Option<Session> {
        self.lock().get(id).filter(|s| s.expires_ms > now).cloned()
    }

    /// Ends a session.
    pub fn logout(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Compares two strings in time independent of where they differ.
pub fn ct_eq(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn sessions_expire_and_end() {
        let c = Console::new(false);
        let p = Principal {
            name: "ops".into(),
            role: Role::Write,
            commons: Some("alpha".into()),
        };
        let id = c.login(p.clone(), 1000).expect("session");
        assert_eq!(id.len(), 64);
        let s = c.session(&id, 2000).expect("live");
        assert_eq!(s.principal, p);
        assert_eq!(s.csrf.len(), 32);
        assert!(c.session(&id, 1000 + SESSION_MS).is_none(), "expired");
        assert!(c.session("nosuch", 2000).is_none());
        c.logout(&id);
        assert!(c.session(&id, 2000).is_none());
    }

    #[test]
    fn cookies_and_comparison() {
        assert_eq!(cookie("a=1; csoc_session=abc; b=2", COOKIE), Some("abc"));
        assert_eq!(cookie("xcsoc_session=abc", COOKIE), None);
        assert!(ct_eq("abc", "abc") && !ct_eq("abc", "abd") && !ct_eq("abc", "ab"));
    }
}
