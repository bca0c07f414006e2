//! libpq's TLS settings in the connection string, on rustls.
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` only; the settings a managed
//! PostgreSQL asks for (`verify-ca`, `verify-full`, `sslrootcert`, `sslcert`,
//! `sslkey`) are taken out of the URL here and become the rustls configuration of the
//! pool's connector ([`routero_core::tls`]):
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers it | not checked; with `sslrootcert`, its chain |
//! | `require` | always | not checked; with `sslrootcert`, its chain (as libpq) |
//! | `verify-ca` | always | its chain, to `sslrootcert` |
//! | `verify-full` | always | its chain, to `sslrootcert`, and the host name |
//!
//! `sslrootcert=system` takes the system's roots.

use std::path::PathBuf;

use routero_core::port::{BackendError, ErrorKind};
use routero_core::tls::{Identity, Roots, Verify, client_config};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS part of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ssl {
    mode: Mode,
    root: Option<Roots>,
    identity: Option<Identity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

fn invalid(message: String) -> BackendError {
    BackendError::new(ErrorKind::Invalid, format!("database url: {message}"))
}

impl Ssl {
    /// Splits the TLS settings out of a `postgres://` URL or a `key=value` string;
    /// answers the rest, for tokio-postgres.
    pub(crate) fn split(url: &str) -> Result<(String, Ssl), BackendError> {
        let mut settings: Vec<(String, String)> = Vec::new();
        let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            match url.split_once('?') {
                None => url.to_owned(),
                Some((base, query)) => {
                    // The other settings stay as written, encoding and all.
                    let mut kept = Vec::new();
                    for pair in query.split('&').filter(|p| !p.is_empty()) {
                        let decoded = form_urlencoded::parse(pair.as_bytes()).next();
                        match decoded {
                            Some((name, value)) if is_ours(&name) => {
                                settings.push((name.into_owned(), value.into_owned()));
                            }
                            _ => kept.push(pair),
                        }
                    }
                    if kept.is_empty() {
                        base.to_owned()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
            }
        } else {
            let mut kept = Vec::new();
            for word in url.split_whitespace() {
                match word.split_once('=') {
                    Some((name, value)) if is_ours(name) => {
                        settings.push((name.to_owned(), value.trim_matches('\'').to_owned()));
                    }
                    _ => kept.push(word),
                }
            }
            kept.join(" ")
        };
        let mut ssl = Ssl {
            mode: Mode::Prefer,
            root: None,
            identity: None,
        };
        let (mut cert, mut key) = (None, None);
        for (name, value) in settings {
            match name.as_str() {
                "sslmode" => {
                    ssl.mode = match value.as_str() {
                        "disable" => Mode::Disable,
                        "prefer" => Mode::Prefer,
                        "require" => Mode::Require,
                        "verify-ca" => Mode::VerifyCa,
                        "verify-full" => Mode::VerifyFull,
                        other => {
                            return Err(invalid(format!(
                                "sslmode={other:?}: disable, prefer, require, verify-ca or verify-full"
                            )));
                        }
                    }
                }
                "sslrootcert" if value == "system" => ssl.root = Some(Roots::System),
                "sslrootcert" => ssl.root = Some(Roots::File(PathBuf::from(value))),
                "sslcert" => cert = Some(PathBuf::from(value)),
                _ => key = Some(PathBuf::from(value)),
            }
        }
        ssl.identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(Identity { cert, key }),
            (None, None) => None,
            _ => return Err(invalid("sslcert and sslkey go together".to_owned())),
        };
        if matches!(ssl.mode, Mode::VerifyCa | Mode::VerifyFull) && ssl.root.is_none() {
            return Err(invalid(
                "sslmode=verify-ca and verify-full need sslrootcert (a CA file, or \"system\")"
                    .to_owned(),
            ));
        }
        Ok((rest, ssl))
    }

    /// tokio-postgres's mode.
    pub(crate) fn mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The pool's connector.
    pub(crate) fn connector(&self) -> Result<MakeRustlsConnect, BackendError> {
        let verify = match (self.mode, &self.root) {
            (Mode::VerifyFull, _) => Verify::Full,
            (Mode::VerifyCa, _) | (Mode::Prefer | Mode::Require, Some(_)) => Verify::Chain,
            // Disabled, the connector is never used.
            (Mode::Disable, _) | (Mode::Prefer | Mode::Require, None) => Verify::Encrypt,
        };
        let config = client_config(verify, self.root.as_ref(), self.identity.as_ref())
            .map_err(|e| invalid(e.to_string()))?;
        Ok(MakeRustlsConnect::new(config))
    }
}

fn is_ours(name: &str) -> bool {
    matches!(name, "sslmode" | "sslrootcert" | "sslcert" | "sslkey")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_leave_the_url() {
        let (rest, ssl) = Ssl::split(
            "postgres://u@db.example:5432/app?sslmode=verify-full&options=-c%20x%3Dy+z&sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u@db.example:5432/app?options=-c%20x%3Dy+z"
        );
        assert_eq!(ssl.mode, Mode::VerifyFull);
        assert_eq!(ssl.root, Some(Roots::File("/ca.pem".into())));
        assert_eq!(ssl.mode(), SslMode::Require);

        let (rest, ssl) = Ssl::split("postgres://u@h/app").unwrap();
        assert_eq!(rest, "postgres://u@h/app");
        assert_eq!(ssl.mode, Mode::Prefer);

        let (rest, ssl) =
            Ssl::split("host=h user=u sslmode=verify-ca sslrootcert=system dbname=app").unwrap();
        assert_eq!(rest, "host=h user=u dbname=app");
        assert_eq!((ssl.mode, ssl.root), (Mode::VerifyCa, Some(Roots::System)));
    }

    #[test]
    fn bad_settings_are_refused() {
        for url in [
            "postgres://u@h/app?sslmode=verify",
            "postgres://u@h/app?sslmode=verify-full",
            "postgres://u@h/app?sslcert=/c.pem",
        ] {
            let e = Ssl::split(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid, "{url}");
        }
    }
}
