//! The token check: when CUSTOMER_ANALYZER_WEB_TOKEN is set, every request must carry it,
//! as `Authorization: Bearer <token>`, as the cookie a first `?token=` visit sets (so that
//! pages, assets and the event stream of a browser carry it), or as `?token=`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

const COOKIE: &str = "customer_analyzer_token";

/// Equal in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn from_query(req: &Request) -> Option<String> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token=").map(str::to_owned))
}

fn from_headers(req: &Request) -> Vec<String> {
    let h = req.headers();
    let mut found = Vec::new();
    if let Some(b) = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        found.push(b.trim().to_owned());
    }
    for c in h.get_all(header::COOKIE) {
        if let Ok(c) = c.to_str() {
            for part in c.split(';') {
                if let Some(v) = part.trim().strip_prefix(&format!("{COOKIE}=")) {
                    found.push(v.to_owned());
                }
            }
        }
    }
    found
}

/// Whether the request names this machine as its host. Without a token the service
/// answers only such requests: a web page elsewhere that points its own name at
/// 127.0.0.1 (DNS rebinding) would otherwise read customer data through the browser.
fn for_this_machine(req: &Request) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

pub async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = s.token.clone() else {
        if for_this_machine(&req) {
            return next.run(req).await;
        }
        return (
            StatusCode::MISDIRECTED_REQUEST,
            axum::Json(crate::api::ApiError {
                error: "this service answers requests for localhost only".into(),
                sqlstate: None,
                hint: Some("Open it as http://127.0.0.1:<port>/, or set CUSTOMER_ANALYZER_WEB_TOKEN to serve other names.".into()),
            }),
        )
            .into_response();
    };
    let ok = |t: &str| same(t.as_bytes(), token.as_bytes());
    if from_headers(&req).iter().any(|t| ok(t)) {
        return next.run(req).await;
    }
    if from_query(&req).is_some_and(|t| ok(&t)) {
        let mut response = next.run(req).await;
        let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
        return response;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(crate::api::ApiError {
            error: "this service needs its token".into(),
            sqlstate: None,
            hint: Some("Send Authorization: Bearer <CUSTOMER_ANALYZER_WEB_TOKEN>, or open a page once with ?token=<token>.".into()),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::{for_this_machine, same};
    use axum::extract::Request;

    fn with_host(host: &str) -> Request {
        Request::builder()
            .header("host", host)
            .body(axum::body::Body::empty())
            .expect("a request")
    }

    #[test]
    fn without_a_token_only_this_machine_is_served() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "localhost",
        ] {
            assert!(for_this_machine(&with_host(ok)), "{ok}");
        }
        for no in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "10.0.0.1:8080",
        ] {
            assert!(!for_this_machine(&with_host(no)), "{no}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abcdef0123456789", b"abcdef0123456789"));
        assert!(!same(b"abcdef0123456789", b"abcdef012345678"));
        assert!(!same(b"abcdef0123456789", b"abcdef0123456780"));
    }
}
