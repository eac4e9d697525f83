//! Issue 16: GraphiQL works offline. The page and everything it loads come
//! from this server, under a Content-Security-Policy that names no other
//! host; in Chromium (when installed) it renders, runs a query with the demo
//! token and streams a subscription over `/graphql/ws`.

use std::time::Duration;

use serde_json::{Value, json};
use workflows_tests::TestApp;
use workflows_tests::browser::Browser;

/// The values of every `name="…"` attribute in `html`.
fn attributes(html: &str, name: &str) -> Vec<String> {
    let needle = format!(" {name}=\"");
    html.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest[..rest.find('"').expect("a closed attribute")].to_owned()
        })
        .collect()
}

/// The text of every `<tag …>` opening tag in `html`.
fn tags<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let needle = format!("<{tag}");
    html.match_indices(&needle)
        .map(|(at, _)| &html[at..at + html[at..].find('>').expect("a closed tag") + 1])
        .collect()
}

fn unescape(attribute: &str) -> String {
    attribute
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The URLs a stylesheet loads: `url(…)` and `@import`.
fn css_references(css: &str) -> Vec<String> {
    let mut refs: Vec<String> = css
        .match_indices("url(")
        .map(|(at, _)| {
            let rest = &css[at + 4..];
            rest[..rest.find(')').expect("a closed url(")]
                .trim()
                .trim_matches(['"', '\''])
                .to_owned()
        })
        .collect();
    refs.extend(
        css.match_indices("@import")
            .map(|(at, _)| css[at..].chars().take(80).collect()),
    );
    refs
}

/// The URLs a classic script loads by itself: `import(…)` and `importScripts(…)`
/// with a literal, and any other call of those (which this test cannot follow).
fn js_references(js: &str) -> Vec<String> {
    ["import(", "importScripts("]
        .iter()
        .flat_map(|call| {
            js.match_indices(call)
                .map(|(at, _)| js[at..].chars().take(120).collect())
        })
        .collect()
}

fn csp_directives(csp: &str) -> Vec<(String, Vec<String>)> {
    csp.split(';')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            let mut words = d.split_whitespace().map(str::to_owned);
            (words.next().unwrap(), words.collect())
        })
        .collect()
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.unwrap()
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{} has no {name}", resp.url()))
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_everything_it_loads_come_from_this_server() {
    let app = TestApp::spawn_with(|c| c.jwt_secret = None).await;
    let token = app.state.demo_token.clone().unwrap();
    let resp = get(&app, "/graphql").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/html; charset=utf-8");
    // The page carries the demo token.
    assert_eq!(header(&resp, "cache-control"), "no-store");

    // Everything from 'self'; data: only for the fonts and icons inlined in
    // GraphiQL's stylesheet; no inline script, no inline style but a nonce'd one.
    let csp = header(&resp, "content-security-policy").to_owned();
    let directives = csp_directives(&csp);
    let sources = |name: &str| {
        directives
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{csp} has no {name}"))
            .1
            .clone()
    };
    assert_eq!(sources("default-src"), ["'none'"], "{csp}");
    assert_eq!(sources("script-src"), ["'self'"], "{csp}");
    assert_eq!(sources("connect-src"), ["'self'"], "{csp}");
    assert_eq!(sources("frame-ancestors"), ["'none'"], "{csp}");
    let style = sources("style-src");
    assert_eq!(style[0], "'self'", "{csp}");
    assert!(
        style[1..].iter().all(|s| s.starts_with("'nonce-")) && style.len() == 2,
        "{csp}"
    );
    for (name, list) in &directives {
        for source in list {
            assert!(
                ["'self'", "'none'", "data:"].contains(&source.as_str()) || source.starts_with("'nonce-"),
                "{name} allows {source}: {csp}"
            );
        }
    }
    let nonce = style[1].trim_start_matches("'nonce-").trim_end_matches('\'').to_owned();

    let page = resp.text().await.unwrap();
    assert!(!page.contains("://"), "the page names no other host:\n{page}");
    for script in tags(&page, "script") {
        assert!(script.contains(" src=\"/"), "no inline script: {script}");
        assert!(!script.contains("module"), "classic scripts only: {script}");
    }
    assert!(tags(&page, "style").is_empty(), "no inline style:\n{page}");
    assert!(attributes(&page, "style").is_empty(), "no style attribute:\n{page}");
    assert_eq!(
        attributes(&page, "nonce"),
        std::slice::from_ref(&nonce),
        "the start script carries the nonce"
    );
    // A new nonce for every page.
    let again = get(&app, "/graphql").await;
    assert!(!header(&again, "content-security-policy").contains(&nonce));

    // What the start script is told: this server's endpoints and the token.
    let config = attributes(&page, "data-config");
    let config: Value = serde_json::from_str(&unescape(&config[0])).unwrap();
    let bearer = json!(format!("Bearer {token}"));
    assert_eq!(config["endpoint"], "/graphql");
    assert_eq!(config["subscriptionEndpoint"], "/graphql/ws");
    assert_eq!(config["headers"]["Authorization"], bearer);
    assert_eq!(config["wsConnectionParams"]["Authorization"], bearer);

    let mut urls: Vec<String> = attributes(&page, "src");
    urls.extend(attributes(&page, "href"));
    let urls: Vec<String> = urls.into_iter().filter(|u| u != "data:,").collect();
    assert_eq!(urls.len(), 6, "{urls:?}");
    let mut scripts = 0;
    for url in &urls {
        assert!(url.starts_with("/graphql/graphiql/"), "{url}");
        let resp = get(&app, url).await;
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(
            header(&resp, "cache-control"),
            "public, max-age=31536000, immutable",
            "{url}"
        );
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff", "{url}");
        let content_type = header(&resp, "content-type").to_owned();
        let body = resp.text().await.unwrap();
        assert!(!body.is_empty(), "{url}");
        if url.ends_with(".js") {
            scripts += 1;
            assert_eq!(content_type, "text/javascript; charset=utf-8", "{url}");
            assert_eq!(js_references(&body), Vec::<String>::new(), "{url} loads nothing itself");
        } else {
            assert!(url.ends_with(".css"), "{url}");
            assert_eq!(content_type, "text/css; charset=utf-8", "{url}");
            for r in css_references(&body) {
                assert!(r.starts_with("data:"), "{url} loads {r}");
            }
        }
    }
    assert_eq!(scripts, 4, "React, ReactDOM, GraphiQL and the start script");

    // The hash in the path is the version: another one, or another file, is not there.
    let (version, file) = urls[0]
        .trim_start_matches("/graphql/graphiql/")
        .split_once('/')
        .unwrap();
    let stale = get(&app, &format!("/graphql/graphiql/0{}/{file}", &version[1..])).await;
    assert_eq!(stale.status(), 404);
    let unknown = get(&app, &format!("/graphql/graphiql/{version}/Cargo.toml")).await;
    assert_eq!(unknown.status(), 404);
    let outside = get(&app, &format!("/graphql/graphiql/{version}/..%2F..%2FCargo.toml")).await;
    assert_eq!(outside.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_demo_token_the_page_sends_no_authorization() {
    let app = TestApp::spawn().await;
    let page = get(&app, "/graphql").await.text().await.unwrap();
    let config: Value = serde_json::from_str(&unescape(&attributes(&page, "data-config")[0])).unwrap();
    assert_eq!(config["headers"], json!({}));
    assert_eq!(config["wsConnectionParams"], json!({}));
}

/// Installed in the page before its own scripts: what CSP blocked and which
/// errors were thrown (but Chrome's benign "ResizeObserver loop" notice,
/// which resizing panes may raise at any time).
const RECORDER: &str = r#"
window.__blocked = [];
window.__errors = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__blocked.push(e.effectiveDirective + " " + e.blockedURI);
});
window.addEventListener("error", (e) => {
  if (!String(e.message).includes("ResizeObserver loop")) window.__errors.push(String(e.message));
});
window.addEventListener("unhandledrejection", (e) => window.__errors.push(String(e.reason)));
"#;

/// The text of GraphiQL's response pane.
const RESPONSE: &str = "document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue() ?? ''";

/// Types `query` into the query editor and presses the run button once
/// GraphiQL has parsed it (it does so a moment after each change, and picks
/// HTTP or the WebSocket by the parsed operation).
async fn run(browser: &mut Browser, query: &str) {
    let editor = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror";
    let query = json!(query);
    browser.eval(&format!("{editor}.setValue({query}); true")).await;
    browser
        .wait_for(
            &format!("{editor}.documentAST?.loc?.source?.body === {query}"),
            Duration::from_secs(30),
            |v| v == &json!(true),
        )
        .await;
    browser
        .eval("document.querySelector('.graphiql-execute-button').click(); true")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium: apt-get install chromium (or set CHROMIUM), then run with -- --include-ignored"]
async fn graphiql_renders_and_runs_a_query_and_a_subscription_in_chromium() {
    let mut browser = Browser::launch()
        .await
        .expect("this test needs chromium: apt-get install chromium, or set CHROMIUM to a Chromium binary");
    let app = TestApp::spawn_with(|c| c.jwt_secret = None).await;
    let token = app.state.demo_token.clone().unwrap();
    let wait = Duration::from_secs(30);
    let session = async {
        browser.before_each_document(RECORDER).await;
        browser.navigate(&app.url("/graphql")).await;
        browser
            .wait_for(
                "!!document.querySelector('.graphiql-query-editor .CodeMirror') \
                 && !!document.querySelector('.graphiql-execute-button')",
                wait,
                |v| v == &json!(true),
            )
            .await;

        // A query, sent with the demo token.
        run(&mut browser, "{ me { id } }").await;
        let text = browser
            .wait_for(RESPONSE, wait, |v| v.as_str().is_some_and(|t| t.contains("me")))
            .await;
        let answer: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
        assert_eq!(answer, json!({ "data": { "me": { "id": "demo-user" } } }));

        // A subscription over /graphql/ws, with the token in connection_init.
        let drives = app.ok(&token, "{ drives { id } }", json!({})).await;
        let drive = drives["drives"][0]["id"].as_str().unwrap().to_owned();
        let templates = app
            .ok(
                &token,
                "query($d: ID!) { workflowTemplates(driveId: $d) { nodes { id } } }",
                json!({ "d": drive }),
            )
            .await;
        let template = templates["workflowTemplates"]["nodes"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let subscription = format!(
            "subscription {{ driveWorkflowExecutionEvents(driveId: \"{drive}\") {{ kind execution {{ template {{ id }} }} }} }}"
        );
        run(&mut browser, &subscription).await;
        // The subscription starts a moment after the click: start runs
        // until one shows up in the response pane.
        let answered = |v: &Value| {
            v.as_str()
                .is_some_and(|t| t.contains("driveWorkflowExecutionEvents") || t.contains("errors"))
        };
        let mut shown = Value::Null;
        for _ in 0..20 {
            app.ok(
                &token,
                "mutation($t: ID!) { startWorkflowExecution(templateId: $t) { id } }",
                json!({ "t": template }),
            )
            .await;
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(2) && !answered(&shown) {
                shown = browser.eval(RESPONSE).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if answered(&shown) {
                break;
            }
        }
        let answer: Value = serde_json::from_str(shown.as_str().unwrap_or_default())
            .unwrap_or_else(|_| panic!("no subscription event in the response pane: {shown}"));
        let event = &answer["data"]["driveWorkflowExecutionEvents"];
        assert!(event["kind"].is_string(), "{answer}");
        assert_eq!(event["execution"]["template"]["id"], json!(template), "{answer}");

        // A dialog adds its scroll lock as a <style> element: the nonce lets it in.
        browser
            .eval("document.querySelector('button[aria-label=\"Open settings dialog\"]').click(); true")
            .await;
        browser
            .wait_for("!!document.querySelector('[role=dialog]')", wait, |v| v == &json!(true))
            .await;
        browser
            .wait_for(
                "getComputedStyle(document.body).getPropertyValue('--removed-body-scroll-bar-size')",
                wait,
                |v| v.as_str().is_some_and(|s| !s.is_empty()),
            )
            .await;

        let seen = browser
            .eval(
                "({ blocked: window.__blocked, errors: window.__errors, \
                    loaded: performance.getEntriesByType('resource').map((e) => e.name) })",
            )
            .await;
        assert_eq!(seen["blocked"], json!([]), "nothing was blocked by CSP: {seen}");
        assert_eq!(seen["errors"], json!([]), "{seen}");
        let loaded = seen["loaded"].as_array().unwrap();
        assert!(loaded.len() >= 6, "{seen}");
        for url in loaded {
            let url = url.as_str().unwrap();
            assert!(url.starts_with(&app.url("/graphql")), "loaded from elsewhere: {url}");
        }
    };
    tokio::time::timeout(Duration::from_secs(180), session)
        .await
        .expect("the browser session ends within 3 minutes");
    browser.close().await;
}
