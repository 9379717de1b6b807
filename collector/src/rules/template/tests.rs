//! Tests through the public API: templates parsed and executed as rules
//! run them, outputs and error messages as Go and Prometheus give them.

use super::*;

const EXT_URL: &str = "http://testhost:9090/path/prefix";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn sample(pairs: &[(&str, &str)], value: f64) -> QuerySample {
    QuerySample {
        labels: labels(pairs),
        value,
    }
}

fn fake_query(expr: &str) -> Result<Vec<QuerySample>, String> {
    match expr {
        "up" => Ok(vec![sample(&[("__name__", "up"), ("instance", "b")], 1234567.0)]),
        "x" => Ok(vec![
            sample(&[("instance", "b")], 21.0),
            sample(&[("instance", "a")], 11.0),
            sample(&[("instance", "d"), ("__value__", "four")], 4.0),
            sample(&[("instance", "c")], 3.0),
        ]),
        "empty" | "missing" => Ok(vec![]),
        "bad" => Err("1:1: parse error: unexpected end of input".into()),
        other => Ok(vec![sample(&[("__name__", "metric")], other.parse().unwrap_or(0.0))]),
    }
}

fn exec_full(text: &str, value: f64, ext: &BTreeMap<String, String>, query: Option<QueryFn<'_>>) -> Result<String, TemplateError> {
    let l = labels(&[("instance", "host:9100"), ("job", "node")]);
    let data = TemplateData {
        labels: &l,
        external_labels: ext,
        external_url: EXT_URL,
        value,
    };
    expand("test", text, &data, query, 1_500)
}

fn exec(text: &str, value: f64) -> Result<String, TemplateError> {
    let q: QueryFn<'_> = &fake_query;
    exec_full(text, value, &BTreeMap::new(), Some(q))
}

fn ok(text: &str) -> String {
    ok_v(text, 1234.5678)
}

fn ok_v(text: &str, value: f64) -> String {
    match exec(text, value) {
        Ok(s) => s,
        Err(e) => panic!("{text:?}: unexpected error: {}", e.message),
    }
}

fn err(text: &str) -> String {
    match exec(text, 1234.5678) {
        Ok(s) => panic!("{text:?}: expected an error, got {s:?}"),
        Err(e) => e.message,
    }
}

/// Column of a byte offset of the template text in an execution error (the preamble comes first).
fn col(offset: usize) -> usize {
    PREAMBLE.len() + offset
}

fn check_all(cases: &[(&str, &str)]) {
    for (text, want) in cases {
        assert_eq!(ok(text), *want, "template {text:?}");
    }
}

#[test]
fn preamble_matches_prometheus() {
    assert_eq!(PREAMBLE.len(), 112);
    assert_eq!(ok("plain text"), "plain text");
    assert_eq!(ok(""), "");
    assert_eq!(ok("{{ 1 }}"), "1");
}

#[test]
fn value_prints_like_go() {
    let cases: &[(f64, &str)] = &[
        (1e6, "1e+06"),
        (0.5, "0.5"),
        (2.75, "2.75"),
        (12345.0, "12345"),
        (123456.0, "123456"),
        (12345678.0, "1.2345678e+07"),
        (1234.5678, "1234.5678"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (100.0, "100"),
        (0.0, "0"),
        (-0.0, "-0"),
        (-2.5, "-2.5"),
        (1e21, "1e+21"),
        (1.0 / 3.0, "0.3333333333333333"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
    ];
    for (v, want) in cases {
        assert_eq!(ok_v("{{ $value }}", *v), *want, "value {v}");
        assert_eq!(ok_v("{{ .Value }}", *v), *want, "value {v}");
    }
}

#[test]
fn labels_and_data() {
    let mut ext = BTreeMap::new();
    ext.insert("cluster".to_string(), "eu1".to_string());
    let q: QueryFn<'_> = &fake_query;
    let got = exec_full(
        "{{ $labels.instance }}|{{ .Labels.job }}|{{ $externalLabels.cluster }}|{{ .ExternalLabels.cluster }}|{{ $externalURL }}|{{ .ExternalURL }}",
        1.0,
        &ext,
        Some(q),
    );
    assert_eq!(got, Ok(format!("host:9100|node|eu1|eu1|{EXT_URL}|{EXT_URL}")));
    check_all(&[
        // missingkey=zero: a missing label is the empty string.
        ("[{{ $labels.nosuch }}]", "[]"),
        ("[{{ .Labels.nosuch }}]", "[]"),
        ("[{{ index $labels \"nosuch\" }}]", "[]"),
        ("{{ index $labels \"instance\" }}", "host:9100"),
        ("{{ $labels }}", "map[instance:host:9100 job:node]"),
        ("{{ $.Labels.job }}", "node"),
        (
            "{{ . }}",
            "{map[instance:host:9100 job:node] map[] http://testhost:9090/path/prefix 1234.5678}",
        ),
        (
            "{{ printf \"%+v\" . }}",
            "{Labels:map[instance:host:9100 job:node] ExternalLabels:map[] ExternalURL:http://testhost:9090/path/prefix Value:1234.5678}",
        ),
    ]);
}

#[test]
fn printf_verbs_flags_width_precision() {
    check_all(&[
        ("{{ printf \"%.2f\" $value }}", "1234.57"),
        ("{{ $value | printf \"%.2f\" }}", "1234.57"),
        ("{{ printf \"%5.1f%%\" 12.345 }}", " 12.3%"),
        ("{{ printf \"%0.2f\" 3.14159 }}", "3.14"),
        ("{{ printf \"%6.2f|%-8.3e|\" 3.14159 1234.5 }}", "  3.14|1.234e+03|"),
        ("{{ printf \"%08.3f\" -3.14159 }}", "-003.142"),
        ("{{ printf \"%+.1f\" 3.14159 }}", "+3.1"),
        ("{{ printf \"%.1f %.0f %.0f\" 0.25 2.5 3.5 }}", "0.2 2 4"),
        ("{{ printf \"%e\" 123456.789 }}", "1.234568e+05"),
        ("{{ printf \"%E\" 0.000123 }}", "1.230000E-04"),
        ("{{ printf \"%g %g %G\" 100000000.0 0.5 1e-7 }}", "1e+08 0.5 1E-07"),
        (
            "{{ printf \"%.3g|%.4g|%.4g\" 1234.5 1000.0 0.000012345 }}",
            "1.23e+03|1000|1.234e-05",
        ),
        ("{{ printf \"%6.2v|\" 3.14159 }}", "   3.1|"),
        ("{{ printf \"%v\" 1e21 }}", "1e+21"),
        ("{{ printf \"%d\" 42 }}", "42"),
        ("{{ printf \"%05d|%-5d|%5d\" -42 7 7 }}", "-0042|7    |    7"),
        ("{{ printf \"%+d|% d|%.3d\" 5 5 5 }}", "+5| 5|005"),
        ("{{ printf \"%x %X %o %b %O\" 255 255 8 5 8 }}", "ff FF 10 101 0o10"),
        ("{{ printf \"%#x %#o\" 255 8 }}", "0xff 010"),
        ("{{ printf \"%c%c\" 72 105 }}", "Hi"),
        ("{{ printf \"%U %#U\" 65 128512 }}", "U+0041 U+1F600 '😀'"),
        ("{{ printf \"%q\" \"a\\\"b\" }}", "\"a\\\"b\""),
        ("{{ printf \"%q\" 'x' }}", "'x'"),
        (
            "{{ printf \"%s|%-6s|%6s|%.2s\" \"x\" \"ab\" \"cd\" \"xyz\" }}",
            "x|ab    |    cd|xy",
        ),
        ("{{ printf \"%x|% x|%X\" \"hi\" \"hi\" \"hi\" }}", "6869|68 69|6869"),
        ("{{ printf \"%t %7t|\" true false }}", "true   false|"),
        ("{{ printf \"%v %v %v\" 1 \"a\" true }}", "1 a true"),
        (
            "{{ printf \"%T %T %T %T\" 1 1.5 \"s\" $labels }}",
            "int float64 string map[string]string",
        ),
        ("{{ printf \"%*d|%-*d|\" 5 42 4 7 }}", "   42|7   |"),
        ("{{ printf \"%[2]d %[1]d\" 1 2 }}", "2 1"),
        ("{{ printf \"100%%\" }}", "100%"),
        ("{{ printf \"%s\" $labels }}", "map[instance:host:9100 job:node]"),
        // Go's error markers.
        ("{{ printf \"%d\" 1.5 }}", "%!d(float64=1.5)"),
        ("{{ printf \"%.2f\" 2 }}", "%!f(int=2)"),
        ("{{ printf \"%s\" 1.5 }}", "%!s(float64=1.5)"),
        ("{{ printf \"%t\" 1 }}", "%!t(int=1)"),
        ("{{ printf \"%z\" \"a\" }}", "%!z(string=a)"),
        ("{{ printf \"%d %d\" 1 }}", "1 %!d(MISSING)"),
        ("{{ printf \"%d\" 1 2 \"x\" }}", "1%!(EXTRA int=2, string=x)"),
        ("{{ printf \"%v|%s\" nil nil }}", "<nil>|%!s(<nil>)"),
        ("{{ printf \"x%\" }}", "x%!(NOVERB)"),
        ("{{ printf \"%[3]d\" 1 }}", "%!d(BADINDEX)"),
        (
            "{{ printf \"%d\" $labels }}",
            "map[%!d(string=instance):%!d(string=host:9100) %!d(string=job):%!d(string=node)]",
        ),
    ]);
}

#[test]
fn print_println_and_escapers() {
    check_all(&[
        ("{{ print 1 2 \"a\" \"b\" 3 }}", "1 2ab3"),
        ("{{ print 1.5 true }}", "1.5 true"),
        ("{{ println 1 \"a\" }}", "1 a\n"),
        (
            "{{ html \"<a href='x'>&\\\"</a>\" }}",
            "&lt;a href=&#39;x&#39;&gt;&amp;&#34;&lt;/a&gt;",
        ),
        ("{{ js \"it's <b>\\n\" }}", "it\\'s \\u003Cb\\u003E\\u000A"),
        ("{{ urlquery \"a b&c/é\" }}", "a+b%26c%2F%C3%A9"),
        ("{{ html 1 2 }}", "1 2"),
        ("{{ \"<b>\" }}", "<b>"),
        ("{{ \"<b>\" | safeHtml }}", "<b>"),
    ]);
}

#[test]
fn humanize_family() {
    check_all(&[
        (
            "{{ range $x := args 0.0 1.0 1234567.0 0.12 }}{{ humanize $x }}:{{ end }}",
            "0:1:1.235M:120m:",
        ),
        (
            "{{ humanize \"0.0\" }}:{{ humanize \"1.0\" }}:{{ humanize \"1234567.0\" }}:{{ humanize \".12\" }}",
            "0:1:1.235M:120m",
        ),
        (
            "{{ humanize 0 }}:{{ humanize -1 }}:{{ humanize 1 }}:{{ humanize 1234567 }}:{{ humanize 9223372036854775807 }}",
            "0:-1:1:1.235M:9.223E",
        ),
        (
            "{{ humanize 0.000001234 }}:{{ humanize -1500 }}:{{ humanize 999.94 }}:{{ humanize 999.95 }}",
            "1.234u:-1.5k:999.9:1000",
        ),
        (
            "{{ humanize1024 0.0 }}:{{ humanize1024 1.0 }}:{{ humanize1024 1048576.0 }}:{{ humanize1024 0.12 }}",
            "0:1:1Mi:0.12",
        ),
        (
            "{{ humanize1024 -1 }}:{{ humanize1024 1234567 }}:{{ humanize1024 9223372036854775807 }}:{{ humanize1024 2048 }}",
            "-1:1.177Mi:8Ei:2ki",
        ),
        ("{{ humanize1024 \"1048576\" }}", "1Mi"),
        (
            "{{ humanizeDuration 0 }}:{{ humanizeDuration 1 }}:{{ humanizeDuration 60 }}:{{ humanizeDuration 3600 }}:{{ humanizeDuration 86400 }}",
            "0s:1s:1m 0s:1h 0m 0s:1d 0h 0m 0s",
        ),
        (
            "{{ humanizeDuration 90000 }}:{{ humanizeDuration -183845 }}:{{ humanizeDuration 899.99 }}",
            "1d 1h 0m 0s:-2d 3h 4m 5s:14m 59s",
        ),
        (
            "{{ humanizeDuration 3661 }}:{{ humanizeDuration 0.1234 }}:{{ humanizeDuration 1234567 }}",
            "1h 1m 1s:123.4ms:14d 6h 56m 7s",
        ),
        (
            "{{ humanizeDuration .1 }}:{{ humanizeDuration .0001 }}:{{ humanizeDuration .12345 }}:{{ humanizeDuration 60.1 }}:{{ humanizeDuration 60.5 }}:{{ humanizeDuration 1.2345 }}:{{ humanizeDuration 12.345 }}",
            "100ms:100us:123.5ms:1m 0s:1m 0s:1.234s:12.35s",
        ),
        (
            "{{ humanizeDuration \".12345\" }}:{{ humanizeDuration \"3600\" }}",
            "123.5ms:1h 0m 0s",
        ),
        (
            "{{ -0.22222 | humanizePercentage }}:{{ 0.0 | humanizePercentage }}:{{ 0.1234567 | humanizePercentage }}:{{ 1.23456 | humanizePercentage }}",
            "-22.22%:0%:12.35%:123.5%",
        ),
        ("{{ humanizePercentage 0.1234 }}:{{ humanizePercentage \"0.5\" }}", "12.34%:50%"),
        (
            "{{ humanizePercentage 1234567 }}:{{ humanizePercentage 9223372036854775807 }}",
            "1.235e+08%:9.223e+20%",
        ),
        ("{{ humanizeTimestamp 1435065584.128 }}", "2015-06-23 13:19:44.128 +0000 UTC"),
        ("{{ \"1435065584.128\" | humanizeTimestamp }}", "2015-06-23 13:19:44.128 +0000 UTC"),
        (
            "{{ humanizeTimestamp 0 }}|{{ humanizeTimestamp -1 }}|{{ humanizeTimestamp 1 }}",
            "1970-01-01 00:00:00 +0000 UTC|1969-12-31 23:59:59 +0000 UTC|1970-01-01 00:00:01 +0000 UTC",
        ),
        (
            "{{ humanizeTimestamp 1234567 }}|{{ humanizeTimestamp 9223372036 }}",
            "1970-01-15 06:56:07 +0000 UTC|2262-04-11 23:47:16 +0000 UTC",
        ),
        (
            "{{ humanizeTimestamp -1.5 }}|{{ humanizeTimestamp 1600000000.5 }}",
            "1969-12-31 23:59:58.5 +0000 UTC|2020-09-13 12:26:40.5 +0000 UTC",
        ),
    ]);
    for (v, want) in [(f64::INFINITY, "+Inf"), (f64::NEG_INFINITY, "-Inf"), (f64::NAN, "NaN")] {
        let text = "{{ humanize . }}:{{ humanize1024 . }}:{{ humanizeDuration . }}:{{ humanizeTimestamp . }}:{{ humanizePercentage . }}";
        assert_eq!(
            ok_v(&format!("{{{{ with $value }}}}{text}{{{{ end }}}}"), v),
            format!("{want}:{want}:{want}:{want}:{want}%")
        );
    }
    assert_eq!(
        ok("{{ humanize \"+Inf\" }}:{{ humanize1024 \"-Inf\" }}:{{ humanizeDuration \"NaN\" }}"),
        "+Inf:-Inf:NaN"
    );
    assert_eq!(
        err("{{ humanize \"one\" }}"),
        format!(
            "template: test:1:{}: executing \"test\" at <humanize \"one\">: error calling humanize: strconv.ParseFloat: parsing \"one\": invalid syntax",
            col(3)
        )
    );
    assert_eq!(
        err("{{ \"one\" | humanizePercentage }}"),
        format!(
            "template: test:1:{}: executing \"test\" at <humanizePercentage>: error calling humanizePercentage: strconv.ParseFloat: parsing \"one\": invalid syntax",
            col(11)
        )
    );
    assert_eq!(
        err("{{ humanizeTimestamp -9223372036854775808 }}"),
        format!(
            "template: test:1:{}: executing \"test\" at <humanizeTimestamp -9...>: error calling humanizeTimestamp: -9.223372036854776e+18 cannot be represented as a nanoseconds timestamp since it overflows int64",
            col(3)
        )
    );
    assert!(err("{{ humanize true }}").ends_with("error calling humanize: can't convert bool to float"));
    assert!(err("{{ humanize $labels }}").ends_with("error calling humanize: can't convert map[string]string to float"));
    assert!(err("{{ humanize \"1e400\" }}").ends_with("strconv.ParseFloat: parsing \"1e400\": value out of range"));
}

#[test]
fn time_and_duration_functions() {
    check_all(&[
        ("{{ (1435065584.128 | toTime).Format \"2006\" }}", "2015"),
        ("{{ (\"1435065584.128\" | toTime).Format \"2006\" }}", "2015"),
        (
            "{{ (toTime 1435065584.128).Format \"Mon Jan _2 15:04:05.000 MST 2006\" }}",
            "Tue Jun 23 13:19:44.128 UTC 2015",
        ),
        (
            "{{ (toTime 1435065584.128).Format \"2006-01-02T15:04:05Z07:00 -0700 3:04PM pm .999 ,000 002 January Monday 06\" }}",
            "2015-06-23T13:19:44Z +0000 1:19PM pm .128 ,128 174 June Tuesday 15",
        ),
        ("{{ toTime 1435065584.128 }}", "2015-06-23 13:19:44.128 +0000 UTC"),
        (
            "{{ (toTime 1435065584).Unix }} {{ (toTime 1435065584.128).UnixMilli }} {{ (toTime 0).Year }}",
            "1435065584 1435065584128 1970",
        ),
        (
            "{{ toDuration 90 }}|{{ toDuration 3600 }}|{{ toDuration 0.0015 }}|{{ toDuration 0 }}|{{ toDuration -1.5 }}",
            "1m30s|1h0m0s|1.5ms|0s|-1.5s",
        ),
        (
            "{{ (toDuration 1.5).Seconds }} {{ (toDuration 90).Minutes }} {{ (toDuration 0.25).Milliseconds }}",
            "1.5 1.5 250",
        ),
        ("{{ now }}", "1.5"),
        ("{{ parseDuration \"1h2m10ms\" }}", "3720.01"),
        ("{{ printf \"%0.2f\" (parseDuration \"1h2m10ms\") }}", "3720.01"),
        (
            "{{ parseDuration \"1w\" }} {{ parseDuration \"0\" }} {{ parseDuration \"1y\" }}",
            "604800 0 3.1536e+07",
        ),
    ]);
    assert!(err("{{ parseDuration \"5x\" }}").ends_with("error calling parseDuration: unknown unit \"x\" in duration \"5x\""));
    assert!(err("{{ parseDuration \"1m1h\" }}").ends_with("error calling parseDuration: not a valid duration string: \"1m1h\""));
    assert!(err("{{ parseDuration \"\" }}").ends_with("error calling parseDuration: empty duration string"));
    assert!(err("{{ toTime \"NaN\" }}").ends_with("error calling toTime: value is NaN or Inf"));
    assert!(err("{{ (toTime 1).Nosuch }}").ends_with("can't evaluate field Nosuch in type *time.Time"));
}

#[test]
fn string_functions() {
    check_all(&[
        ("{{ \"aa bb CC\" | title }}", "Aa Bb CC"),
        (
            "{{ title \"hello-world foo_bar it's 3rd x.y\" }}",
            "Hello-World Foo_bar It's 3Rd X.y",
        ),
        ("{{ \"aa bb CC\" | toUpper }}", "AA BB CC"),
        ("{{ \"aA bB CC\" | toLower }}", "aa bb cc"),
        ("{{ toUpper \"straße\" }}", "STRAßE"),
        (
            "{{ match \"a+\" \"aa\" }} {{ match \"a+\" \"b\" }} {{ match \"^node\" $labels.job }}",
            "true false true",
        ),
        ("{{ reReplaceAll \"(a)b\" \"x$1\" \"ab\" }}", "xa"),
        (
            "{{ reReplaceAll \"localhost:(.*)\" \"my.domain:$1\" \"localhost:3000\" }}",
            "my.domain:3000",
        ),
        ("{{ reReplaceAll \":[0-9]+$\" \"\" $labels.instance }}", "host"),
        (
            "{{ reReplaceAll \"(?P<h>[a-z]+):(\\\\d+)\" \"${2}@$h $$\" $labels.instance }}",
            "9100@host $",
        ),
        ("{{ graphLink \"up\" }}", "/graph?g0.expr=up&g0.tab=0"),
        ("{{ tableLink \"up\" }}", "/graph?g0.expr=up&g0.tab=1"),
        (
            "{{ graphLink \"rate(x[5m]) > 0\" }}",
            "/graph?g0.expr=rate%28x%5B5m%5D%29+%3E+0&g0.tab=0",
        ),
        ("{{ pathPrefix }}", "/path/prefix"),
        ("{{ externalURL }}", "http://testhost:9090/path/prefix"),
        ("{{ $labels.instance | stripPort }}", "host"),
    ]);
    for (input, port, domain) in [
        ("foo.example.com", "foo.example.com", "foo"),
        ("foo.example.com:12345", "foo.example.com", "foo:12345"),
        ("192.0.2.1", "192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:12345", "192.0.2.1", "192.0.2.1:12345"),
        ("2001:0DB8::1", "2001:0DB8::1", "2001:0DB8::1"),
        ("[2001:0DB8::1]:12345", "2001:0DB8::1", "[2001:0DB8::1]:12345"),
        ("[2001:0DB8::1]::12345", "[2001:0DB8::1]::12345", "[2001:0DB8::1]::12345"),
    ] {
        assert_eq!(ok(&format!("{{{{ {:?} | stripPort }}}}", input)), port, "stripPort {input}");
        assert_eq!(ok(&format!("{{{{ {:?} | stripDomain }}}}", input)), domain, "stripDomain {input}");
    }
    assert!(err("{{ match \"(\" \"x\" }}").contains("error calling match: error parsing regexp: "));
    assert!(
        err("{{ reReplaceAll \"(\" \"\" \"x\" }}").contains("error calling reReplaceAll: regexp: Compile(`(`): error parsing regexp: ")
    );
}

#[test]
fn query_functions() {
    check_all(&[
        ("{{ with query \"up\" }}{{ . | first | value | humanize }}{{ end }}", "1.235M"),
        (
            "{{ with query \"empty\" }}{{ . | first | value | humanize }}{{ else }}no data{{ end }}",
            "no data",
        ),
        (
            "{{ range query \"x\" }}{{ .Labels.instance }} {{ .Value }};{{ end }}",
            "b 21;a 11;d 4;c 3;",
        ),
        (
            "{{ range query \"x\" | sortByLabel \"instance\" }}{{ .Labels.instance }}:{{ .Value }}: {{ end }}",
            "a:11: b:21: c:3: d:4: ",
        ),
        ("{{ query \"1.5\" | first | value }}", "1.5"),
        ("{{ query \"x\" | first | label \"instance\" }}", "b"),
        ("[{{ query \"x\" | first | label \"foo\" }}]", "[]"),
        ("{{ $x := query \"x\" | first }}[{{ $x.Labels.foo }}]", "[]"),
        ("{{ range query \"x\" }}{{ strvalue . }},{{ end }}", ",,four,,"),
        ("{{ len (query \"x\") }} {{ (index (query \"x\") 2).Value }}", "4 4"),
        (
            "{{ range $i, $s := query \"x\" }}{{ $i }}={{ $s.Value }} {{ end }}",
            "0=21 1=11 2=4 3=3 ",
        ),
        (
            "{{ with printf \"up{instance=%q}\" $labels.instance | query }}{{ . | first | value }}{{ end }}",
            "0",
        ),
        ("{{ query \"x\" | first }}", "&{map[instance:b] 21}"),
    ]);
    assert_eq!(
        err("{{ query \"missing\" | first }}"),
        format!(
            "template: test:1:{}: executing \"test\" at <first>: error calling first: first() called on vector with no elements",
            col(21)
        )
    );
    assert_eq!(
        err("{{ (query \"missing\").banana }}"),
        format!(
            "template: test:1:{}: executing \"test\" at <\"missing\">: can't evaluate field banana in type template.queryResult",
            col(10)
        )
    );
    assert!(err("{{ query \"bad\" }}").ends_with("error calling query: 1:1: parse error: unexpected end of input"));
    let no_query = exec_full("{{ query \"up\" }}", 1.0, &BTreeMap::new(), None);
    assert!(no_query.is_err_and(|e| e.message.ends_with("error calling query: queries are not allowed in this template")));
    assert_eq!(exec_full("{{ $value }}", 1.0, &BTreeMap::new(), None), Ok("1".to_string()));
}

#[test]
fn control_structures() {
    check_all(&[
        (
            "{{ if gt $value 1000.0 }}big{{ else if gt $value 10.0 }}mid{{ else }}small{{ end }}",
            "big",
        ),
        (
            "{{ if lt $value 1000.0 }}small{{ else if lt $value 2000.0 }}mid{{ else }}big{{ end }}",
            "mid",
        ),
        ("{{ if eq $labels.job \"node\" }}yes{{ else }}no{{ end }}", "yes"),
        ("{{ if eq $labels.job \"a\" \"b\" \"node\" }}any{{ end }}", "any"),
        ("{{ if ne $labels.job \"node\" }}x{{ else }}same{{ end }}", "same"),
        ("{{ if and (ge $value 1.0) (le $value 2000.0) }}in{{ end }}", "in"),
        (
            "{{ if 0 }}a{{ end }}{{ if \"\" }}b{{ end }}{{ if 0.0 }}c{{ end }}{{ if $externalLabels }}d{{ end }}{{ if true }}e{{ end }}{{ if $labels }}f{{ end }}",
            "ef",
        ),
        (
            "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
            "instance=host:9100;job=node;",
        ),
        ("{{ range $labels }}{{ . }},{{ end }}", "host:9100,node,"),
        ("{{ range $externalLabels }}x{{ else }}none{{ end }}", "none"),
        (
            "{{ range $i, $e := query \"x\" }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ if eq $i 3 }}{{ break }}{{ end }}{{ $i }}{{ end }}",
            "02",
        ),
        ("{{ range 3 }}{{ . }}{{ end }}", "012"),
        (
            "{{ with $labels.nosuch }}A{{ else with $labels.job }}B{{ . }}{{ else }}C{{ end }}",
            "Bnode",
        ),
        ("{{ with $labels.nosuch }}A{{ else }}C{{ end }}", "C"),
        ("{{ with $x := $labels.job }}{{ $x }}/{{ . }}{{ end }}", "node/node"),
        (
            "{{ and 1 0 }} {{ and 1 2 }} {{ or 0 \"\" \"x\" }} {{ or 0 \"\" }} {{ not 0 }} {{ not \"a\" }}",
            "0 2 x  true false",
        ),
        // and/or short-circuit: the failing index is never evaluated.
        ("{{ or 1 (index $labels 5) }}", "1"),
        (
            "{{ lt \"a\" \"b\" }} {{ gt 2 1 }} {{ le 2 2 }} {{ ge 1.5 2.5 }} {{ eq 1 1 }} {{ eq true false }}",
            "true true true false true false",
        ),
        (
            "{{ len $labels }} {{ len \"abc\" }} {{ slice \"abcdef\" 1 3 }} {{ index \"abc\" 1 }}",
            "2 3 bc 98",
        ),
    ]);
    assert!(err("{{ if gt $value 0 }}x{{ end }}").ends_with("error calling gt: incompatible types for comparison"));
    assert!(err("{{ if eq $value \"1\" }}x{{ end }}").ends_with("error calling eq: incompatible types for comparison"));
    assert!(err("{{ lt true false }}").ends_with("error calling lt: invalid type for comparison"));
    assert!(err("{{ eq 1 }}").ends_with("error calling eq: missing argument for comparison"));
    assert!(err("{{ index (query \"x\") 5 }}").ends_with("error calling index: index out of range: 5"));
    assert!(err("{{ index (query \"x\") 4 }}").ends_with("error calling index: reflect: slice index out of range"));
    assert!(err("{{ index $labels 1 }}").ends_with("error calling index: value has type int; should be string"));
    assert!(err("{{ range 1.5 }}{{ end }}").ends_with("range can't iterate over 1.5"));
    assert!(err("{{ len 3 }}").ends_with("error calling len: len of type int"));
}

#[test]
fn variables_pipelines_and_literals() {
    check_all(&[
        ("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", "2"),
        (
            "{{ $x := \"outer\" }}{{ if true }}{{ $x := \"inner\" }}{{ $x }}{{ end }} {{ $x }}",
            "inner outer",
        ),
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", "2"),
        ("{{ $v := $value }}{{ $value := 5 }}{{ $value }} {{ $v }}", "5 1234.5678"),
        ("{{ \"hello\" | printf \"%s world\" }}", "hello world"),
        ("{{ $value | printf \"%.1f\" | printf \"[%s]\" }}", "[1234.6]"),
        ("{{ printf \"%s-%s\" (index $labels \"job\") (\"x\" | toUpper) }}", "node-X"),
        ("{{ (printf \"%s\" \"a\") }}", "a"),
        ("{{ `a\\nb` }}", "a\\nb"),
        ("{{ \"a\\tb\\u00e9\\x41\\101\" }}", "a\tbéAA"),
        ("{{ 'a' }} {{ '\\n' }}", "97 10"),
        (
            "{{ 0x1F }} {{ 1_000 }} {{ 1e3 }} {{ -2.50 }} {{ 0o17 }} {{ 017 }} {{ 0b101 }} {{ +7 }} {{ .5 }}",
            "31 1000 1000 -2.5 15 15 5 7 0.5",
        ),
        ("{{ true }} {{ false }}", "true false"),
    ]);
}

#[test]
fn trim_markers_and_comments() {
    check_all(&[
        ("a  {{- 1 -}}  b", "a1b"),
        ("a \n\t{{- 1 }} b", "a1 b"),
        ("a {{ 1 -}} \n b", "a 1b"),
        ("{{ 3 }} {{- 4 }}", "34"),
        ("a{{/* comment */}}b", "ab"),
        ("a {{- /* comment */ -}} \n b", "ab"),
        ("x\n  {{- /* multi\nline */ -}}\n  y", "xy"),
        ("{{- $value -}}", "1234.5678"),
        ("a{{-3}}b", "a-3b"),
        ("{{ if true -}}\n  yes\n{{- end }}", "yes"),
    ]);
}

#[test]
fn define_template_block() {
    check_all(&[
        ("{{ define \"t\" }}[{{ . }}]{{ end }}{{ template \"t\" $labels.job }}", "[node]"),
        ("{{define \"x\"}}{{.arg0}} {{.arg1}}{{end}}{{template \"x\" (args 1 \"2\")}}", "1 2"),
        ("{{ block \"b\" $value }}<{{ . }}>{{ end }}", "<1234.5678>"),
        ("{{ define \"n\" }}{{ . }}{{ end }}{{ template \"n\" }}", "<no value>"),
        ("{{ define \"t\" }}{{ $ }}{{ end }}{{ template \"t\" 5 }}", "5"),
    ]);
    assert_eq!(
        err("{{ define \"x\" }}{{ humanize \"bad\" }}{{ end }}{{ template \"x\" }}"),
        format!(
            "template: test:1:{}: executing \"x\" at <humanize \"bad\">: error calling humanize: strconv.ParseFloat: parsing \"bad\": invalid syntax",
            col(19)
        )
    );
    assert!(err("{{ template \"nosuch\" }}").ends_with("template \"nosuch\" not defined"));
    assert!(
        err("{{ define \"r\" }}{{ template \"r\" . }}{{ end }}{{ template \"r\" }}").ends_with("exceeded maximum template depth (100)")
    );
    // Templates do not see the caller's variables.
    assert_eq!(
        Template::parse("test", "{{ define \"t\" }}{{ $labels }}{{ end }}").map(|_| ()),
        Err(TemplateError {
            message: "template: test:1: undefined variable \"$labels\"".into()
        })
    );
}

#[test]
fn parse_errors_name_the_place() {
    let parse_err = |text: &str| match Template::parse("__alert_HighLatency", text) {
        Ok(_) => panic!("{text:?}: expected a parse error"),
        Err(e) => e.message,
    };
    let cases: &[(&str, &str)] = &[
        ("{{", "template: __alert_HighLatency:1: unclosed action"),
        ("{{ foo }}", "template: __alert_HighLatency:1: function \"foo\" not defined"),
        (
            "a\nb\n{{ nosuch 1 }}",
            "template: __alert_HighLatency:3: function \"nosuch\" not defined",
        ),
        ("line1\n{{ if true }}x", "template: __alert_HighLatency:2: unexpected EOF"),
        ("{{ end }}", "template: __alert_HighLatency:1: unexpected {{end}}"),
        ("{{ else }}", "template: __alert_HighLatency:1: unexpected {{else}}"),
        ("{{ $x }}", "template: __alert_HighLatency:1: undefined variable \"$x\""),
        (
            "{{ 1 | 2 }}",
            "template: __alert_HighLatency:1: non executable command in pipeline stage 2",
        ),
        (
            "{{ \"unterminated }}",
            "template: __alert_HighLatency:1: unterminated quoted string",
        ),
        ("{{/* x }}", "template: __alert_HighLatency:1: unclosed comment"),
        (
            "{{/* x */ 1 }}",
            "template: __alert_HighLatency:1: comment ends before closing delimiter",
        ),
        ("{{ range }}{{ end }}", "template: __alert_HighLatency:1: missing value for range"),
        ("{{ if }}{{ end }}", "template: __alert_HighLatency:1: missing value for if"),
        ("{{ break }}", "template: __alert_HighLatency:1: {{break}} outside {{range}}"),
        ("{{ $labels.foo-bar }}", "template: __alert_HighLatency:1: bad character U+002D '-'"),
        ("{{ 1-2 }}", "template: __alert_HighLatency:1: bad number syntax: \"1-2\""),
        (
            "{{ \u{a0}}}",
            "template: __alert_HighLatency:1: unrecognized character in action: U+00A0",
        ),
        (
            "{{ $value\n",
            "template: __alert_HighLatency:2: unclosed action started at __alert_HighLatency:1",
        ),
        ("{{ (1 }}", "template: __alert_HighLatency:1: unclosed left paren"),
        ("{{ 1) }}", "template: __alert_HighLatency:1: unexpected right paren"),
        ("{{ $x=1 }}", "template: __alert_HighLatency:1: bad character U+003D '='"),
        ("{{ .Labels. }}", "template: __alert_HighLatency:1: unexpected <.> in operand"),
        (
            "{{ if true }}{{ else }}{{ else }}{{ end }}",
            "template: __alert_HighLatency:1: expected end; found {{else}}",
        ),
        (
            "{{ range $a, $b, $c := . }}{{ end }}",
            "template: __alert_HighLatency:1: too many declarations in range",
        ),
        ("{{ \"\\q\" }}", "template: __alert_HighLatency:1: invalid syntax"),
        ("{{ 08 }}", "template: __alert_HighLatency:1: integer overflow: \"08\""),
        (
            "{{ 99999999999999999999 }}",
            "template: __alert_HighLatency:1: integer overflow: \"99999999999999999999\"",
        ),
        (
            "{{ define \"a\" }}x{{ end }}{{ define \"a\" }}y{{ end }}",
            "template: __alert_HighLatency:1: template: multiple definition of template \"a\"",
        ),
        (
            "{{ tmpl \"a\" . }}",
            "template: __alert_HighLatency:1: function \"tmpl\" not defined",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_err(text), *want, "template {text:?}");
    }
    let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    assert!(parse_err(&format!("{{{{ {deep} }}}}")).ends_with("expression nested too deeply"));
}

#[test]
fn execution_errors_name_the_place() {
    assert_eq!(
        err("x\n  {{ humanize \"one\" }}"),
        "template: test:2:5: executing \"test\" at <humanize \"one\">: error calling humanize: strconv.ParseFloat: parsing \"one\": invalid syntax"
    );
    assert_eq!(
        err("{{ humanize 1 2 }}"),
        format!(
            "template: test:1:{}: executing \"test\" at <humanize>: wrong number of args for humanize: want 1 got 2",
            col(3)
        )
    );
    assert!(err("{{ label \"x\" }}").ends_with("at <label>: wrong number of args for label: want 2 got 1"));
    assert!(err("{{ printf }}").ends_with("wrong number of args for printf: want at least 1 got 0"));
    assert!(err("{{ $labels.instance.foo }}").ends_with("can't evaluate field foo in type string"));
    assert_eq!(
        err("{{ .Nosuch }}"),
        format!(
            "template: test:1:{}: executing \"test\" at <.Nosuch>: can't evaluate field Nosuch in type {DATA_TYPE}",
            col(3)
        )
    );
    assert!(err("{{ first \"x\" }}").ends_with("at <\"x\">: can't handle \"x\" for arg of type template.queryResult"));
    assert!(err("{{ toUpper 1 }}").ends_with("at <1>: expected string; found 1"));
    assert!(err("{{ $value | toUpper }}").ends_with("wrong type for value; expected string; got float64"));
    assert!(err("{{ $labels 1 }}").ends_with("can't give argument to non-function $labels"));
    assert!(err("{{ $labels.job 1 }}").ends_with("job is not a method but has arguments"));
    assert!(err("{{ .Value 1 }}").ends_with("Value has arguments but cannot be invoked as function"));
    assert!(err("{{ nil }}").ends_with("nil is not a command"));
    assert!(err("{{ call 1 }}").ends_with("error calling call: non-function of type int"));
    // Long contexts are cut at 20 characters, as Go does.
    assert!(err("{{ humanize \"aaaaaaaaaaaaaaaaaaaaaaaaa\" }}").contains("at <humanize \"aaaaaaaaaa...>"));
}

#[test]
fn deep_nesting_fails_cleanly_on_a_small_stack() {
    let parens = format!("{}1{}", "(".repeat(95), ")".repeat(95));
    let text = format!(
        "{{{{ define \"r\" }}}}{{{{ if true }}}}{{{{ print {parens} }}}}{{{{ template \"r\" . }}}}{{{{ end }}}}{{{{ end }}}}{{{{ template \"r\" . }}}}"
    );
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || exec(&text, 1.0).map_err(|e| e.message));
    let res = handle.expect("spawn").join().expect("no stack overflow");
    assert!(res.is_err_and(|e| e.ends_with("template nested too deeply")));
    // A large range does not materialise its elements.
    assert_eq!(
        ok("{{ range $i := 100000000000 }}{{ if eq $i 3 }}{{ break }}{{ end }}{{ $i }}{{ end }}"),
        "012"
    );
}

#[test]
fn parsed_template_is_reusable() {
    let t = match Template::parse("__alert_X", "{{ $labels.instance }} is at {{ $value | humanizePercentage }}") {
        Ok(t) => t,
        Err(e) => panic!("{}", e.message),
    };
    let ext = BTreeMap::new();
    for (inst, v, want) in [("a", 0.5, "a is at 50%"), ("b", 0.1234, "b is at 12.34%")] {
        let l = labels(&[("instance", inst)]);
        let data = TemplateData {
            labels: &l,
            external_labels: &ext,
            external_url: "",
            value: v,
        };
        assert_eq!(t.execute(&data, None, 0), Ok(want.to_string()));
    }
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Template>();
    assert_send_sync::<TemplateError>();
}
