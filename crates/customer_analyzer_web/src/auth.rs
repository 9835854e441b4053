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

pub async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = s.token.clone() else {
        return next.run(req).await;
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
    use super::same;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abcdef0123456789", b"abcdef0123456789"));
        assert!(!same(b"abcdef0123456789", b"abcdef012345678"));
        assert!(!same(b"abcdef0123456789", b"abcdef0123456780"));
    }
}
