//! Hostile queries: the checks made before a query's text reaches the
//! parser (promql-parser recurses, as do the evaluator, the printer and the
//! AST's drop), and the thread with a known stack that parses, evaluates,
//! formats and drops a query.
//!
//! [`depth_bound`] scans the text token by token and gives an upper bound
//! of the syntax tree's depth: every bracket (`(`, `[`, `{`) opens a group;
//! within a group every binary operator (`+`, `or`, `==`, …), unary sign and
//! range/subquery bracket may add one node above the group's deepest
//! operand, so a group's height is at most 1 (its own node: call,
//! parentheses, subquery) + its operators + its deepest inner group. A chain
//! `1+1+…+1` of n terms gives n; n nested calls give n + 1; n nested
//! `max_over_time(…[1m:1m])` give 2n + 2. The scan keeps a running lower
//! bound and stops as soon as it passes the limit.
//!
//! [`QUERY_STACK_PER_LEVEL`] bytes of stack per level of that bound (plus a
//! base) is what [`stack_size`] gives the query thread; the tests run the
//! deepest accepted queries of every shape on it.

/// Stack per level of the depth bound: measured on debug builds (the
/// largest frames) with a margin of more than 4 (see the tests).
pub const QUERY_STACK_PER_LEVEL: usize = 64 << 10;

/// Stack for everything but the recursion.
const QUERY_STACK_BASE: usize = 8 << 20;

/// The stack of the thread that handles a query of depth up to `max_depth`.
pub fn stack_size(max_depth: usize) -> usize {
    QUERY_STACK_BASE.saturating_add(max_depth.saturating_mul(QUERY_STACK_PER_LEVEL))
}

/// A refusal before parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The text is longer than `max_query_length` bytes.
    Length {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The depth bound exceeds `max_query_depth`.
    Depth {
        /// The bound (at least this much; the scan stops past the limit).
        depth: usize,
        /// The limit.
        max: usize,
    },
}

impl Refusal {
    /// The limit's name, as counted in `csoc_collector_limit_rejections_total`.
    pub fn limit(&self) -> &'static str {
        match self {
            Refusal::Length { .. } => "max_query_length",
            Refusal::Depth { .. } => "max_query_depth",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Length { len, max } => write!(f, "query is {len} bytes long, over the limit max_query_length ({max} bytes)"),
            Refusal::Depth { depth, max } => write!(
                f,
                "query nesting depth is at least {depth}, over the limit max_query_depth ({max}): too many nested brackets, calls or chained operators"
            ),
        }
    }
}

/// Checks a query's text before parsing: its length, then its depth bound.
pub fn precheck(q: &str, max_length: u64, max_depth: usize) -> Result<(), Refusal> {
    precheck_depth(q, max_length, max_depth).map(drop)
}

/// [`precheck`], giving the text's depth bound when it passes (for
/// [`spawn_query_job`]'s choice of a pooled thread, without a second scan).
pub fn precheck_depth(q: &str, max_length: u64, max_depth: usize) -> Result<usize, Refusal> {
    if q.len() as u64 > max_length {
        return Err(Refusal::Length {
            len: q.len(),
            max: max_length.min(usize::MAX as u64) as usize,
        });
    }
    let depth = depth_bound_until(q, max_depth);
    if depth > max_depth {
        return Err(Refusal::Depth { depth, max: max_depth });
    }
    Ok(depth)
}

/// An upper bound of the depth of `q`'s syntax tree (see the module doc).
pub fn depth_bound(q: &str) -> usize {
    depth_bound_until(q, usize::MAX)
}

/// [`depth_bound`], stopping as soon as the bound passes `stop` (with a
/// value over `stop`).
fn depth_bound_until(q: &str, stop: usize) -> usize {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Paren,
        Square,
        Brace,
    }
    /// An open bracket: its operators so far and the largest height of
    /// the groups closed inside it.
    struct Frame {
        kind: Kind,
        ops: usize,
        child: usize,
    }
    impl Frame {
        fn new(kind: Kind) -> Self {
            Frame { kind, ops: 0, child: 0 }
        }
        /// The height of its subtree: the node of the bracket (call,
        /// parentheses, range, subquery), then at most one node per
        /// operator above its deepest operand.
        fn height(&self) -> usize {
            1 + self.ops + self.child
        }
    }
    let mut frames: Vec<Frame> = vec![Frame::new(Kind::Paren)];
    // Sum over the open frames of 1 + ops: with the innermost frame's
    // deepest child, a lower bound of the final answer (for stopping early).
    let mut open = 1usize;
    let b = q.as_bytes();
    let mut i = 0usize;
    let count = |frames: &mut Vec<Frame>, open: &mut usize| {
        if let Some(f) = frames.last_mut() {
            f.ops += 1;
            *open += 1;
        }
    };
    let close = |frames: &mut Vec<Frame>, open: &mut usize| {
        if frames.len() > 1
            && let Some(f) = frames.pop()
        {
            *open -= 1 + f.ops;
            let h = f.height();
            if let Some(parent) = frames.last_mut() {
                parent.child = parent.child.max(h);
            }
        }
    };
    while i < b.len() {
        let c = b[i];
        let in_brace = frames.last().is_some_and(|f| f.kind == Kind::Brace);
        match c {
            b'#' => {
                // A comment, to the end of the line. The parser's idea of a
                // line end is not ours to guess (it ends a comment at a
                // carriage return, found by fuzzing): stop skipping at the
                // first byte that is not printable ASCII or a tab, so that
                // the bound only ever counts more than the parser sees.
                while i < b.len() && (b[i] == b'\t' || (0x20..0x7f).contains(&b[i])) {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'(' | b'{' | b'[' => {
                let kind = match c {
                    b'(' => Kind::Paren,
                    b'{' => Kind::Brace,
                    _ => {
                        // A range or subquery wraps what precedes it.
                        count(&mut frames, &mut open);
                        Kind::Square
                    }
                };
                frames.push(Frame::new(kind));
                open += 1;
            }
            b')' | b'}' | b']' => close(&mut frames, &mut open),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' if !in_brace => {
                count(&mut frames, &mut open);
                // `<=`, `>=` are one operator.
                if matches!(c, b'<' | b'>') && b.get(i + 1) == Some(&b'=') {
                    i += 1;
                }
            }
            b'=' | b'!' if !in_brace => {
                // `==`, `!=` (a lone `=` or `!` is a syntax error anyway).
                count(&mut frames, &mut open);
                if b.get(i + 1) == Some(&b'=') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                    i += 1;
                }
                let word = &q[start..i];
                if ["and", "or", "unless", "atan2"].iter().any(|k| word.eq_ignore_ascii_case(k)) {
                    count(&mut frames, &mut open);
                }
                i -= 1;
            }
            _ => {}
        }
        let lower = open + frames.last().map_or(0, |f| f.child);
        if lower > stop {
            return lower;
        }
        i += 1;
    }
    while frames.len() > 1 {
        close(&mut frames, &mut open);
    }
    frames[0].height()
}

/// At most the first 100 characters of `s`, with "…" when cut: what an
/// error message may echo of a query.
pub fn short(s: &str) -> String {
    const KEEP: usize = 100;
    match s.char_indices().nth(KEEP) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// The depth for which the evaluator's own calls make room when they are
/// not already on a query thread (rule evaluation, rule unit tests):
/// `max_query_depth`'s default, which rule files are held to.
pub const DEFAULT_MAX_DEPTH: usize = 512;

thread_local! {
    /// The depth this thread's stack was sized for (0: not a query thread).
    static STACK_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as having a stack for queries of depth up to
/// `max_depth` (a thread started with [`stack_size`]`(max_depth)`).
pub fn mark_query_stack(max_depth: usize) {
    STACK_DEPTH.with(|d| d.set(max_depth));
}

/// A job for [`spawn_query_job`].
pub type QueryJob = Box<dyn FnOnce() + Send + 'static>;

/// Depth bound up to which a query's job runs on a pooled thread; deeper
/// ones get a thread of their own, so that the stack pages a deep query
/// touched are not kept.
pub const POOLED_DEPTH: usize = 64;

/// Idle query threads kept, over all stack sizes.
const MAX_IDLE: usize = 8;

/// Idle query threads: the stack depth each was made for, and the channel
/// that hands it its next job (dropping the sender ends the thread).
static IDLE: std::sync::Mutex<Vec<(usize, std::sync::mpsc::Sender<QueryJob>)>> = std::sync::Mutex::new(Vec::new());

/// Runs `job` on a query thread with a stack for depth `max_depth`, without
/// waiting for it. With `reuse` (a query whose depth bound is at most
/// [`POOLED_DEPTH`]) an idle thread of that stack size takes it, or a new
/// one that stays for later jobs: starting a thread with a stack of tens of
/// MiB for each request cost more than evaluating a small query. A job
/// that panics ends its thread.
pub fn spawn_query_job(max_depth: usize, reuse: bool, mut job: QueryJob) -> std::io::Result<()> {
    if reuse {
        loop {
            let worker = {
                let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
                idle.iter().rposition(|(d, _)| *d == max_depth).map(|i| idle.swap_remove(i))
            };
            let Some((_, tx)) = worker else { break };
            match tx.send(job) {
                Ok(()) => return Ok(()),
                // That thread is gone: try the next.
                Err(std::sync::mpsc::SendError(j)) => job = j,
            }
        }
    }
    std::thread::Builder::new()
        .name("promql-query".into())
        .stack_size(stack_size(max_depth))
        .spawn(move || {
            mark_query_stack(max_depth);
            let mut job = job;
            loop {
                job();
                if !reuse {
                    return;
                }
                let (tx, rx) = std::sync::mpsc::channel::<QueryJob>();
                {
                    let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
                    if idle.len() >= MAX_IDLE {
                        // Make room by ending a thread of another stack size
                        // (the limit was reloaded), else end this one.
                        match idle.iter().position(|(d, _)| *d != max_depth) {
                            Some(i) => drop(idle.remove(i)),
                            None => return,
                        }
                    }
                    idle.push((max_depth, tx));
                }
                match rx.recv() {
                    Ok(next) => job = next,
                    Err(_) => return,
                }
            }
        })?;
    Ok(())
}

/// Runs `f` on a new thread with a stack for queries of depth up to
/// `max_depth` and waits for it (a panic is an `Err`).
pub fn on_query_stack<T: Send>(max_depth: usize, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    on_stack(stack_size(max_depth), move || {
        mark_query_stack(max_depth);
        f()
    })
}

/// Runs `f` here if this thread is a query thread for at least
/// `max_depth`, else on one.
pub fn ensure_query_stack<T: Send>(max_depth: usize, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    if STACK_DEPTH.with(|d| d.get()) >= max_depth {
        Ok(f())
    } else {
        on_query_stack(max_depth, f)
    }
}

fn on_stack<T: Send>(stack: usize, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("promql-query".into())
            .stack_size(stack)
            .spawn_scoped(s, f)
            .map_err(|e| format!("starting the query thread: {e}"))?;
        h.join().map_err(|_| "the query thread panicked".to_string())
    })
}

/// The depth of a syntax tree (nodes on its longest path), which
/// [`depth_bound`] of its text bounds. Recursive: for tests and fuzzing, on
/// a query thread.
pub fn ast_depth(e: &promql_parser::parser::Expr) -> usize {
    use promql_parser::parser::Expr;
    1 + match e {
        Expr::Aggregate(a) => ast_depth(&a.expr).max(a.param.as_deref().map_or(0, ast_depth)),
        Expr::Unary(u) => ast_depth(&u.expr),
        Expr::Binary(b) => ast_depth(&b.lhs).max(ast_depth(&b.rhs)),
        Expr::Paren(p) => ast_depth(&p.expr),
        Expr::Subquery(s) => ast_depth(&s.expr),
        Expr::Call(c) => c.args.args.iter().map(|a| ast_depth(a)).max().unwrap_or(0),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::VectorSelector(_) | Expr::MatrixSelector(_) | Expr::Extension(_) => 0,
    }
}

/// Parses a PromQL expression with promql-parser, turning a panic of the
/// parser into an error. The parser panics on some input (a range of
/// `[2222…2]` seconds overflows a `Duration`, found by the `promql` fuzz
/// target); whatever it panics on is refused like a syntax error.
///
/// Parsed expressions are kept (at most [`PARSE_CACHE`] of at most
/// [`PARSE_CACHE_MAX_LEN`] bytes, by text), as VictoriaMetrics keeps them:
/// a dashboard sends the same queries at every refresh, and the parser
/// compiles every regex matcher anew (about 0.17 ms for `{device=~"eth.*"}`,
/// a sixth of a small instant query). Only the syntax tree is kept, never
/// a result.
pub fn parse(q: &str) -> Result<promql_parser::parser::Expr, String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, promql_parser::parser::Expr>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(e) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(q) {
        return Ok(e.clone());
    }
    let expr = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| promql_parser::parser::parse(q))) {
        Ok(r) => r?,
        Err(_) => return Err("the expression cannot be parsed (a value in it is out of range)".to_string()),
    };
    if q.len() <= PARSE_CACHE_MAX_LEN {
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= PARSE_CACHE {
            // Bounded and simple: start over (the dashboards' queries come
            // back at their next refresh).
            c.clear();
        }
        c.insert(q.to_string(), expr.clone());
    }
    Ok(expr)
}

/// Most parsed expressions kept.
pub const PARSE_CACHE: usize = 1024;
/// Longest query text whose parse is kept.
pub const PARSE_CACHE_MAX_LEN: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_are_kept_and_equal_fresh_ones_and_errors_stay_errors() {
        for q in ["sum by (instance) (rate(x{device=~\"eth.*\"}[5m]))", "up == 1", "1 +"] {
            let fresh = promql_parser::parser::parse(q).map(|e| e.to_string());
            for _ in 0..2 {
                assert_eq!(parse(q).map(|e| e.to_string()), fresh, "{q}");
            }
        }
        let long = format!("up{{a=\"{}\"}}", "x".repeat(PARSE_CACHE_MAX_LEN));
        assert_eq!(
            parse(&long).map(|e| e.to_string()).ok(),
            promql_parser::parser::parse(&long).map(|e| e.to_string()).ok()
        );
        for i in 0..PARSE_CACHE + 5 {
            assert!(parse(&format!("up + {i}")).is_ok());
        }
    }

    /// Runs a job on the pool and waits for its thread's id and marked depth.
    fn pooled_run(depth: usize, reuse: bool) -> (std::thread::ThreadId, usize) {
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_query_job(
            depth,
            reuse,
            Box::new(move || {
                let _ = tx.send((std::thread::current().id(), STACK_DEPTH.with(|d| d.get())));
            }),
        )
        .expect("spawn");
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the job ran")
    }

    #[test]
    fn query_threads_are_reused_for_shallow_jobs_only() {
        // A depth no other test uses: its idle threads are this test's.
        let depth = 77;
        let (first, marked) = pooled_run(depth, true);
        assert_eq!(marked, depth, "the thread is marked for its stack");
        // The thread goes idle just after the job: the next job may come
        // first and get a new thread; within a few tries one is reused.
        let reused = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            pooled_run(depth, true).0 == first
        });
        assert!(reused, "an idle query thread took the next job");
        // A deep query's thread is not kept.
        let (deep, _) = pooled_run(depth, false);
        std::thread::sleep(std::time::Duration::from_millis(20));
        for _ in 0..20 {
            assert_ne!(pooled_run(depth, true).0, deep, "a thread not for reuse was reused");
        }
        // A job that panics ends its thread; the pool goes on.
        spawn_query_job(depth, true, Box::new(|| panic!("a job panics"))).expect("spawn");
        let (_, marked) = pooled_run(depth, true);
        assert_eq!(marked, depth);
        let idle = IDLE.lock().unwrap_or_else(|p| p.into_inner()).len();
        assert!(idle <= MAX_IDLE, "{idle} idle threads");
    }

    fn chain(op: &str, term: &str, n: usize) -> String {
        vec![term; n].join(op)
    }

    fn nested(open: &str, inner: &str, close: &str, n: usize) -> String {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    }

    #[test]
    fn depth_bound_of_shapes() {
        assert_eq!(depth_bound("1"), 1);
        assert_eq!(depth_bound("up"), 1);
        assert_eq!(depth_bound(&chain("+", "1", 511)), 511);
        assert_eq!(depth_bound(&chain(" or ", "node_load1", 100)), 100);
        assert_eq!(depth_bound(&chain(" AND ", "a", 10)), 10);
        assert_eq!(depth_bound(&nested("(", "1", ")", 10)), 11);
        assert_eq!(depth_bound(&nested("sum(", "x", ")", 10)), 11);
        assert_eq!(depth_bound(&format!("{}1", "-".repeat(9))), 10);
        let lr = nested("label_replace(", "up", r#", "a", "$1", "b", "(.*)")"#, 20);
        assert_eq!(depth_bound(&lr), 21);
        // Subqueries of subqueries.
        assert_eq!(depth_bound(&format!("x{}", "[1m:]".repeat(5))), 1 + 5 + 1);
        // Two levels a call of a subquery: the bracket after a closed group
        // still counts over it.
        assert_eq!(depth_bound(&nested("max_over_time(", "x", "[1m:1m])", 5)), 2 * 5 + 2);
        // Strings, comments and matchers do not count.
        assert_eq!(depth_bound(r#"up{a="((((+-", b!~"x|y", c=~'a\'(('} # ((((+"#), 2);
        assert_eq!(depth_bound("x `(((`"), 1);
        // Closed frames give their levels back.
        assert_eq!(depth_bound("(1+1) + (1+1)"), 1 + 1 + 1 + 1);
        assert_eq!(depth_bound("a >= b <= c != d == e"), 5);
        // Unbalanced closers do not underflow.
        assert_eq!(depth_bound(")))]]}}1+1"), 2);
    }

    /// Found by the `promql` fuzz target: the parser ends a comment at a
    /// carriage return, so the bound must not skip past one.
    #[test]
    fn a_comment_ends_where_any_line_could() {
        let q = "1+1+\r\r#\r\x0c\r0+\r\r\x0c\r0+\r0^2";
        let expr = promql_parser::parser::parse(q).expect("the parser reads past the comment");
        assert!(
            depth_bound(q) >= ast_depth(&expr),
            "bound {} < tree depth {}",
            depth_bound(q),
            ast_depth(&expr)
        );
        // A comment to the end of a plain line still does not count.
        assert!(
            parse(&format!("max_over_time(up[{}])", "2".repeat(99))).is_err(),
            "a parser panic is an error"
        );
        assert_eq!(depth_bound("up # (((+"), 1);
    }

    #[test]
    fn precheck_names_the_limit() {
        assert!(precheck(&chain("+", "1", 512), 1 << 20, 512).is_ok());
        let e = precheck(&chain("+", "1", 513), 1 << 20, 512).expect_err("deep");
        assert_eq!(e.limit(), "max_query_depth");
        assert!(e.to_string().contains("max_query_depth"), "{e}");
        let e = precheck(&"1".repeat(100), 99, 512).expect_err("long");
        assert_eq!(e, Refusal::Length { len: 100, max: 99 });
        assert!(e.to_string().contains("max_query_length"));
        // The scan stops early on a huge input.
        let e = precheck(&"(".repeat(1_000_000), 10 << 20, 512).expect_err("deep");
        assert!(matches!(e, Refusal::Depth { depth: 513, .. }), "{e:?}");
    }

    /// The deepest accepted query of each shape, at exactly the limit.
    fn deepest(max: usize) -> Vec<(&'static str, String)> {
        let lr = r#", "a", "$1", "job", "(.*)")"#;
        vec![
            ("plus chain", chain("+", "1", max)),
            ("power chain", chain("^", "1", max)),
            ("or chain", chain(" or ", "node_load1", max)),
            ("comparison chain", chain(" > bool ", "node_load1", max)),
            ("nested label_replace", nested("label_replace(", "node_load1", lr, max - 1)),
            ("nested parens", nested("(", "1", ")", max - 1)),
            ("nested sum", nested("sum(", "node_load1", ")", max - 1)),
            ("nested abs of a vector", nested("abs(", "-node_load1", ")", max - 2)),
            ("unary minus", format!("{}1", "-".repeat(max - 1))),
            ("subqueries", nested("max_over_time(", "node_load1", "[1m:1m])", (max - 1) / 2)),
            ("parens and operators", nested("(1+", "1", ")", (max - 1) / 2)),
        ]
    }

    /// Parses, evaluates (instant and range), prints, serializes and drops
    /// `q` on a thread with `stack` bytes of stack.
    fn run_all(q: &str, stack: usize) -> Result<(), String> {
        on_stack(stack, || {
            let expr = promql_parser::parser::parse(q).map_err(|e| format!("parse: {e}"))?;
            let db = crate::promql::MemStore::from_series(vec![crate::tsdb::Series {
                labels: std::sync::Arc::new(vec![
                    ("__name__".to_string(), "node_load1".to_string()),
                    ("job".to_string(), "n".to_string()),
                ]),
                samples: vec![(0, 1.0), (60_000, 1.0), (120_000, 1.0)],
            }]);
            let e = crate::promql::Engine::new(std::time::Duration::from_secs(300));
            let _ = e.instant_with_text(&db, &expr, 120_000, Some(q));
            let _ = e.range_with_text(&db, &expr, 0, 120_000, 60_000, Some(q));
            let _ = expr.prettify();
            let _ = expr.to_string();
            let _ = serde_json::to_string(&serde_json::to_value(&expr).map_err(|e| e.to_string())?);
            drop(expr);
            Ok(())
        })?
    }

    #[test]
    fn deepest_accepted_queries_fit_the_stack_with_a_margin() {
        let max = 512;
        for (what, q) in deepest(max) {
            assert_eq!(precheck(&q, 1 << 20, max), Ok(()), "{what}");
            assert!(depth_bound(&q) >= max - 1, "{what}: {}", depth_bound(&q));
            // A quarter of the stack the query thread gets is enough.
            run_all(&q, stack_size(max) / 4).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        // The bound is one.
        for (what, q) in deepest(max).into_iter().chain([
            (
                "rate",
                "rate(x[5m]) / on(a) group_left sum by (a) (rate(y[5m] offset 1m))".to_string(),
            ),
            (
                "misc",
                r#"-(1 - -x) > bool (y atan2 2) and topk(3, z{a!="b"} @ 5) unless count_values("v", w)"#.to_string(),
            ),
            ("subquery", "max_over_time((-x)[5m:1m])".to_string()),
        ]) {
            let real = on_query_stack(max, || ast_depth(&promql_parser::parser::parse(&q).expect("parse"))).expect("thread");
            assert!(real <= depth_bound(&q), "{what}: depth {real} > bound {}", depth_bound(&q));
        }
        // One more level of each shape is refused.
        for (what, over) in deepest(max + 1) {
            assert!(precheck(&over, 1 << 20, max).is_err(), "{what}: {}", depth_bound(&over));
        }
    }

    /// Random token soups: whatever parses has a tree no deeper than the
    /// text's bound (the property the stack size rests on; the fuzz target
    /// checks it on arbitrary bytes).
    #[test]
    fn the_bound_holds_on_random_queries() {
        const TOKENS: &[&str] = &[
            "1",
            "x",
            "up{a=\"b\"}",
            "(",
            ")",
            "(",
            ")",
            "[5m]",
            "[1m:1m]",
            "[1m:]",
            " + ",
            " - ",
            "-",
            " * ",
            " ^ ",
            " / ",
            " or ",
            " and ",
            " unless ",
            " > bool ",
            " == ",
            " atan2 ",
            "sum(",
            "sum by (a) (",
            "rate(",
            "abs(",
            "max_over_time(",
            "label_replace(",
            "topk(",
            ", ",
            "\"s\"",
            " offset 1m",
            " @ 5",
            " on(a) ",
            " group_left ",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut parsed = 0;
        let queries: Vec<String> = (0..60_000)
            .map(|_| {
                let n = 1 + next() % 14;
                (0..n).map(|_| TOKENS[(next() % TOKENS.len() as u64) as usize]).collect()
            })
            .collect();
        on_query_stack(512, || {
            for q in &queries {
                if let Ok(e) = promql_parser::parser::parse(q) {
                    parsed += 1;
                    let (d, b) = (ast_depth(&e), depth_bound(q));
                    assert!(d <= b, "{q:?}: depth {d} > bound {b}");
                }
            }
        })
        .expect("thread");
        assert!(parsed > 1000, "only {parsed} parsed");
    }

    /// promql-parser's printer measures every node by printing it
    /// (`needs_split` → `to_string`) and copies each level's text into its
    /// parent's: O(size × depth), bounded now by the length and depth
    /// limits. The worst shapes found, at both limits, print in well under
    /// a second (0.3 s on a debug build).
    #[test]
    fn printing_at_the_limits_is_bounded() {
        let group = format!("({})", chain(" + ", "node_load1", 240));
        let wide = chain(" + ", &group, 20);
        let deep_wide = nested("(", &chain(" + ", "node_load1", 240), ")", 250);
        let long = chain(" + ", r#"node_load1_with_a_long_name{job="aaaaaaaaaaaaaaaaaaaaaaaaa"}"#, 511);
        for q in [wide, deep_wide, long] {
            assert!(precheck(&q, 64 << 10, 512).is_ok(), "{}", depth_bound(&q));
            let took = on_query_stack(512, || {
                let e = promql_parser::parser::parse(&q).expect("parse");
                let t = std::time::Instant::now();
                let p = e.prettify();
                assert!(p.len() < 8 << 20, "{}", p.len());
                t.elapsed()
            })
            .expect("thread");
            assert!(took < std::time::Duration::from_secs(5), "{took:?}");
        }
    }

    #[test]
    fn short_cuts_long_text() {
        assert_eq!(short("abc"), "abc");
        let s = short(&"é".repeat(1000));
        assert_eq!(s.chars().count(), 101);
        assert!(s.ends_with('…'));
    }
}
