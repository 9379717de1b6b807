//! Agent authentication: bearer tokens mapped to commons.
//!
//! Tokens are kept only as SHA-256 digests (a config file may give
//! `token_sha256` instead of the token itself) and compared in constant
//! time against every configured digest, so neither timing nor a memory dump
//! reveals a token. Tokens never appear in logs.

use sha2::{Digest, Sha256};

/// One configured token.
#[derive(Clone)]
struct Entry {
    digest: [u8; 32],
    commons: String,
}

/// The token table.
#[derive(Clone, Default)]
pub struct AgentAuth {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for AgentAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let commons: Vec<&str> = self.entries.iter().map(|e| e.commons.as_str()).collect();
        f.debug_struct("AgentAuth").field("commons", &commons).finish_non_exhaustive()
    }
}

/// SHA-256 of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

impl AgentAuth {
    /// Adds a token for `commons`.
    pub fn add_token(&mut self, commons: &str, token: &str) {
        self.add_digest(commons, digest(token));
    }

    /// Adds a token given by its SHA-256 digest.
    pub fn add_digest(&mut self, commons: &str, digest: [u8; 32]) {
        self.entries.push(Entry {
            digest,
            commons: commons.to_string(),
        });
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The commons a token belongs to. Every entry is compared, so the time
    /// taken does not depend on which one matches.
    pub fn authenticate(&self, token: &str) -> Option<&str> {
        let d = digest(token);
        let mut found = None;
        for e in &self.entries {
            if ct_eq(&e.digest, &d) && found.is_none() {
                found = Some(e.commons.as_str());
            }
        }
        found
    }
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read: queries, series, labels, rules, alerts, federation.
    Read,
    /// Read, plus creating and expiring silences (`/api/v2/silences`, the
    /// console's alerts page); a commons-scoped write token only silences
    /// its own commons.
    Write,
    /// Read everything, create and expire silences, plus `/-/reload` and the admin endpoints.
    Admin,
}

impl Role {
    /// Whether this role may create and expire silences.
    pub fn may_write(self) -> bool {
        matches!(self, Role::Write | Role::Admin)
    }

    /// `read`, `write` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("role {s:?} must be read, write or admin")),
        }
    }
}

/// Who made an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (for logs; never the token).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The one commons it may see, if scoped.
    pub commons: Option<String>,
}

/// The API token table. Empty: the API is open (as Prometheus's is).
#[derive(Clone, Default)]
pub struct ApiAuth {
    entries: Vec<([u8; 32], Principal)>,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(_, p)| p.name.as_str()).collect();
        f.debug_struct("ApiAuth").field("tokens", &names).finish_non_exhaustive()
    }
}

impl ApiAuth {
    /// Adds a token given by its SHA-256 digest.
    pub fn add_digest(&mut self, digest: [u8; 32], principal: Principal) {
        self.entries.push((digest, principal));
    }

    /// True when no API token is configured (the API is open).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The principal of a token, comparing every entry in constant time.
    pub fn authenticate(&self, token: &str) -> Option<&Principal> {
        let d = digest(token);
        let mut found = None;
        for (e, p) in &self.entries {
            if ct_eq(e, &d) && found.is_none() {
                found = Some(p);
            }
        }
        found
    }
}

/// Extracts the token from an `authorization: Bearer <token>` value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let t = token.trim();
        (!t.is_empty()).then_some(t)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_commons() {
        let mut a = AgentAuth::default();
        a.add_token("alpha", "s3cret-a");
        a.add_digest("beta", digest("s3cret-b"));
        assert_eq!(a.authenticate("s3cret-a"), Some("alpha"));
        assert_eq!(a.authenticate("s3cret-b"), Some("beta"));
        assert_eq!(a.authenticate("s3cret-c"), None);
        assert_eq!(a.authenticate(""), None);
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn api_tokens_carry_role_and_scope() {
        let mut a = ApiAuth::default();
        let p = Principal {
            name: "grafana-alpha".into(),
            role: Role::Read,
            commons: Some("alpha".into()),
        };
        a.add_digest(digest("tok-alpha-0123456789"), p.clone());
        assert_eq!(a.authenticate("tok-alpha-0123456789"), Some(&p));
        assert_eq!(a.authenticate("tok-alpha-012345678"), None);
        assert!(!format!("{a:?}").contains("tok-alpha"));
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert_eq!("write".parse::<Role>(), Ok(Role::Write));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }
}
