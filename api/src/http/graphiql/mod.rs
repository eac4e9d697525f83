//! GraphiQL on `GET /graphql`, served entirely from the binary: the page
//! (which carries the demo token) and its scripts and styles under
//! `/graphql/graphiql/<hash>/`, so the playground works without internet.
//! The vendored files and where they come from: `api/assets/graphiql/README.md`.

use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::http::state::AppState;

/// Where the assets are served; the next path segment is `ASSETS.version`.
pub const ASSETS_PREFIX: &str = "/graphql/graphiql";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file the page loads: (name, content type, bytes).
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        JS,
        include_bytes!("../../../assets/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        CSS,
        include_bytes!("../../../assets/graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        JS,
        include_bytes!("../../../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        JS,
        include_bytes!("../../../assets/graphiql/react-dom.production.min.js"),
    ),
    ("start.js", JS, include_bytes!("start.js")),
    ("page.css", CSS, include_bytes!("page.css")),
];

const PAGE: &str = include_str!("page.html");

struct Assets {
    /// A hash of every file: a new build with other files gets new URLs,
    /// so the year-long cache never serves a stale file.
    version: String,
    /// `ASSETS_PREFIX/version`, as the page names it.
    base: String,
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    // FNV-1a: stable across builds and Rust versions, and enough to tell
    // one set of files from another (nothing depends on it being secret).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, _, bytes) in FILES {
        for b in name.bytes().chain(bytes.iter().copied()) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let version = format!("{hash:016x}");
    let base = format!("{ASSETS_PREFIX}/{version}");
    Assets { version, base }
});

/// The page: GraphiQL pointed at this server, with the demo token (if any)
/// sent on every request and in the WebSocket's `connection_init`.
pub async fn page(State(state): State<std::sync::Arc<AppState>>) -> Response {
    let mut headers = serde_json::Map::new();
    if let Some(token) = &state.demo_token {
        headers.insert("Authorization".into(), json!(format!("Bearer {token}")));
    }
    let config = json!({
        "endpoint": "/graphql",
        "subscriptionEndpoint": "/graphql/ws",
        "headers": headers,
        "wsConnectionParams": headers,
    });
    let nonce = STANDARD.encode(rand::random::<[u8; 16]>());
    let html = PAGE
        .replace("{{assets}}", &ASSETS.base)
        .replace("{{nonce}}", &nonce)
        .replace("{{config}}", &escape_attribute(&config.to_string()));
    // Everything comes from this server. `data:` fonts and images are the
    // ones inlined in graphiql.min.css (and the empty favicon). No inline
    // script or style is allowed, except the one <style> element a dialog
    // adds, which carries this response's nonce.
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; \
         font-src 'self' data:; img-src 'self' data:; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let csp = HeaderValue::from_str(&csp).expect("a base64 nonce is a valid header value");
    (
        [
            (header::CONTENT_SECURITY_POLICY, csp),
            // The page holds the demo token and a fresh nonce: never cache it.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Html(html),
    )
        .into_response()
}

/// One of the page's files, cached for a year: its URL changes with its content.
pub async fn asset(Path((version, name)): Path<(String, String)>) -> Response {
    let file = FILES.iter().find(|(n, _, _)| *n == name);
    match file {
        Some((_, content_type, bytes)) if version == ASSETS.version => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *bytes,
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// `text` made safe inside a double-quoted HTML attribute.
fn escape_attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_text_cannot_close_the_attribute_or_the_tag() {
        assert_eq!(
            escape_attribute(r#"{"a":"x\" onload='y'</div>&"}"#),
            "{&quot;a&quot;:&quot;x\\&quot; onload=&#39;y&#39;&lt;/div&gt;&amp;&quot;}"
        );
    }

    #[test]
    fn the_page_names_every_file_and_nothing_else() {
        for (name, _, _) in FILES {
            assert!(PAGE.contains(&format!("{{{{assets}}}}/{name}\"")), "{name}");
        }
        assert_eq!(PAGE.matches("{{assets}}/").count(), FILES.len());
    }
}
