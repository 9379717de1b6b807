// Browser tests of the csoc-watch console: playwright-core driving Debian's
// chromium headless. Started by tests/tests/console.rs, which runs the
// collector, two fake commons with their agents and a webhook sink, and
// checks amtool and the webhook afterwards. Inputs (environment):
//   CSOC_URL            collector base URL
//   CSOC_WRITE_TOKEN    a token with role write (unscoped)
//   CSOC_SCOPED_TOKEN   a read token scoped to commons alpha
//   CSOC_FAKE_ALPHA     base URL of alpha's fake Gen3
//   CSOC_XSS_SERVICE    a hostile service label value stored for alpha
//   CSOC_SHOTS          directory for the screenshots
//   CSOC_RESULT         file to write the results (JSON) to
//   CHROMIUM            the browser (default /usr/bin/chromium)
// Prints one line per check; exits non-zero on the first failure.
import { chromium } from "playwright-core";
import { writeFileSync, mkdirSync } from "node:fs";

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env("CSOC_URL");
const WRITE = env("CSOC_WRITE_TOKEN");
const SCOPED = env("CSOC_SCOPED_TOKEN");
const FAKE = env("CSOC_FAKE_ALPHA");
const XSS = env("CSOC_XSS_SERVICE");
const SHOTS = env("CSOC_SHOTS");
const RESULT = env("CSOC_RESULT");
mkdirSync(SHOTS, { recursive: true });

const result = { checks: [], shots: [] };
const ok = (what, extra) => {
  result.checks.push(what);
  console.log(`ok - ${what}${extra ? ` (${extra})` : ""}`);
};
function assert(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
}

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
});
const errors = [];
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("dialog", (d) => { errors.push(`dialog: ${d.message()}`); d.dismiss(); });
  page.setDefaultTimeout(20000);

  // Screenshots at 1280 px (this page) and 390 px (a phone page of the
  // same session).
  const phone = await ctx.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  phone.on("pageerror", (e) => errors.push(`390px: ${e}`));
  // Headless chromium paints only the tab in front: bring each to the
  // front before its screenshot.
  async function shots(name, path, waitFor) {
    await page.bringToFront();
    await page.screenshot({ path: `${SHOTS}/${name}-1280.png`, fullPage: true });
    await phone.bringToFront();
    await phone.goto(BASE + path);
    if (waitFor) await waitFor(phone);
    await phone.screenshot({ path: `${SHOTS}/${name}-390.png`, fullPage: true });
    await page.bringToFront();
    result.shots.push(`${name}-1280.png`, `${name}-390.png`);
  }

  // Sign in: the token becomes an HttpOnly, SameSite=Strict cookie.
  await page.goto(BASE + "/");
  assert(page.url().includes("/login"), "an anonymous visit goes to the login page");
  await page.fill("#token", "not-a-token");
  await page.click("form.login button");
  assert((await page.textContent("p.error")).includes("not recognised"), "a wrong token is refused");
  await page.fill("#token", WRITE);
  await page.click("form.login button");
  await page.waitForSelector("#fleet");
  const cookie = (await ctx.cookies()).find((c) => c.name === "csoc_session");
  assert(cookie && cookie.httpOnly && cookie.sameSite === "Strict", `session cookie HttpOnly SameSite=Strict: ${JSON.stringify(cookie)}`);
  assert(!(await page.evaluate(() => document.cookie)).includes("csoc_session"), "the session cookie is not readable by scripts");
  ok("login with a token gives an HttpOnly SameSite=Strict session");

  // The grid: both commons, every cell with the hooks.
  await page.waitForSelector('td[data-commons="alpha"][data-service="fence"][data-state="up"]');
  await page.waitForSelector('td[data-commons="beta"][data-service="fence"]');
  const states = await page.$$eval("td[data-state]", (tds) => tds.map((t) => t.getAttribute("data-state")));
  assert(states.length >= 20 && states.every((s) => ["up", "down", "slow", "nodata"].includes(s)), `cell states: ${states}`);
  // A hostile label value is shown as text, never run.
  const xssCell = await page.$$eval("td[data-service]", (tds, x) => tds.filter((t) => t.getAttribute("data-service") === x).length, XSS);
  assert(xssCell >= 1, "the hostile service label has its cell");
  assert((await page.evaluate(() => window.__xss)) === undefined, "the hostile label value did not run");
  ok("fleet grid has data-commons/data-service/data-state on every cell; a <script> label value is inert");
  // Keyboard: focusing a cell shows its details.
  await page.focus('td[data-commons="alpha"][data-service="fence"]');
  const tip = await page.$eval('td[data-commons="alpha"][data-service="fence"] i[role="tooltip"]', (e) => getComputedStyle(e).display + " " + e.textContent);
  assert(tip.startsWith("block") && tip.includes("version") && tip.includes("HTTP 200"), `details on focus: ${tip}`);
  ok("a focused cell shows version, probe latency, status code and TLS");
  await shots("fleet", "/", (p) => p.waitForSelector("td[data-state]"));

  // A service switched down turns down in the grid within 10 s.
  const t0 = Date.now();
  const r = await fetch(`${FAKE}/_fake/fault?service=fence&mode=down`, { method: "POST" });
  assert(r.ok, "fault switched");
  await page.waitForSelector('td[data-commons="alpha"][data-service="fence"][data-state="down"]', { timeout: 10000 });
  const took = Date.now() - t0;
  result.down_after_ms = took;
  ok("fence switched down shows down in the grid without a reload", `${took} ms`);
  await page.waitForTimeout(300);
  await page.bringToFront();
  await page.screenshot({ path: `${SHOTS}/fleet-down-1280.png`, fullPage: true });
  result.shots.push("fleet-down-1280.png");

  // Its commons page shows the probe's status code.
  await page.click('a[href="/commons/alpha"]');
  await page.waitForSelector('tr[data-service="fence"]');
  const code = (await page.textContent('tr[data-service="fence"] td.code')).trim();
  const fenceState = await page.getAttribute('tr[data-service="fence"]', "data-state");
  assert(/^\d{3}$/.test(code) && code !== "200", `fence's status code on the commons page: ${code}`);
  assert(fenceState === "down", `fence row state ${fenceState}`);
  result.fence_code = code;
  ok("the commons page shows fence down with its probe status code", code);
  await page.waitForSelector("figure.chart .uplot, figure.chart .empty");
  const links = await page.$$eval("figure.chart figcaption a", (as) => as.map((a) => a.getAttribute("href")));
  assert(links.length >= 8 && links.every((h) => h.startsWith("/explore?q=")), `every chart links to Explore: ${links}`);
  ok("every chart of the commons page links to its query in Explore", `${links.length} charts`);
  await page.waitForTimeout(800);
  await shots("commons", "/commons/alpha", async (p) => { await p.waitForSelector("figure.chart .uplot, figure.chart .empty"); await p.waitForTimeout(800); });

  // The rule fires and the alert shows.
  const fenceAlert = 'tr[data-alertname="Gen3ServiceDown"][data-state="firing"]';
  await page.goto(BASE + "/alerts");
  for (let i = 0; i < 40 && !(await page.$(fenceAlert)); i++) {
    await page.waitForTimeout(500);
    await page.reload();
  }
  const row = await page.$(fenceAlert);
  assert(row, "Gen3ServiceDown firing on the alerts page");
  const rowText = await row.textContent();
  assert(rowText.includes("fence") && rowText.includes("alpha") && rowText.includes("runbook"), `alert row: ${rowText}`);
  ok("the rule fires and the alert shows with labels, summary and runbook");

  // A silence created in the console (for indexd, before it goes down).
  await page.fill("#sf-matchers", 'alertname="Gen3ServiceDown"\ncommons="alpha"\nservice="indexd"');
  await page.fill("#sf-duration", "2h");
  await page.fill("#sf-comment", "console e2e: indexd maintenance");
  await page.click('#silence-form button[type="submit"]');
  await page.waitForSelector('#sf-msg:has-text("created")');
  const silenceId = (await page.textContent("#sf-msg")).match(/Silence (\S+) created/)[1];
  result.silence_id = silenceId;
  await page.waitForSelector(`tr[data-silence="${silenceId}"][data-state="active"]`);
  ok("a silence is created from the alerts page", silenceId);
  const r2 = await fetch(`${FAKE}/_fake/fault?service=indexd&mode=down`, { method: "POST" });
  assert(r2.ok, "indexd switched down");
  const silencedRow = 'tr[data-alertname="Gen3ServiceDown"][data-state="silenced"]';
  for (let i = 0; i < 40 && !(await page.$(silencedRow)); i++) {
    await page.waitForTimeout(500);
    await page.reload();
  }
  assert(await page.$(silencedRow), "the indexd alert shows as silenced");
  ok("the silenced alert shows data-state=silenced");
  // Expire from the console: a second silence, expired by its button.
  await page.fill("#sf-matchers", 'alertname="Gen3ServiceDown"\ncommons="alpha"\nservice="sheepdog"');
  await page.fill("#sf-comment", "console e2e: to expire");
  await page.click('#silence-form button[type="submit"]');
  await page.waitForSelector('#sf-msg:has-text("created")');
  const second = (await page.textContent("#sf-msg")).match(/Silence (\S+) created/)[1];
  await page.waitForSelector(`tr[data-silence="${second}"][data-state="active"]`);
  await page.click(`tr[data-silence="${second}"] button.expire`);
  await page.waitForSelector(`tr[data-silence="${second}"][data-state="expired"]`);
  result.expired_id = second;
  ok("a silence is expired from the alerts page", second);
  // A write without the CSRF token is refused even with the cookie.
  const csrfLess = await page.evaluate(async () => {
    const r = await fetch("/api/v2/silence/whatever", { method: "DELETE", credentials: "same-origin" });
    return r.status;
  });
  assert(csrfLess === 403, `DELETE without X-CSRF-Token: ${csrfLess}`);
  ok("a console write without X-CSRF-Token is refused", String(csrfLess));
  await shots("alerts", "/alerts", (p) => p.waitForSelector("#silence-list"));

  // Explore draws rate(node_cpu_seconds_total[1m]).
  const q = "rate(node_cpu_seconds_total[1m])";
  await page.goto(`${BASE}/explore?q=${encodeURIComponent(q)}&range=5m`);
  await page.waitForSelector("#graph .uplot canvas", { timeout: 20000 });
  const nSeries = parseInt(await page.getAttribute("#graph", "data-series"), 10);
  const rows = await page.$$eval("#x-table tbody tr", (t) => t.length);
  assert(nSeries > 0 && rows > 0, `graph series ${nSeries}, table rows ${rows}`);
  assert(page.url().includes(encodeURIComponent("node_cpu_seconds_total").replace(/_/g, "_")), "the query is in the URL");
  // Completion of metric names.
  await page.fill("#q", "");
  await page.type("#q", "gen3_service_u");
  await page.waitForSelector('#suggest li:has-text("gen3_service_up")');
  await page.keyboard.press("Tab");
  assert((await page.inputValue("#q")) === "gen3_service_up", "Tab completes the metric name");
  await page.fill("#q", q);
  await page.click('#explore button[type="submit"]');
  await page.waitForSelector("#graph .uplot canvas");
  // Hover shows values in the legend.
  const box = await page.$("#graph .u-over");
  const bb = await box.boundingBox();
  await page.mouse.move(bb.x + bb.width * 0.5, bb.y + bb.height / 2);
  await page.mouse.move(bb.x + bb.width * 0.9, bb.y + bb.height / 2, { steps: 8 });
  await page.waitForTimeout(200);
  const legendVals = await page.$$eval("#graph .u-legend .u-value", (v) => v.map((e) => e.textContent));
  assert(legendVals.some((v) => /\d/.test(v)), `hover values: ${legendVals.slice(0, 4)}`);
  ok("Explore draws a graph of rate(node_cpu_seconds_total[1m]), completes names, shows values on hover", `${nSeries} series`);
  await shots("explore", `/explore?q=${encodeURIComponent(q)}&range=5m`, (p) => p.waitForSelector("#graph .uplot canvas"));

  for (const [name, path] of [["rules", "/rules"], ["agents", "/agents"], ["system", "/system"]]) {
    await page.goto(BASE + path);
    await page.waitForSelector("main h1");
    await shots(name, path);
  }
  const ruleRows = await (await page.goto(BASE + "/rules"), page.$$eval("section.rgroup tr", (t) => t.length));
  assert(ruleRows >= 2, "the rules page lists the rules");
  ok("rules, agents and system pages render");

  // The public status page, without a session.
  const anon = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const ap = await anon.newPage();
  await ap.goto(BASE + "/status");
  await ap.waitForSelector('tr[data-commons="alpha"][data-service="fence"][data-state="down"]');
  const navLinks = await ap.$$("nav a");
  assert(navLinks.length === 0, "the public page links nowhere else");
  await ap.screenshot({ path: `${SHOTS}/status-1280.png`, fullPage: true });
  await ap.setViewportSize({ width: 390, height: 844 });
  await ap.screenshot({ path: `${SHOTS}/status-390.png`, fullPage: true });
  result.shots.push("status-1280.png", "status-390.png");
  await ap.goto(BASE + "/alerts");
  assert(ap.url().includes("/login"), "the public page's visitor cannot see the alerts");
  ok("the public status page shows commons × service without a session, and nothing else");
  await anon.close();

  // A commons-scoped token sees no other commons anywhere.
  const sc = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const sp = await sc.newPage();
  sp.on("pageerror", (e) => errors.push(`scoped: ${e}`));
  await sp.goto(BASE + "/login");
  await sp.fill("#token", SCOPED);
  await sp.click("form.login button");
  await sp.waitForSelector('td[data-commons="alpha"]');
  const pagesToCheck = ["/", "/alerts", "/agents", "/rules", "/system", "/commons/alpha", `/explore?q=${encodeURIComponent("gen3_service_up")}`];
  for (const p of pagesToCheck) {
    await sp.goto(BASE + p);
    await sp.waitForSelector("main h1");
    if (p.startsWith("/explore")) await sp.waitForSelector("#x-table tbody tr");
    const html = await sp.content();
    assert(!html.includes("beta"), `commons beta appears on ${p} for the alpha token`);
  }
  const other = await sp.goto(BASE + "/commons/beta");
  assert(other.status() === 404, `/commons/beta for the alpha token: ${other.status()}`);
  const apiSeen = await sp.evaluate(async () => {
    const r = await fetch("/api/v1/query?query=" + encodeURIComponent("count by (commons) (gen3_service_up)"));
    const j = await r.json();
    return j.data.result.map((s) => s.metric.commons);
  });
  assert(apiSeen.length === 1 && apiSeen[0] === "alpha", `API through the session: ${apiSeen}`);
  // A read token cannot create silences.
  await sp.goto(BASE + "/alerts");
  assert(!(await sp.$("#silence-form")), "no silence form for a read token");
  const denied = await sp.evaluate(async () => {
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    const r = await fetch("/api/v2/silences", {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ matchers: [{ name: "commons", value: "alpha", isRegex: false }], startsAt: new Date().toISOString(), endsAt: new Date(Date.now() + 3600e3).toISOString(), createdBy: "x", comment: "x" }),
    });
    return r.status;
  });
  assert(denied === 403, `silence by a read token: ${denied}`);
  await sp.goto(BASE + "/");
  await sp.waitForSelector('td[data-commons="alpha"]');
  await sp.screenshot({ path: `${SHOTS}/fleet-scoped-1280.png`, fullPage: true });
  result.shots.push("fleet-scoped-1280.png");
  ok("a commons-scoped token sees no other commons on any page, in Explore or the API, and may not silence");
  await sc.close();

  assert(errors.length === 0, `page errors: ${errors.join("; ")}`);
  ok("no script error on any page");
  result.passed = true;
} catch (e) {
  result.passed = false;
  result.error = String(e && e.stack ? e.stack : e);
  console.log(`not ok - ${e.message || e}`);
  if (errors.length) console.log(`page errors: ${errors.join("; ")}`);
} finally {
  writeFileSync(RESULT, JSON.stringify(result, null, 2));
  await browser.close();
}
process.exit(result.passed ? 0 : 1);
