//! The collector's PromQL text entry points (`/api/v1/query`,
//! `query_range`, `parse_query`, `format_query`): the pre-parse checks, then
//! on a query thread the parser, the printer, the syntax tree's JSON, and
//! evaluation (instant and range) over a small store. Beyond "no crash":
//! the depth bound of the text is at least the parsed tree's depth (what
//! makes the query thread's stack enough), and evaluation stays under its
//! sample limit.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use csoc_collector::promql::{Engine, MemStore, guard};
use csoc_collector::tsdb::Series;
use libfuzzer_sys::fuzz_target;

const MAX_DEPTH: usize = 512;

/// libfuzzer-sys's panic hook aborts on any panic, caught or not. The
/// collector catches the upstream parser's panics (`guard::parse`) and
/// refuses such input; this target does the same, so the hook only prints.
/// A panic of ours still ends the run: the query thread's panic becomes an
/// `Err`, and the `expect` below panics on the fuzzer's thread, which
/// libfuzzer-sys turns into a crash.
static QUIET_HOOK: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET_HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("panic (caught?): {info}"))));
    let Ok(q) = std::str::from_utf8(data) else { return };
    if guard::precheck(q, 64 << 10, MAX_DEPTH).is_err() {
        return;
    }
    let bound = guard::depth_bound(q);
    guard::on_query_stack(MAX_DEPTH, || {
        let Ok(expr) = guard::parse(q) else { return };
        let depth = guard::ast_depth(&expr);
        assert!(depth <= bound, "tree depth {depth} over the text's bound {bound}: {q:?}");
        let _ = expr.prettify();
        let _ = serde_json::to_vec(&expr);
        let db = MemStore::from_series(vec![Series {
            labels: Arc::new(vec![
                ("__name__".to_string(), "up".to_string()),
                ("job".to_string(), "a".to_string()),
            ]),
            samples: (0..20).map(|i| (i * 15_000, i as f64)).collect(),
        }]);
        let mut e = Engine::new(Duration::from_secs(300));
        e.max_samples = 100_000;
        e.timeout = Duration::from_secs(2);
        let _ = e.instant_with_text(&db, &expr, 300_000, Some(q));
        let _ = e.range_with_text(&db, &expr, 0, 300_000, 60_000, Some(q));
        drop(expr);
    })
    .expect("the query thread panicked");
});
