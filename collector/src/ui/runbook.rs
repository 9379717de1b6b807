//! `GET /runbook`: the rule pack's runbook (deploy/rules/RUNBOOK.md, built
//! into the binary, so it always matches the rules this collector ships),
//! rendered to HTML with one anchor per section (`#gen3servicedown`, the
//! same anchors as GitHub's rendering). Unless `runbook_base_url` says
//! otherwise, alerts' `runbook_url`s point here (`<external URL>/runbook#…`),
//! so a link in Slack or PagerDuty opens the runbook of the version that
//! fired it. Open without a token, like `/-/healthy`: it is the project's
//! public documentation and holds nothing of the site.

use axum::http::StatusCode;
use axum::response::Response;
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use super::{Viewer, html, layout};
use crate::api::access::Access;

/// The runbook's Markdown, as shipped.
const RUNBOOK_MD: &str = include_str!("../../../deploy/rules/RUNBOOK.md");

/// GitHub's heading anchor: lower case, spaces to `-`, punctuation dropped.
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The Markdown rendered to HTML, each heading with its anchor.
pub fn render(md: &str) -> String {
    let mut events: Vec<Event<'_>> = Vec::new();
    // A heading's events are held until its end, to name it by its text.
    let mut heading: Option<(HeadingLevel, Vec<Event<'_>>)> = None;
    for ev in Parser::new_ext(md, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH) {
        match (ev, heading.as_mut()) {
            (Event::Start(Tag::Heading { level, .. }), None) => heading = Some((level, Vec::new())),
            (Event::End(TagEnd::Heading(_)), Some(_)) => {
                let Some((level, inner)) = heading.take() else { continue };
                let text: String = inner
                    .iter()
                    .filter_map(|e| match e {
                        Event::Text(t) | Event::Code(t) => Some(t.as_ref()),
                        _ => None,
                    })
                    .collect();
                events.push(Event::Start(Tag::Heading {
                    level,
                    id: Some(slug(&text).into()),
                    classes: Vec::new(),
                    attrs: Vec::new(),
                }));
                events.extend(inner);
                events.push(Event::End(TagEnd::Heading(level)));
            }
            (ev, Some((_, inner))) => inner.push(ev),
            (ev, None) => events.push(ev),
        }
    }
    let mut out = String::with_capacity(md.len() * 2);
    pulldown_cmark::html::push_html(&mut out, events.into_iter());
    out
}

/// `GET /runbook`.
pub async fn page() -> Response {
    let v = Viewer {
        access: &Access::default(),
        csrf: String::new(),
        auth: false,
    };
    let body = format!("<article class=\"runbook\">{}</article>", render(RUNBOOK_MD));
    html(StatusCode::OK, layout("Runbook", "", &v, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alert_section_has_its_anchor() {
        let page = render(RUNBOOK_MD);
        for line in RUNBOOK_MD.lines() {
            if let Some(h) = line.strip_prefix("## ") {
                let id = format!("id=\"{}\"", slug(h));
                assert!(page.contains(&id), "no {id} for {h:?}");
            }
        }
        assert!(page.contains("id=\"gen3servicedown\""), "GitHub's anchor for Gen3ServiceDown");
        assert!(page.contains("<pre><code"), "code blocks rendered");
    }

    #[test]
    fn slugs_follow_github() {
        assert_eq!(slug("Gen3ServiceDown"), "gen3servicedown");
        assert_eq!(slug("Before you start"), "before-you-start");
        assert_eq!(
            slug("HostDiskSpaceLow / HostDiskSpaceCritical"),
            "hostdiskspacelow--hostdiskspacecritical"
        );
    }
}
