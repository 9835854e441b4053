//! The API and the dashboard end to end: the binary runs against the test server
//! (CA_IT_DSN, started by scripts/test.sh) as a login role with only the extension's
//! reader rights, and Debian's Chromium, headless through chromedriver, goes through
//! every page. Numbers on the pages and in the API are compared with SQL's; an event
//! inserted by SQL must reach the user's open page live. Screenshots of each page go to
//! target/screenshots/.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use customer_analyzer_integration::{connect, describe, dsn, fresh_shop, value, Client};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{ClientBuilder, Locator};
use serde_json::{json, Value};

/// The database the test server's rescoring worker serves: live updates need it.
const DB: &str = "ca_it_realtime";
const ROLE: &str = "ca_web_reader";
/// Generous: only catches a hang (the worker naps 100 ms).
const WAIT: Duration = Duration::from_secs(60);
/// What the test writes to the browser's console itself, to prove it reads it.
const CANARY: &str = "customer-analyzer-console-canary";

fn screenshots() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// The score text every page shows (pages::score_text).
fn shown(v: f64) -> String {
    format!("{v:.4}")
}

/// A running customer-analyzer-web, stopped when dropped.
struct Service {
    child: Child,
    addr: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(db_dsn: &str, listen: &str, token: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_customer-analyzer-web"));
    cmd.env("CUSTOMER_ANALYZER_WEB_DSN", db_dsn)
        .env("CUSTOMER_ANALYZER_WEB_LISTEN", listen)
        .env_remove("CUSTOMER_ANALYZER_WEB_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(t) = token {
        cmd.env("CUSTOMER_ANALYZER_WEB_TOKEN", t);
    }
    cmd
}

fn start(db_dsn: &str, listen: &str, token: Option<&str>) -> Service {
    let mut child = command(db_dsn, listen, token)
        .spawn()
        .unwrap_or_else(|e| panic!("starting customer-analyzer-web: {e}"));
    let mut line = String::new();
    let out = child.stdout.take().expect("stdout is piped");
    BufReader::new(out)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("reading its address: {e}"));
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Service { child, addr }
}

/// A GET over plain HTTP/1.1; returns the status and the body.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(WAIT)).expect("a timeout");
    let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("sending");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    // chunked bodies: keep the JSON between the chunk sizes
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    (status, body)
}

fn get_json(addr: &str, path: &str) -> (u16, Value) {
    let (status, body) = get(addr, path, &[]);
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e} in {body:?}"));
    (status, v)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"))
}

/// The demo shop with both models, two segmentations, scores logged, real time on and
/// a login role with the reader rights only.
fn shop() -> Client {
    fresh_shop(DB, 1500, 240);
    let mut c = connect(DB);
    c.batch_execute(&format!(
        "SET client_min_messages = warning;
         SELECT customer_analyzer.train('churn', 'gbm');
         SELECT customer_analyzer.train('purchase', 'logistic');
         SELECT customer_analyzer.segment_users('kmeans', 4);
         SELECT customer_analyzer.segment_users('kmeans', 5);
         SELECT customer_analyzer.score_all('churn');
         SELECT customer_analyzer.score_all('purchase');
         SELECT customer_analyzer.configure();
         DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
                 CREATE ROLE {ROLE} LOGIN PASSWORD 'not-checked-by-the-test-server';
             END IF;
         END $$;
         SELECT customer_analyzer.grant_reader('{ROLE}');"
    ))
    .unwrap_or_else(|e| panic!("setting up: {}", describe(&e)));
    c
}

fn reader_dsn() -> String {
    format!("{} user={ROLE} dbname={DB}", dsn())
}

#[test]
fn the_api_answers_what_sql_answers() {
    let mut c = shop();
    let web = start(&reader_dsn(), "127.0.0.1:0", None);
    let a = web.addr.as_str();

    let (status, doc) = get_json(a, "/api/openapi.json");
    assert_eq!(status, 200);
    assert!(
        doc["paths"]["/api/predictions/{user_id}"].is_object(),
        "{doc}"
    );

    let user: i64 = value(
        &mut c,
        "SELECT user_id FROM customer_analyzer.user_metrics WHERE events_total > 10 ORDER BY user_id LIMIT 1",
    );
    let (status, p) = get_json(a, &format!("/api/predictions/{user}"));
    assert_eq!(status, 200, "{p}");
    let churn: f64 = value(
        &mut c,
        &format!("SELECT customer_analyzer.predict_churn({user})"),
    );
    let purchase: f64 = value(
        &mut c,
        &format!("SELECT customer_analyzer.predict_purchase({user})"),
    );
    assert_eq!(p["churn"]["score"].as_f64(), Some(churn));
    assert_eq!(p["purchase"]["score"].as_f64(), Some(purchase));
    let churn_model: i64 = value(
        &mut c,
        "SELECT model_id FROM customer_analyzer.deployed_models WHERE task = 'churn'",
    );
    assert_eq!(p["churn"]["model_id"].as_i64(), Some(churn_model));
    assert_eq!(p["churn"]["arm"], json!("champion"));
    assert_eq!(p["churn"]["reasons"].as_array().map(Vec::len), Some(3));
    let segment: i32 = value(
        &mut c,
        &format!("SELECT segment_id FROM customer_analyzer.segment_of({user})"),
    );
    assert_eq!(
        p["segment"]["segment_id"].as_i64(),
        Some(i64::from(segment))
    );

    let (status, one) = get_json(a, &format!("/api/churn/{user}"));
    assert_eq!((status, one["score"].as_f64()), (200, Some(churn)));
    assert_eq!(one["reasons"].as_array().map(Vec::len), Some(5));
    let (status, one) = get_json(a, &format!("/api/purchase/{user}"));
    assert_eq!((status, one["score"].as_f64()), (200, Some(purchase)));

    // errors keep the extension's meaning
    let (status, e) = get_json(a, "/api/predictions/999999999");
    assert_eq!(
        (status, e["sqlstate"].as_str()),
        (404, Some("P0002")),
        "{e}"
    );
    for bad in [
        "/api/predictions/abc",
        "/api/churn/1.5",
        "/api/churn?limit=0",
        "/api/churn?limit=abc",
        "/api/churn?min_score=2",
        "/api/churn?offset=-1",
    ] {
        let (status, e) = get_json(a, bad);
        assert_eq!(status, 400, "{bad}: {e}");
        assert!(e["error"].is_string(), "{bad}: {e}");
    }

    // the riskiest users, paged and filtered as SQL orders them
    let top: Vec<i64> = c
        .query(
            "SELECT user_id FROM customer_analyzer.user_overview WHERE churn_score IS NOT NULL
             ORDER BY churn_score DESC, user_id LIMIT 5 OFFSET 5",
            &[],
        )
        .unwrap_or_else(|e| panic!("{}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (status, page) = get_json(a, "/api/churn?limit=5&offset=5");
    assert_eq!(status, 200, "{page}");
    let ids: Vec<i64> = page["users"]
        .as_array()
        .map(|u| u.iter().filter_map(|u| u["user_id"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(ids, top);
    let scored: i64 = value(
        &mut c,
        "SELECT count(*) FROM customer_analyzer.latest_scores WHERE task = 'churn'",
    );
    assert_eq!(page["total"].as_i64(), Some(scored));
    let (name, size): (String, i64) = {
        let r = c
            .query_one("SELECT name, size FROM customer_analyzer.current_segments ORDER BY segment_id LIMIT 1", &[])
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
        (r.get(0), r.get(1))
    };
    let (status, page) = get_json(
        a,
        &format!(
            "/api/churn?limit=1000&min_score=0.5&segment={}",
            name.replace(' ', "%20")
        ),
    );
    assert_eq!(status, 200, "{page}");
    let in_sql: i64 = value(
        &mut c,
        &format!(
            "SELECT count(*) FROM customer_analyzer.user_overview WHERE churn_score >= 0.5 AND segment_name = '{name}'"
        ),
    );
    assert_eq!(page["total"].as_i64(), Some(in_sql));
    assert!(page["users"].as_array().is_some_and(|u| u
        .iter()
        .all(|u| u["segment_name"] == json!(name) && u["churn_score"].as_f64() >= Some(0.5))));

    let (status, seg) = get_json(a, "/api/segmentation");
    assert_eq!(status, 200, "{seg}");
    assert_eq!(seg["segments"][0]["name"], json!(name));
    assert_eq!(seg["segments"][0]["size"].as_i64(), Some(size));

    let (status, models) = get_json(a, "/api/models");
    assert_eq!(status, 200, "{models}");
    assert!(models.as_array().is_some_and(|m| m
        .iter()
        .any(|m| m["task"] == json!("churn") && m["model_id"].as_i64() == Some(churn_model))));

    let (status, health) = get_json(a, "/api/health");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["database"], json!("ok"));
    assert!(
        health["queue_depth"].is_i64() && health["worker_last_seen"].is_string(),
        "{health}"
    );

    // the service's role reads through the extension only
    let direct = c.batch_execute(&format!(
        "BEGIN; SET LOCAL ROLE {ROLE}; SELECT count(*) FROM customer_analyzer.models; COMMIT;"
    ));
    assert_eq!(customer_analyzer_integration::sqlstate(&direct), "42501");
    let _ = c.batch_execute("ROLLBACK");
}

#[test]
fn a_database_that_is_down_is_a_503_and_nothing_is_served_beyond_loopback_without_a_token() {
    let nowhere = format!(
        "host=127.0.0.1 port={} user=nobody dbname=nothing",
        free_port()
    );
    let web = start(&nowhere, "127.0.0.1:0", None);
    let (status, health) = get_json(&web.addr, "/api/health");
    assert_eq!(
        (status, health["database"].as_str()),
        (503, Some("unreachable")),
        "{health}"
    );
    let (status, e) = get_json(&web.addr, "/api/predictions/1");
    assert_eq!(status, 503, "{e}");
    let (status, _) = get(&web.addr, "/users", &[]);
    assert_eq!(status, 503);

    // without a token, only requests for this machine's names (no DNS rebinding)
    assert_eq!(
        get(&web.addr, "/api/health", &[("Host", "evil.example")]).0,
        421
    );
    assert_eq!(
        get(&web.addr, "/api/health", &[("Host", "localhost")]).0,
        503
    );

    let out = command(&nowhere, "0.0.0.0:0", None)
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("running customer-analyzer-web: {e}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CUSTOMER_ANALYZER_WEB_TOKEN"));

    let token = "a-long-token-for-the-test-0123456789";
    let web = start(&nowhere, "0.0.0.0:0", Some(token));
    let port = web.addr.rsplit(':').next().unwrap_or_default();
    let local = format!("127.0.0.1:{port}");
    assert_eq!(get(&local, "/api/openapi.json", &[]).0, 401);
    assert_eq!(get(&local, "/users", &[]).0, 401);
    assert_eq!(
        get(
            &local,
            "/api/openapi.json",
            &[("Authorization", "Bearer wrong-token-0123456789")]
        )
        .0,
        401
    );
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get(&local, "/api/openapi.json", &[("Authorization", &bearer)]).0,
        200
    );
    assert_eq!(
        get(&local, &format!("/api/openapi.json?token={token}"), &[]).0,
        200
    );
}

/// chromedriver's browser log (Chromium's console), which W3C WebDriver has no command
/// for: chromedriver keeps Selenium's `POST /session/{id}/se/log`.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let mut c = shop();
    let web = start(&reader_dsn(), "127.0.0.1:0", None);
    let base = format!("http://{}", web.addr);
    let port = free_port();
    let _driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting chromedriver (Debian's chromium-driver): {e}")),
    );
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < WAIT, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = std::env::temp_dir().join(format!("ca-chromium-{}", std::process::id()));
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--window-size=1400,1100",
            format!("--user-data-dir={}", profile.display())]}),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    let b = rt
        .block_on(
            ClientBuilder::native()
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .unwrap_or_else(|e| panic!("opening Chromium through chromedriver: {e}"));
    let shots = screenshots();
    let mut console_errors: Vec<String> = Vec::new();
    let mut read_console = |b: &fantoccini::Client| {
        let log = rt
            .block_on(b.issue_cmd(BrowserLog))
            .unwrap_or_else(|e| panic!("reading the console: {e}"));
        let entries = log
            .as_array()
            .unwrap_or_else(|| panic!("chromedriver's log is not a list: {log}"));
        let mut canaries = 0;
        for entry in entries {
            let message = entry["message"].to_string();
            if message.contains(CANARY) {
                canaries += 1;
            } else if entry["level"] == json!("SEVERE") {
                console_errors.push(message);
            }
        }
        canaries
    };
    // the console is read at all: an error the test writes itself must come back
    rt.block_on(b.goto(&format!("{base}/assets/style.css")))
        .unwrap_or_else(|e| panic!("opening a page: {e}"));
    rt.block_on(b.execute(&format!("console.error('{CANARY}')"), vec![]))
        .unwrap_or_else(|e| panic!("writing to the console: {e}"));
    assert_eq!(read_console(&b), 1, "the browser's console cannot be read");
    let find = |sel: &str| {
        rt.block_on(async { b.wait().at_most(WAIT).for_element(Locator::Css(sel)).await })
            .unwrap_or_else(|e| panic!("{sel}: {e}"))
    };
    let text = |sel: &str| {
        rt.block_on(find(sel).text())
            .unwrap_or_else(|e| panic!("{sel}: {e}"))
    };
    let count = |sel: &str| {
        rt.block_on(b.find_all(Locator::Css(sel)))
            .map(|v| v.len())
            .unwrap_or(0)
    };
    let goto = |path: &str| {
        rt.block_on(b.goto(&format!("{base}{path}")))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let shot = |name: &str| {
        let png = rt
            .block_on(b.screenshot())
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        std::fs::write(shots.join(name), png).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    };

    // Users: the list as SQL orders it, then a search
    goto("/users");
    let total: i64 = value(
        &mut c,
        "SELECT count(*) FROM customer_analyzer.user_overview",
    );
    assert_eq!(text("#users-total"), total.to_string());
    let (riskiest, risk): (i64, f64) = {
        let r = c
            .query_one(
                "SELECT user_id, churn_score FROM customer_analyzer.user_overview
                 ORDER BY churn_score DESC NULLS LAST, user_id LIMIT 1",
                &[],
            )
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
        (r.get(0), r.get(1))
    };
    assert_eq!(
        text("#users tbody tr:first-child td:first-child"),
        riskiest.to_string()
    );
    assert_eq!(
        text("#users tbody tr:first-child td:nth-child(3)"),
        shown(risk)
    );
    shot("users.png");
    let user: i64 = value(
        &mut c,
        "SELECT user_id FROM customer_analyzer.user_metrics WHERE events_total > 10 ORDER BY user_id DESC LIMIT 1",
    );
    let (search, button) = (find("#search"), find("#search-button"));
    rt.block_on(async {
        search.send_keys(&user.to_string()).await?;
        button.click().await
    })
    .unwrap_or_else(|e| panic!("searching: {e}"));
    rt.block_on(async {
        b.wait()
            .at_most(WAIT)
            .for_url(&url::Url::parse(&format!("{base}/users?q={user}")).expect("a url"))
            .await
    })
    .unwrap_or_else(|e| panic!("the search did not load: {e}"));
    let started = Instant::now();
    while count("#users tbody tr") != 1 {
        assert!(
            started.elapsed() < WAIT,
            "the search did not narrow the list to one user"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(text("#users tbody tr td:first-child"), user.to_string());
    read_console(&b);

    // One user: scores, reasons, events; then an event makes the page change live
    goto(&format!("/users/{user}"));
    let churn: f64 = value(
        &mut c,
        &format!("SELECT customer_analyzer.predict_churn({user})"),
    );
    let purchase: f64 = value(
        &mut c,
        &format!("SELECT customer_analyzer.predict_purchase({user})"),
    );
    assert_eq!(text("#score-churn"), shown(churn));
    assert_eq!(text("#score-purchase"), shown(purchase));
    assert_eq!(count("#task-churn ul.bars li"), 8);
    let events: i64 = value(
        &mut c,
        &format!("SELECT count(*) FROM customer_analyzer.recent_events({user}, 20)"),
    );
    assert_eq!(count("#events tbody tr") as i64, events);
    assert!(count(".group") >= 5, "features are shown by group");
    let started = Instant::now();
    while !text("#live-status").starts_with("live: on") {
        assert!(
            started.elapsed() < WAIT,
            "the page never connected to /api/events"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    shot("user.png");
    // the service listens too (its LISTEN connection may lag the page's stream)
    let started = Instant::now();
    while get_json(&web.addr, "/api/health").1["live"] != json!(true) {
        assert!(
            started.elapsed() < WAIT,
            "the service never listened for scores"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let inserted: String = c
        .query_one(
            "INSERT INTO public.events (user_id, event_type, created_at, event_data)
             VALUES ($1, 'purchase', now(), '{\"product_id\": 1, \"quantity\": 3, \"amount\": 450}')
             RETURNING created_at::text",
            &[&user],
        )
        .unwrap_or_else(|e| panic!("inserting an event: {}", describe(&e)))
        .get(0);
    // the score of this event, not one the worker sent before it
    let started = Instant::now();
    loop {
        let at = rt
            .block_on(find("#score-churn").attr("data-live-at"))
            .unwrap_or_else(|e| panic!("reading the score: {e}"));
        let ours = at.is_some_and(|at| {
            c.query_one(
                "SELECT $1::text::timestamptz = $2::text::timestamptz",
                &[&at, &inserted],
            )
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false)
        });
        if ours {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the new score never reached the page"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let logged: f64 = value(
        &mut c,
        &format!("SELECT score FROM customer_analyzer.latest_predictions WHERE task = 'churn' AND user_id = {user}"),
    );
    assert_eq!(text("#score-churn"), shown(logged));
    let now: f64 = value(
        &mut c,
        &format!("SELECT customer_analyzer.predict_churn({user})"),
    );
    assert_eq!(
        shown(now),
        shown(logged),
        "the worker refreshed the user's features"
    );
    read_console(&b);

    // Analytics: metrics as SQL has them, charts drawn
    goto("/analytics");
    let auc: f64 = value(
        &mut c,
        "SELECT holdout_auc FROM customer_analyzer.model_health WHERE task = 'churn' AND role = 'champion'",
    );
    assert_eq!(text("#models tr[data-task=churn] .holdout-auc"), shown(auc));
    for chart in ["roc", "reliability", "importance", "weekly"] {
        find(&format!("#chart-{chart}[data-drawn] canvas"));
    }
    let depth: i64 = value(&mut c, "SELECT depth FROM customer_analyzer.queue_status");
    assert!(text("#queue-depth")
        .parse::<i64>()
        .is_ok_and(|d| d >= 0 && d <= depth + 100));
    shot("analytics.png");
    read_console(&b);

    // Segmentation: sizes as SQL has them, the map and the moves between segmentations
    goto("/segmentation");
    for r in c
        .query(
            "SELECT segment_id, size FROM customer_analyzer.current_segments",
            &[],
        )
        .unwrap_or_else(|e| panic!("{}", describe(&e)))
    {
        let (id, size): (i32, i64) = (r.get(0), r.get(1));
        assert_eq!(
            text(&format!("#segments tr[data-segment=\"{id}\"] .size")),
            size.to_string()
        );
    }
    for chart in ["sizes", "map", "transitions"] {
        find(&format!("#chart-{chart}[data-drawn] canvas"));
    }
    let moves: i64 = value(
        &mut c,
        "SELECT count(*) FROM customer_analyzer.segment_transitions",
    );
    assert!(moves > 0);
    assert_eq!(count("#transitions tbody tr") as i64, moves);
    shot("segmentation.png");
    read_console(&b);

    rt.block_on(b.close())
        .unwrap_or_else(|e| panic!("closing the browser: {e}"));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:?}"
    );
}
