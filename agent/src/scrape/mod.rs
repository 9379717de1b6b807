//! Scraping Prometheus-style targets: the exposition parsers (`parse`). The
//! scrape source itself is `sources::scrape`; relabelling is `relabel`.

pub mod parse;
