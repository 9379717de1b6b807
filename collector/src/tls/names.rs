//! Agent certificates → commons.
//!
//! A verified client certificate names its agent by its subject common name
//! (CN) and its subject alternative names (DNS and URI). `agent_certs`
//! (`--agent-cert COMMONS=NAME`) maps one such name to one commons:
//! - `NAME` equals the certificate's subject CN or one of its DNS SANs,
//!   compared ASCII-case-insensitively (no wildcard expansion: a SAN
//!   `*.alpha.example` matches only the configured name `*.alpha.example`);
//! - or `NAME` equals one of its URI SANs exactly (`spiffe://csoc/alpha`).
//!
//! Only the leaf certificate counts (never an intermediate's names). A
//! certificate whose names map to two different commons is refused as
//! ambiguous; one whose names map to none is refused as unmapped.

use std::fmt;

use serde::Deserialize;

use crate::config::{ConfigError, valid_commons};

/// One `agent_certs` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCert {
    /// The commons an agent with this certificate name belongs to.
    pub commons: String,
    /// The name: the subject CN, a DNS SAN or a URI SAN of the agent's
    /// certificate.
    pub name: String,
}

/// The names of a certificate that can map it to a commons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    /// Subject common names (usually one).
    pub common_names: Vec<String>,
    /// DNS subject alternative names.
    pub dns: Vec<String>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
}

impl CertNames {
    /// Reads the names of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("cannot parse the certificate: {e}"))?;
        let mut out = CertNames::default();
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                out.common_names.push(s.to_string());
            }
        }
        let san = cert
            .subject_alternative_name()
            .map_err(|e| format!("invalid subject alternative name extension: {e}"))?;
        if let Some(san) = san {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(s) => out.dns.push(s.to_string()),
                    x509_parser::extensions::GeneralName::URI(s) => out.uris.push(s.to_string()),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// True when the certificate has no usable name.
    pub fn is_empty(&self) -> bool {
        self.common_names.is_empty() && self.dns.is_empty() && self.uris.is_empty()
    }

    fn matches(&self, name: &str) -> bool {
        self.common_names.iter().chain(&self.dns).any(|n| n.eq_ignore_ascii_case(name)) || self.uris.iter().any(|n| n == name)
    }
}

/// `CN=agent.alpha.example, DNS=agent.alpha.example, URI=spiffe://csoc/alpha`
/// (control characters escaped, at most 16 names, each cut at 256 bytes), for
/// logs and error messages.
impl fmt::Display for CertNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(no CN, DNS or URI name)");
        }
        let all = self.common_names.iter().map(|n| ("CN", n));
        let all = all.chain(self.dns.iter().map(|n| ("DNS", n)));
        let all: Vec<_> = all.chain(self.uris.iter().map(|n| ("URI", n))).collect();
        for (i, (kind, name)) in all.iter().take(16).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let mut cut = name.len().min(256);
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            write!(f, "{kind}={}", name[..cut].escape_debug())?;
            if cut < name.len() {
                f.write_str("...")?;
            }
        }
        if all.len() > 16 {
            write!(f, " and {} more", all.len() - 16)?;
        }
        Ok(())
    }
}

/// What a certificate's names map to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertLookup {
    /// No configured name matches.
    Unmapped,
    /// Exactly one commons.
    Commons(String),
    /// Names of the certificate map to several commons (sorted).
    Ambiguous(Vec<String>),
}

/// The `agent_certs` table.
#[derive(Debug, Clone, Default)]
pub struct CertMap {
    entries: Vec<AgentCert>,
}

impl CertMap {
    /// Checks and builds the table. Errors name the entry
    /// (`agent_certs[i]`).
    pub fn new(certs: &[AgentCert]) -> Result<Self, ConfigError> {
        let mut entries: Vec<AgentCert> = Vec::with_capacity(certs.len());
        for (i, c) in certs.iter().enumerate() {
            let field = format!("agent_certs[{i}]");
            let inv = |message: String| ConfigError::Invalid {
                field: field.clone(),
                message,
            };
            if !valid_commons(&c.commons) {
                return Err(inv(format!(
                    "commons {:?} must be 1-128 letters, digits, '-', '_' or '.'",
                    c.commons
                )));
            }
            let name = c.name.trim();
            if name.is_empty() {
                return Err(inv(
                    "name is empty; give the CN, a DNS name or a URI of the agent's certificate".into()
                ));
            }
            if name.chars().any(char::is_control) {
                return Err(inv(format!("name {name:?} contains control characters")));
            }
            if let Some(other) = entries.iter().find(|e| e.name.eq_ignore_ascii_case(name) && e.commons != c.commons) {
                return Err(inv(format!(
                    "name {name:?} is already mapped to commons {:?}; a certificate name maps to one commons",
                    other.commons
                )));
            }
            entries.push(AgentCert {
                commons: c.commons.clone(),
                name: name.to_string(),
            });
        }
        Ok(CertMap { entries })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no certificate name is mapped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The commons of a certificate with these names.
    pub fn lookup(&self, names: &CertNames) -> CertLookup {
        let mut found: Vec<String> = self
            .entries
            .iter()
            .filter(|e| names.matches(&e.name))
            .map(|e| e.commons.clone())
            .collect();
        found.sort();
        found.dedup();
        match found.len() {
            0 => CertLookup::Unmapped,
            1 => CertLookup::Commons(found.remove(0)),
            _ => CertLookup::Ambiguous(found),
        }
    }
}

/// Parses `--agent-cert COMMONS=NAME`.
pub fn parse_agent_cert_flag(s: &str) -> Result<AgentCert, String> {
    let (commons, name) = s
        .split_once('=')
        .filter(|(c, n)| !c.is_empty() && !n.is_empty())
        .ok_or_else(|| format!("--agent-cert {s:?}: expected COMMONS=NAME (NAME: the certificate's CN, a DNS name or a URI)"))?;
    Ok(AgentCert {
        commons: commons.to_string(),
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(cn: &[&str], dns: &[&str], uris: &[&str]) -> CertNames {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        CertNames {
            common_names: v(cn),
            dns: v(dns),
            uris: v(uris),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> CertMap {
        let certs: Vec<AgentCert> = pairs
            .iter()
            .map(|(c, n)| AgentCert {
                commons: c.to_string(),
                name: n.to_string(),
            })
            .collect();
        CertMap::new(&certs).expect("valid map")
    }

    #[test]
    fn cn_dns_and_uri_names_map_to_commons() {
        let m = map(&[
            ("alpha", "agent.alpha.example"),
            ("beta", "beta-agent"),
            ("gamma", "spiffe://csoc/gamma"),
        ]);
        let l = |n: &CertNames| m.lookup(n);
        assert_eq!(l(&names(&["agent.alpha.example"], &[], &[])), CertLookup::Commons("alpha".into()));
        // DNS and CN: ASCII case-insensitive.
        assert_eq!(
            l(&names(&["x"], &["Agent.Alpha.Example"], &[])),
            CertLookup::Commons("alpha".into())
        );
        assert_eq!(l(&names(&["BETA-AGENT"], &[], &[])), CertLookup::Commons("beta".into()));
        // URI: exact.
        assert_eq!(l(&names(&[], &[], &["spiffe://csoc/gamma"])), CertLookup::Commons("gamma".into()));
        assert_eq!(l(&names(&[], &[], &["SPIFFE://csoc/gamma"])), CertLookup::Unmapped);
        // No wildcard expansion, no suffix matching.
        assert_eq!(l(&names(&[], &["*.alpha.example"], &[])), CertLookup::Unmapped);
        assert_eq!(l(&names(&["evil.agent.alpha.example"], &[], &[])), CertLookup::Unmapped);
        assert_eq!(l(&names(&[], &[], &[])), CertLookup::Unmapped);
        // Names mapping to two commons: ambiguous, refused.
        assert_eq!(
            l(&names(&["agent.alpha.example"], &["beta-agent"], &[])),
            CertLookup::Ambiguous(vec!["alpha".into(), "beta".into()])
        );
        // Two names of one commons: fine.
        let m2 = map(&[("alpha", "a1"), ("alpha", "a2")]);
        assert_eq!(m2.lookup(&names(&["a1"], &["a2"], &[])), CertLookup::Commons("alpha".into()));
    }

    #[test]
    fn invalid_entries_are_named() {
        let bad = |c: &str, n: &str| {
            CertMap::new(&[
                AgentCert {
                    commons: "ok".into(),
                    name: "taken".into(),
                },
                AgentCert {
                    commons: c.into(),
                    name: n.into(),
                },
            ])
            .expect_err("invalid")
            .to_string()
        };
        let e = bad("a b", "x");
        assert!(e.contains("agent_certs[1]") && e.contains("commons"), "{e}");
        let e = bad("a", " ");
        assert!(e.contains("agent_certs[1]") && e.contains("empty"), "{e}");
        let e = bad("other", "TAKEN");
        assert!(e.contains("agent_certs[1]") && e.contains("already mapped"), "{e}");
        assert!(parse_agent_cert_flag("alpha=agent.alpha.example").is_ok());
        assert!(parse_agent_cert_flag("alpha").is_err());
        assert!(parse_agent_cert_flag("=x").is_err());
    }

    #[test]
    fn display_escapes_and_bounds() {
        let n = names(&["a\nb"], &["d"], &["u"]);
        assert_eq!(n.to_string(), "CN=a\\nb, DNS=d, URI=u");
        assert_eq!(CertNames::default().to_string(), "(no CN, DNS or URI name)");
        let many = CertNames {
            dns: (0..20).map(|i| format!("n{i}")).collect(),
            ..Default::default()
        };
        assert!(many.to_string().ends_with("and 4 more"), "{many}");
    }
}
