//! Client-certificate identity of an agent stream (gRPC over mutual TLS; the
//! semantics are described in `crate::tls`).
//!
//! Before the token is looked at, [`IngestService::cert_identity`] maps the
//! verified leaf certificate (rustls has already checked its chain,
//! validity and key usage in the handshake) to a commons, refusing one that
//! maps to none or to several, and enforces `client_auth: require`. After
//! the token, [`IngestService::check_cert_token`] refuses a stream whose
//! certificate and token name different commons. Refusals are counted in
//! `csoc_collector_ingest_refused_streams_total{reason}` and logged with the
//! peer address and the certificate's names, never a token.

use rustls::pki_types::CertificateDer;
use tonic::Status;

use super::IngestService;
use crate::tls::{CertLookup, CertNames};

/// What a verified client certificate says about a stream.
#[derive(Debug)]
pub(super) struct CertIdentity {
    /// The commons its names map to.
    pub commons: String,
    /// Its names, for logs.
    pub names: String,
}

impl IngestService {
    /// The commons of the stream's verified client certificate, if it has
    /// one; refuses an unmapped or ambiguous certificate, and a stream
    /// without one when certificates are required (except the in-process
    /// agent's, recognised by its internal token).
    pub(super) fn cert_identity(
        &self,
        certs: Option<&[CertificateDer<'static>]>,
        auth_header: Option<&str>,
        peer: &str,
    ) -> Result<Option<CertIdentity>, Status> {
        let policy = &self.peer_policy;
        let Some(leaf) = certs.and_then(|c| c.first()) else {
            let internal = auth_header
                .and_then(crate::auth::bearer)
                .is_some_and(|t| policy.is_internal_token(t));
            if policy.require_cert && !internal {
                self.metrics.refused("client_cert_required");
                tracing::warn!(peer = %peer, "refused an agent stream: no client certificate (this collector has grpc_tls.client_auth: require)");
                return Err(Status::unauthenticated(
                    "this collector requires a client certificate: start the agent with --tls-cert and --tls-key (issued by the CA the collector has as grpc_tls.client_ca_file)",
                ));
            }
            return Ok(None);
        };
        let names = match CertNames::from_der(leaf) {
            Ok(n) => n,
            Err(e) => {
                self.metrics.refused("unmapped_cert");
                tracing::warn!(peer = %peer, error = %e, "refused an agent stream: its client certificate's names cannot be read");
                return Err(Status::unauthenticated(format!(
                    "the client certificate's names cannot be read: {e}"
                )));
            }
        };
        match policy.certs.lookup(&names) {
            CertLookup::Commons(commons) => {
                tracing::debug!(peer = %peer, client_cert = %names, commons = %commons, "agent stream authenticated by its client certificate");
                Ok(Some(CertIdentity {
                    commons,
                    names: names.to_string(),
                }))
            }
            CertLookup::Unmapped => {
                self.metrics.refused("unmapped_cert");
                tracing::warn!(peer = %peer, client_cert = %names, "refused an agent stream: its verified client certificate maps to no commons (map one of its names with --agent-cert COMMONS=NAME or agent_certs in the config file)");
                Err(Status::unauthenticated(format!(
                    "the collector maps no commons to this client certificate ({names}); the collector's operator maps one of its names with --agent-cert COMMONS=NAME"
                )))
            }
            CertLookup::Ambiguous(all) => {
                self.metrics.refused("ambiguous_cert");
                tracing::warn!(peer = %peer, client_cert = %names, commons = ?all, "refused an agent stream: its client certificate's names map to several commons (fix agent_certs)");
                Err(Status::permission_denied(format!(
                    "the names of this client certificate ({names}) map to several commons ({}) at the collector",
                    all.join(", ")
                )))
            }
        }
    }

    /// A stream that presents both a certificate and a (recognised) token
    /// must get the same commons from both.
    pub(super) fn check_cert_token(
        &self,
        cert: Option<&CertIdentity>,
        auth_header: Option<&str>,
        commons: &str,
        peer: &str,
    ) -> Result<(), Status> {
        let (Some(cert), Some(_)) = (cert, auth_header.and_then(crate::auth::bearer)) else {
            return Ok(());
        };
        if cert.commons == commons {
            return Ok(());
        }
        self.metrics.refused("cert_token_mismatch");
        tracing::warn!(
            peer = %peer,
            client_cert = %cert.names,
            cert_commons = %cert.commons,
            token_commons = %commons,
            "refused an agent stream: its client certificate and its token belong to different commons"
        );
        Err(Status::permission_denied(format!(
            "the client certificate ({}) belongs to commons {:?} but the token to commons {:?}; give the agent the token and certificate of one commons, or only one of them",
            cert.names, cert.commons, commons
        )))
    }
}
