//! Who may use the dashboard: a bearer token (header, or a cookie the page sets from `?token=`)
//! or basic auth, each compared in constant time; and the CSRF token every change carries.

use std::fmt;

use axum::http::{HeaderMap, header};
use base64::Engine;
use subtle::ConstantTimeEq;

use super::DashboardError;

/// The cookie a token is kept in once given as `?token=`.
pub(super) const TOKEN_COOKIE: &str = "celeriac_dashboard_token";

/// Shortest secret accepted.
const MIN_SECRET: usize = 16;

/// How people prove they may use the dashboard.
#[derive(Clone)]
pub struct Auth(Kind);

#[derive(Clone)]
enum Kind {
    /// `Authorization: Bearer <token>`, the cookie, or `?token=` once.
    Token(String),
    /// The whole expected `Authorization` header value, `Basic <base64(user:password)>`.
    Basic(String),
}

impl Auth {
    /// A bearer token of at least 16 characters: `Authorization: Bearer <token>`, or open
    /// `/?token=<token>` once in a browser (it is then kept in a same-site, HTTP-only cookie).
    pub fn token(token: impl Into<String>) -> Result<Self, DashboardError> {
        let token = token.into();
        if token.chars().count() < MIN_SECRET || token.chars().any(char::is_whitespace) {
            return Err(DashboardError::WeakSecret(format!(
                "the token needs at least {MIN_SECRET} characters and no spaces"
            )));
        }
        Ok(Self(Kind::Token(token)))
    }

    /// HTTP basic auth with `user` and a password of at least 16 characters.
    pub fn basic(user: &str, password: &str) -> Result<Self, DashboardError> {
        if user.is_empty() || user.contains(':') {
            return Err(DashboardError::WeakSecret(
                "the user must be non-empty and have no `:`".into(),
            ));
        }
        if password.chars().count() < MIN_SECRET {
            return Err(DashboardError::WeakSecret(format!(
                "the password needs at least {MIN_SECRET} characters"
            )));
        }
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Ok(Self(Kind::Basic(format!("Basic {encoded}"))))
    }

    /// `user:password` (as `--basic-auth` takes it).
    pub fn parse_basic(pair: &str) -> Result<Self, DashboardError> {
        let Some((user, password)) = pair.split_once(':') else {
            return Err(DashboardError::WeakSecret(
                "basic auth is written user:password".into(),
            ));
        };
        Self::basic(user, password)
    }

    /// Whether the request proves it.
    pub(super) fn allows(&self, headers: &HeaderMap) -> bool {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        match &self.0 {
            Kind::Basic(expected) => authorization.is_some_and(|given| same(given, expected)),
            Kind::Token(token) => {
                let bearer = authorization
                    .and_then(|given| given.strip_prefix("Bearer "))
                    .is_some_and(|given| same(given.trim(), token));
                bearer || cookie(headers, TOKEN_COOKIE).is_some_and(|given| same(given, token))
            }
        }
    }

    /// Whether `given` is the token (for `?token=`); basic auth has none.
    pub(super) fn is_token(&self, given: &str) -> bool {
        matches!(&self.0, Kind::Token(token) if same(given, token))
    }

    /// What a browser is told when it must authenticate.
    pub(super) fn challenge(&self) -> Option<&'static str> {
        match self.0 {
            Kind::Basic(_) => Some("Basic realm=\"celeriac dashboard\", charset=\"UTF-8\""),
            Kind::Token(_) => None,
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            Kind::Token(_) => "token",
            Kind::Basic(_) => "basic",
        };
        f.debug_tuple("Auth").field(&kind).finish()
    }
}

/// Compares secrets in constant time (their lengths may show).
pub(super) fn same(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// The value of cookie `name`, if sent.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A fresh random CSRF token: 244 random bits, hex.
pub(super) fn csrf_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
        headers
    }

    #[test]
    fn tokens_and_passwords_are_checked_and_never_shown() {
        assert!(Auth::token("short").is_err());
        assert!(Auth::basic("ops", "short").is_err());
        assert!(Auth::parse_basic("no-colon").is_err());
        let auth = Auth::token("0123456789abcdef-secret").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("{auth:?}"), "Auth(\"token\")");
        assert!(auth.allows(&headers(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef-secret"
        )));
        assert!(!auth.allows(&headers(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef-secreT"
        )));
        assert!(auth.allows(&headers(
            header::COOKIE,
            "theme=dark; celeriac_dashboard_token=0123456789abcdef-secret"
        )));
        assert!(!auth.allows(&HeaderMap::new()));
        assert!(auth.is_token("0123456789abcdef-secret") && !auth.is_token("nope"));

        let basic =
            Auth::parse_basic("ops:correct horse battery").unwrap_or_else(|e| panic!("{e}"));
        // base64("ops:correct horse battery")
        let good = "Basic b3BzOmNvcnJlY3QgaG9yc2UgYmF0dGVyeQ==";
        assert!(basic.allows(&headers(header::AUTHORIZATION, good)));
        assert!(!basic.allows(&headers(header::AUTHORIZATION, "Basic b3BzOndyb25n")));
        assert!(basic.challenge().is_some());
        assert!(!format!("{basic:?}").contains("b3Bz"));
        assert_ne!(csrf_token(), csrf_token());
        assert_eq!(csrf_token().len(), 64);
    }
}
