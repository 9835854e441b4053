//! What the service reads from its environment. Nothing else configures it.

use std::net::SocketAddr;

/// The address it binds to unless told otherwise: this machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub struct Config {
    /// libpq-style connection string of a role with the extension's reader rights.
    pub dsn: String,
    pub listen: SocketAddr,
    /// Required on every request when set; must be set to bind beyond loopback.
    pub token: Option<String>,
    pub pool_size: usize,
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let dsn = var("CUSTOMER_ANALYZER_WEB_DSN").ok_or(
            "CUSTOMER_ANALYZER_WEB_DSN is not set: give a connection string such as \
             'host=127.0.0.1 dbname=shop user=customer_analyzer_web password=...'",
        )?;
        let listen_text = var("CUSTOMER_ANALYZER_WEB_LISTEN").unwrap_or(DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            format!("CUSTOMER_ANALYZER_WEB_LISTEN is '{listen_text}', not an address such as 127.0.0.1:8080")
        })?;
        let token = var("CUSTOMER_ANALYZER_WEB_TOKEN").map(|t| t.trim().to_owned());
        check_binding(&listen, token.as_deref())?;
        let pool_size = match var("CUSTOMER_ANALYZER_WEB_POOL") {
            None => 16,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=256).contains(n))
                .ok_or(format!(
                    "CUSTOMER_ANALYZER_WEB_POOL is '{v}', not a number of connections from 1 to 256"
                ))?,
        };
        Ok(Config {
            dsn,
            listen,
            token,
            pool_size,
        })
    }
}

/// Loopback needs nothing; any other address needs a token of at least 16 characters,
/// because every page shows customer data.
pub fn check_binding(listen: &SocketAddr, token: Option<&str>) -> Result<(), String> {
    match token {
        // it travels in a header, a cookie and a query string unescaped
        Some(t)
            if !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)) =>
        {
            Err("CUSTOMER_ANALYZER_WEB_TOKEN may hold only letters, digits and . _ ~ -".into())
        }
        Some(t) if t.len() < 16 => Err(
            "CUSTOMER_ANALYZER_WEB_TOKEN is shorter than 16 characters: use a long random value"
                .into(),
        ),
        None if !listen.ip().is_loopback() => Err(format!(
            "binding to {listen} would show customer data beyond this machine: set \
             CUSTOMER_ANALYZER_WEB_TOKEN (checked on every request) or bind to 127.0.0.1"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a test address")
    }

    #[test]
    fn only_loopback_goes_without_a_token() {
        assert!(check_binding(&addr("127.0.0.1:8080"), None).is_ok());
        assert!(check_binding(&addr("[::1]:8080"), None).is_ok());
        assert!(check_binding(&addr("0.0.0.0:8080"), None).is_err());
        assert!(check_binding(&addr("192.168.1.5:8080"), None).is_err());
        assert!(check_binding(&addr("0.0.0.0:8080"), Some("0123456789abcdef")).is_ok());
        assert!(check_binding(&addr("127.0.0.1:8080"), Some("short")).is_err());
        assert!(check_binding(&addr("0.0.0.0:8080"), Some("0123456789abcdef;x=1")).is_err());
    }
}
