// csoc-watch console: self-refresh of the fleet grid, silences, charts and
// Explore. No dependency but uPlot (loaded by the pages that draw charts).
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function api(method, url, body) {
    var opt = { method: method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
    if (body !== undefined) {
      opt.headers["Content-Type"] = "application/json";
      opt.body = JSON.stringify(body);
    }
    return fetch(url, opt).then(function (r) {
      return r.text().then(function (t) {
        var j = null;
        try { j = t ? JSON.parse(t) : null; } catch (e) { j = t; }
        if (!r.ok) {
          var m = (j && (j.error || (typeof j === "string" ? j : null))) || ("HTTP " + r.status);
          throw new Error(m);
        }
        return j;
      });
    });
  }

  // Fleet: replace the grid every few seconds, keeping keyboard focus.
  var fleet = document.getElementById("fleet");
  if (fleet) {
    var every = parseInt(fleet.getAttribute("data-refresh"), 10) || 5000;
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) return;
      busy = true;
      fetch("/?partial=1", { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      }).then(function (h) {
        var a = document.activeElement, key = null;
        if (a && a.getAttribute && a.getAttribute("data-service")) {
          key = [a.getAttribute("data-commons"), a.getAttribute("data-service")];
        }
        var sc = fleet.querySelector(".scroll"), left = sc ? sc.scrollLeft : 0;
        fleet.innerHTML = h;
        var sc2 = fleet.querySelector(".scroll");
        if (sc2) sc2.scrollLeft = left;
        if (key) {
          var cells = fleet.querySelectorAll("td[data-service]");
          for (var i = 0; i < cells.length; i++) {
            if (cells[i].getAttribute("data-commons") === key[0] && cells[i].getAttribute("data-service") === key[1]) { cells[i].focus(); break; }
          }
        }
      }).catch(function () {}).then(function () { busy = false; });
    }, every);
  }

  // Alerts: create and expire silences.
  var DUR = { m: 60, h: 3600, d: 86400, w: 604800 };
  function parseMatcher(s) {
    var m = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$/.exec(s);
    if (!m) throw new Error("not a matcher: " + s);
    var v = m[3];
    if (v.charAt(0) === '"') v = JSON.parse(v);
    return { name: m[1], value: v, isRegex: m[2] === "=~" || m[2] === "!~", isEqual: m[2] === "=" || m[2] === "=~" };
  }
  var form = document.getElementById("silence-form");
  if (form) {
    var msg = document.getElementById("sf-msg");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      try {
        var lines = form.matchers.value.split("\n").filter(function (l) { return l.trim() !== ""; });
        var d = /^(\d+)([mhdw])$/.exec(form.duration.value.trim());
        if (!d) throw new Error("duration: a number and m, h, d or w (2h)");
        var now = new Date();
        var body = {
          matchers: lines.map(parseMatcher),
          startsAt: now.toISOString(),
          endsAt: new Date(now.getTime() + parseInt(d[1], 10) * DUR[d[2]] * 1000).toISOString(),
          createdBy: form.author.value,
          comment: form.comment.value
        };
      } catch (e) { msg.textContent = e.message; return; }
      msg.textContent = "Creating…";
      api("POST", "/api/v2/silences", body).then(function (r) {
        msg.textContent = "Silence " + r.silenceID + " created.";
        setTimeout(function () { location.reload(); }, 600);
      }).catch(function (e) { msg.textContent = "Not created: " + e.message; });
    });
    document.addEventListener("click", function (ev) {
      var b = ev.target.closest ? ev.target.closest("button.silence-this") : null;
      if (!b) return;
      form.matchers.value = b.getAttribute("data-matchers");
      form.comment.focus();
      form.scrollIntoView({ block: "center" });
    });
  }
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest ? ev.target.closest("button.expire") : null;
    if (!b) return;
    b.disabled = true;
    api("DELETE", "/api/v2/silence/" + encodeURIComponent(b.getAttribute("data-id"))).then(function () {
      location.reload();
    }).catch(function (e) { b.disabled = false; alert("Not expired: " + e.message); });
  });

  // Charts.
  var RANGES = { "5m": 300, "15m": 900, "1h": 3600, "3h": 10800, "6h": 21600, "12h": 43200, "24h": 86400, "2d": 172800, "7d": 604800, "30d": 2592000 };
  var COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#0a7ea4", "#e16f24", "#6e7781", "#bc4c00", "#4b53bc"];
  function seriesName(m) {
    var keys = Object.keys(m).filter(function (k) { return k !== "__name__"; });
    var inner = keys.map(function (k) { return k + '="' + m[k] + '"'; }).join(", ");
    return (m.__name__ || "") + (inner ? "{" + inner + "}" : (m.__name__ ? "" : "{}"));
  }
  function fmtVal(unit) {
    return function (u, v) {
      if (v == null) return "–";
      if (unit === "%") return (v * 100).toFixed(1) + "%";
      var a = Math.abs(v), s;
      if (a >= 1e15) s = +(v / 1e15).toPrecision(4) + "P"; else if (a >= 1e12) s = +(v / 1e12).toPrecision(4) + "T";
      else if (a >= 1e9) s = +(v / 1e9).toPrecision(4) + "G"; else if (a >= 1e6) s = +(v / 1e6).toPrecision(4) + "M";
      else if (a >= 1e4) s = +(v / 1e3).toPrecision(4) + "k"; else s = +v.toPrecision(4) + "";
      return s + (unit && unit !== "%" ? (unit === "/s" ? unit : " " + unit) : "");
    };
  }
  // Legend names: the labels that differ between the series (all of
  // them when there is one series).
  function shortNames(result) {
    if (result.length < 2) return result.map(function (s) { return seriesName(s.metric); });
    var vary = {};
    result.forEach(function (s) {
      Object.keys(s.metric).forEach(function (k) {
        if (s.metric[k] !== result[0].metric[k]) vary[k] = 1;
      });
      Object.keys(result[0].metric).forEach(function (k) {
        if (s.metric[k] !== result[0].metric[k]) vary[k] = 1;
      });
    });
    var keys = Object.keys(vary).sort();
    return result.map(function (s) {
      if (!keys.length) return seriesName(s.metric);
      return keys.map(function (k) { return k + "=" + (s.metric[k] === undefined ? "" : s.metric[k]); }).join(", ");
    });
  }
  function draw(el, result, unit, height, span) {
    el.innerHTML = "";
    if (!result || !result.length) { el.innerHTML = '<p class="empty">No data.</p>'; return null; }
    if (typeof uPlot === "undefined") { el.innerHTML = '<p class="empty">Charts need uPlot.</p>'; return null; }
    var ts = {};
    result.forEach(function (s) { s.values.forEach(function (p) { ts[p[0]] = 1; }); });
    var xs = Object.keys(ts).map(Number).sort(function (a, b) { return a - b; });
    var idx = {};
    xs.forEach(function (t, i) { idx[t] = i; });
    var data = [xs];
    var series = [{}];
    var names = shortNames(result);
    result.slice(0, 50).forEach(function (s, i) {
      var ys = new Array(xs.length).fill(null);
      s.values.forEach(function (p) { ys[idx[p[0]]] = parseFloat(p[1]); });
      data.push(ys);
      series.push({ label: names[i], stroke: COLORS[i % COLORS.length], width: 1.5, value: fmtVal(unit), spanGaps: false });
    });
    var w = Math.max(240, el.clientWidth || el.parentNode.clientWidth || 400);
    var opts = {
      width: w, height: height || 200, series: series,
      scales: { x: { time: true, range: function (u, mn, mx) { return span ? [span[0], span[1]] : [mn, mx]; } } },
      axes: [{}, { values: function (u, vals) { return vals.map(function (v) { return fmtVal(unit)(u, v); }); }, size: 80 }],
      cursor: { drag: { x: true, y: false } },
      legend: { live: true }
    };
    var plot = new uPlot(opts, data, el);
    return plot;
  }
  function rangeQuery(q, rng, step) {
    var secs = RANGES[rng] || 3600;
    var end = Date.now() / 1000, start = end - secs;
    var st = step || Math.max(15, Math.round(secs / 240));
    var u = "/api/v1/query_range?query=" + encodeURIComponent(q) + "&start=" + start.toFixed(3) + "&end=" + end.toFixed(3) + "&step=" + st;
    return api("GET", u).then(function (r) { var res = r.data.result; res.span = [start, end]; return res; });
  }
  var charts = document.querySelectorAll("figure.chart");
  Array.prototype.forEach.call(charts, function (f) {
    var el = f.querySelector(".plot");
    rangeQuery(f.getAttribute("data-query"), f.getAttribute("data-range")).then(function (res) {
      draw(el, res, f.getAttribute("data-unit"), 180, res.span);
    }).catch(function (e) { el.innerHTML = '<p class="empty"></p>'; el.firstChild.textContent = "Query failed: " + e.message; });
  });

  // Explore.
  var xf = document.getElementById("explore");
  if (xf) {
    var q = document.getElementById("q"), sug = document.getElementById("suggest"), xmsg = document.getElementById("x-msg");
    var names = [], labels = [], sel = -1, items = [];
    api("GET", "/api/v1/label/__name__/values").then(function (r) { names = r.data || []; }).catch(function () {});
    api("GET", "/api/v1/labels").then(function (r) { labels = (r.data || []).filter(function (l) { return l !== "__name__"; }); }).catch(function () {});
    function word() {
      var before = q.value.slice(0, q.selectionStart);
      var m = /[a-zA-Z_:][a-zA-Z0-9_:]*$/.exec(before);
      return m ? m[0] : "";
    }
    function close() { sug.hidden = true; q.setAttribute("aria-expanded", "false"); sel = -1; items = []; }
    function show() {
      var w = word();
      if (w.length < 2) { close(); return; }
      var lw = w.toLowerCase();
      items = [];
      names.forEach(function (n) { if (n.toLowerCase().indexOf(lw) === 0 && n !== w) items.push([n, "metric"]); });
      labels.forEach(function (n) { if (n.toLowerCase().indexOf(lw) === 0 && n !== w) items.push([n, "label"]); });
      names.forEach(function (n) { if (n.toLowerCase().indexOf(lw) > 0) items.push([n, "metric"]); });
      items = items.slice(0, 12);
      if (!items.length) { close(); return; }
      sug.innerHTML = "";
      items.forEach(function (it, i) {
        var li = document.createElement("li");
        li.id = "sg" + i; li.setAttribute("role", "option");
        li.textContent = it[0];
        var sm = document.createElement("small"); sm.textContent = it[1]; li.appendChild(sm);
        li.addEventListener("mousedown", function (e) { e.preventDefault(); accept(i); });
        sug.appendChild(li);
      });
      sel = 0; mark();
      sug.hidden = false; q.setAttribute("aria-expanded", "true");
    }
    function mark() {
      Array.prototype.forEach.call(sug.children, function (li, i) { li.setAttribute("aria-selected", i === sel ? "true" : "false"); });
      if (sel >= 0) q.setAttribute("aria-activedescendant", "sg" + sel); else q.removeAttribute("aria-activedescendant");
    }
    function accept(i) {
      var w = word(), pos = q.selectionStart;
      q.value = q.value.slice(0, pos - w.length) + items[i][0] + q.value.slice(pos);
      var np = pos - w.length + items[i][0].length;
      q.setSelectionRange(np, np);
      close();
    }
    q.addEventListener("input", show);
    q.addEventListener("blur", function () { setTimeout(close, 100); });
    q.addEventListener("keydown", function (e) {
      if (!sug.hidden && items.length) {
        if (e.key === "ArrowDown") { sel = (sel + 1) % items.length; mark(); e.preventDefault(); return; }
        if (e.key === "ArrowUp") { sel = (sel - 1 + items.length) % items.length; mark(); e.preventDefault(); return; }
        if (e.key === "Tab" || (e.key === "Enter" && sel >= 0)) { accept(sel); e.preventDefault(); return; }
        if (e.key === "Escape") { close(); e.preventDefault(); return; }
      }
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); xf.requestSubmit ? xf.requestSubmit() : xf.submit(); }
    });
    var graph = document.getElementById("graph"), tbody = document.querySelector("#x-table tbody");
    function run() {
      var query = q.value.trim();
      if (!query) return;
      var rng = document.getElementById("range").value, step = document.getElementById("step").value.trim();
      xmsg.textContent = "Running…";
      var t0 = Date.now();
      var inst = api("GET", "/api/v1/query?query=" + encodeURIComponent(query)).then(function (r) {
        tbody.innerHTML = "";
        var res = r.data.result, type = r.data.resultType;
        if (type === "scalar" || type === "string") res = [{ metric: {}, value: res }];
        (res || []).slice(0, 1000).forEach(function (s) {
          var tr = document.createElement("tr"), a = document.createElement("td"), b = document.createElement("td");
          a.textContent = seriesName(s.metric || {});
          b.textContent = s.value ? s.value[1] : (s.values ? s.values.length + " points" : "");
          tr.appendChild(a); tr.appendChild(b); tbody.appendChild(tr);
        });
        if (!res || !res.length) tbody.innerHTML = '<tr><td colspan="2">Empty result.</td></tr>';
        return res ? res.length : 0;
      });
      var rg = rangeQuery(query, rng, step).then(function (res) { draw(graph, res, "", 320, res.span); return res.length; });
      Promise.all([inst, rg]).then(function (n) {
        xmsg.textContent = n[0] + " series, " + n[1] + " in the graph, " + (Date.now() - t0) + " ms.";
        graph.setAttribute("data-series", String(n[1]));
      }).catch(function (e) { xmsg.textContent = "Error: " + e.message; });
    }
    xf.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var p = new URLSearchParams();
      p.set("q", q.value.trim());
      p.set("range", document.getElementById("range").value);
      var step = document.getElementById("step").value.trim();
      if (step) p.set("step", step);
      history.replaceState(null, "", "/explore?" + p.toString());
      run();
    });
    if (q.value.trim()) run();
  }
})();
