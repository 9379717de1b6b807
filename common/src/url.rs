//! URLs in logs and labels.

/// The URL without user info, query or fragment: safe for labels and logs
/// (a query string or fragment can carry a credential).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_query_and_fragment_are_dropped() {
        assert_eq!(
            redact_url("https://user:pw@mimir.example.org:8443/api/v1/push?token=s3cret#frag"),
            "https://mimir.example.org:8443/api/v1/push"
        );
        assert_eq!(redact_url("not a url"), "<invalid url>");
    }
}
