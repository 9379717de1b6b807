//! Prometheus rule templates: an interpreter for the part of Go's
//! `text/template` language that alerting and recording rule annotations and
//! labels use, with Prometheus's template functions (`humanize`, `query`, ...).
//!
//! Operators paste their Prometheus rule files, so the output (and, as far as
//! practical, the error messages) follow Go and Prometheus byte for byte:
//!
//! * the template runs as Prometheus runs it: the text is prefixed with
//!   `{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}`,
//!   so line/column numbers in errors match Prometheus's, and executed with
//!   `missingkey=zero` (a missing label is the empty string);
//! * values print like Go's `fmt` (`1e+06`, `0.5`, `+Inf`, `map[a:b]`), `printf`
//!   implements Go's verbs, flags, width and precision (`%!d(float64=1.5)`
//!   included);
//! * comparisons are as strict as Go's (`gt $value 0` is "incompatible types
//!   for comparison": `$value` is a float64, `0` an int).
//!
//! Not supported: complex and hexadecimal floating-point literals, `%x`/`%b` on
//! floats, `%#v` Go syntax, `call` (always an error), iterating channels or
//! functions. Query results print as `&{map[...] value}` where Go prints
//! pointer addresses. Template recursion is limited to 100 levels (Go: 100000)
//! and expressions to 100 nesting levels so that evaluation stays on the stack.
//!
//! The files follow Go's packages: `lex` (text/template/parse/lex.go), `parse`
//! (parse.go, node.go and Go's literal syntax), `exec` (exec.go: values, the
//! walk over the tree, the builtins that look into values), `funcs` (the
//! function table and Prometheus's template functions), `gofmt` (fmt: `printf`,
//! `print`, quoting; float digits from `csoc_common::gofmt`) and `gotime`
//! (`time.Time` and `time.Duration`; dates from `csoc_common::calendar`).

mod exec;
mod funcs;
mod gofmt;
mod gotime;
mod lex;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use parse::Node;

/// One sample returned by the `query` template function.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Runs a PromQL instant query at the rule's evaluation time.
pub type QueryFn<'a> = &'a (dyn Fn(&str) -> Result<Vec<QuerySample>, String> + 'a);

/// The data a rule template sees.
pub struct TemplateData<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub external_labels: &'a BTreeMap<String, String>,
    pub external_url: &'a str,
    pub value: f64,
}

/// A parse or execution error, worded like Go's `text/template`
/// (`template: NAME:LINE: ...` when parsing,
/// `template: NAME:LINE:COL: executing "NAME" at <...>: ...` when executing).
/// Prometheus wraps these in "error parsing template NAME: " or
/// "error executing template NAME: "; that is left to the caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
}

/// A parsed template, reusable across evaluations.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    /// The preamble followed by the template text: positions index into it.
    text: String,
    root: Vec<Node>,
    defs: BTreeMap<String, Vec<Node>>,
}

/// What Prometheus prepends to every alert template.
const PREAMBLE: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";
/// Nesting limit for parenthesised pipelines and control structures.
const MAX_PARSE_DEPTH: usize = 100;
/// Nesting limit for `{{template}}` calls.
const MAX_EXEC_DEPTH: usize = 100;
/// Limit for nested evaluation (template calls, control structures and
/// pipelines together), so that recursion cannot exhaust the thread's stack.
const MAX_NESTING: usize = 250;
/// Go's name for the type of the data (`.`).
const DATA_TYPE: &str = "struct { Labels map[string]string; ExternalLabels map[string]string; ExternalURL string; Value interface {} }";

impl Template {
    /// Parses `text`; `name` appears in errors (Prometheus uses "__alert_<AlertName>" and "__rule_<record>").
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        let full = format!("{PREAMBLE}{text}");
        let (root, defs) = parse::parse(name, &full)?;
        Ok(Template {
            name: name.to_string(),
            text: full,
            root,
            defs,
        })
    }

    /// The name given at parse time (`__alert_<name>`, `__rule_<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Executes with Prometheus's preamble semantics: variables $labels (.Labels), $externalLabels (.ExternalLabels),
    /// $externalURL (.ExternalURL), $value (.Value) are defined, and `.` is the data ({.Labels, .Value, .ExternalLabels, .ExternalURL}).
    /// `query` is None when queries are not allowed (then the query function errors).
    pub fn execute(&self, data: &TemplateData<'_>, query: Option<QueryFn<'_>>, eval_time_ms: i64) -> Result<String, TemplateError> {
        exec::execute(self, data, query, eval_time_ms)
    }
}

/// Convenience: parse + execute.
pub fn expand(
    name: &str,
    text: &str,
    data: &TemplateData<'_>,
    query: Option<QueryFn<'_>>,
    eval_time_ms: i64,
) -> Result<String, TemplateError> {
    Template::parse(name, text)?.execute(data, query, eval_time_ms)
}
