//! The ERPs' authentication (feature `client`): OAuth 1.0a signatures (NetSuite's
//! token-based authentication), OAuth 2.0 client credentials with a client secret
//! (Coupa) or a signed JWT assertion (NetSuite's machine-to-machine flow), and the
//! [`Secret`] every credential is kept in.
//!
//! - [`OAuth1`] signs each request (RFC 5849 §3.4: the signature base string of the
//!   method, the base string URI and the normalised parameters, HMAC-SHA256 keyed by
//!   the consumer and token secrets) and writes the `Authorization: OAuth realm=…`
//!   header, with a fresh nonce and timestamp per request.
//! - [`ClientCredentials`] fetches an access token from the token endpoint
//!   (`grant_type=client_credentials`), keeps it until shortly before it expires, and
//!   fetches a new one when the ERP answers 401.
//! - [`JwtAssertion`] signs the client assertion NetSuite's OAuth 2.0 client
//!   credentials flow takes: `PS256` with an RSA key or `ES256` with a P-256 key
//!   (PKCS#8 or PKCS#1 PEM), the certificate id as `kid`.
//!
//! A [`Secret`] prints as `***` in `Debug` and `Display`, so no credential reaches a
//! log line through a formatted value; the tokens fetched are kept the same way.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hmac, signature};

/// A credential: shown as `***`, compared in constant time by nobody (it is only
/// ever sent).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The credential, to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A credential from the environment: `NAME`, or the file named by `NAME_FILE`
    /// (its contents with surrounding whitespace trimmed, as container secrets are
    /// mounted). `Ok(None)` when neither is set.
    pub fn from_env(name: &str) -> Result<Option<Secret>, String> {
        if let Ok(value) = std::env::var(name) {
            return Ok(Some(Secret(value)));
        }
        let file_var = format!("{name}_FILE");
        match std::env::var(&file_var) {
            Ok(path) => std::fs::read_to_string(&path)
                .map(|v| Some(Secret(v.trim().to_owned())))
                .map_err(|e| format!("{file_var}={path}: {e}")),
            Err(_) => Ok(None),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// RFC 3986 percent-encoding as RFC 5849 §3.6 wants it: everything but the
/// unreserved characters, uppercase hex.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(0));
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The signature methods of RFC 5849 this signer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMethod {
    /// `HMAC-SHA256`: NetSuite's (HMAC-SHA1 is refused there since 2023.1).
    HmacSha256,
    /// `HMAC-SHA1`: RFC 5849 §3.4.2, for servers that know only it.
    HmacSha1,
}

impl SignatureMethod {
    fn name(self) -> &'static str {
        match self {
            SignatureMethod::HmacSha256 => "HMAC-SHA256",
            SignatureMethod::HmacSha1 => "HMAC-SHA1",
        }
    }
}

/// OAuth 1.0a credentials, as NetSuite's token-based authentication issues them.
#[derive(Debug, Clone)]
pub struct OAuth1 {
    /// The `realm`: NetSuite's account id (`1234567`, `1234567_SB1` for a sandbox).
    pub realm: String,
    /// The integration record's consumer key.
    pub consumer_key: String,
    /// The consumer secret.
    pub consumer_secret: Secret,
    /// The access token's id.
    pub token_id: String,
    /// The token secret.
    pub token_secret: Secret,
    /// HMAC-SHA256 unless told otherwise.
    pub method: SignatureMethod,
    /// Whether `oauth_version="1.0"` is sent (NetSuite's examples send it; it is
    /// optional in RFC 5849).
    pub version: bool,
}

impl OAuth1 {
    /// NetSuite TBA credentials: HMAC-SHA256, with `oauth_version`.
    pub fn netsuite(
        realm: impl Into<String>,
        consumer_key: impl Into<String>,
        consumer_secret: Secret,
        token_id: impl Into<String>,
        token_secret: Secret,
    ) -> OAuth1 {
        OAuth1 {
            realm: realm.into(),
            consumer_key: consumer_key.into(),
            consumer_secret,
            token_id: token_id.into(),
            token_secret,
            method: SignatureMethod::HmacSha256,
            version: true,
        }
    }

    /// The `Authorization` header of a request to `url` (scheme, host, path and
    /// query; a form body's parameters in `form`, none for JSON), with a fresh
    /// nonce and the current time.
    pub fn authorization(&self, method: &str, url: &str, form: &[(&str, &str)]) -> String {
        let mut nonce = [0u8; 16];
        let nonce = match SystemRandom::new().fill(&mut nonce) {
            Ok(()) => URL_SAFE_NO_PAD.encode(nonce).replace(['-', '_'], "x"),
            Err(_) => uuid::Uuid::new_v4().simple().to_string(),
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.authorization_at(method, url, form, &nonce, timestamp)
    }

    /// [`authorization`](Self::authorization) with a given nonce and timestamp (the
    /// documentation's worked examples).
    pub fn authorization_at(
        &self,
        method: &str,
        url: &str,
        form: &[(&str, &str)],
        nonce: &str,
        timestamp: u64,
    ) -> String {
        let timestamp = timestamp.to_string();
        let mut oauth: Vec<(&str, &str)> = vec![
            ("oauth_consumer_key", &self.consumer_key),
            ("oauth_token", &self.token_id),
            ("oauth_signature_method", self.method.name()),
            ("oauth_timestamp", &timestamp),
            ("oauth_nonce", nonce),
        ];
        if self.version {
            oauth.push(("oauth_version", "1.0"));
        }
        let signature = self.signature(&base_string(method, url, &oauth, form));
        let mut header = format!("OAuth realm=\"{}\"", percent_encode(&self.realm));
        for (name, value) in oauth
            .iter()
            .chain(&[("oauth_signature", signature.as_str())])
        {
            header.push_str(&format!(", {name}=\"{}\"", percent_encode(value)));
        }
        header
    }

    /// The signature of a base string: base64 of the HMAC keyed by
    /// `consumer_secret&token_secret`, each percent-encoded.
    pub fn signature(&self, base: &str) -> String {
        let key = format!(
            "{}&{}",
            percent_encode(self.consumer_secret.expose()),
            percent_encode(self.token_secret.expose())
        );
        let algorithm = match self.method {
            SignatureMethod::HmacSha256 => hmac::HMAC_SHA256,
            SignatureMethod::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        };
        let tag = hmac::sign(&hmac::Key::new(algorithm, key.as_bytes()), base.as_bytes());
        STANDARD.encode(tag.as_ref())
    }
}

/// The signature base string of RFC 5849 §3.4.1: the method, the base string URI
/// (lowercase scheme and host, default port dropped, no query), and the
/// normalised parameters (the query's, the protocol's and a form body's; each name
/// and value percent-encoded, sorted by name then value, joined by `=` and `&`),
/// each percent-encoded and joined by `&`. The realm is not a parameter.
pub fn base_string(
    method: &str,
    url: &str,
    oauth: &[(&str, &str)],
    form: &[(&str, &str)],
) -> String {
    let (without_fragment, _) = url.split_once('#').unwrap_or((url, ""));
    let (base, query) = without_fragment
        .split_once('?')
        .unwrap_or((without_fragment, ""));
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let authority = authority.to_ascii_lowercase();
    let authority = match (scheme.as_str(), authority.rsplit_once(':')) {
        ("http", Some((host, "80"))) | ("https", Some((host, "443"))) => host.to_owned(),
        _ => authority,
    };
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_encode(&percent_decode(name)),
                percent_encode(&percent_decode(value)),
            )
        })
        .chain(
            oauth
                .iter()
                .chain(form)
                .map(|(n, v)| (percent_encode(n), percent_encode(v))),
        )
        .collect();
    params.sort();
    let normalized = params
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode(&format!("{scheme}://{authority}{path}")),
        percent_encode(&normalized)
    )
}

/// The key a [`JwtAssertion`] is signed with.
enum SigningKey {
    /// `PS256`.
    Rsa(signature::RsaKeyPair),
    /// `ES256`.
    Ec(signature::EcdsaKeyPair),
}

/// The client assertion of NetSuite's OAuth 2.0 client credentials flow: a JWT
/// signed with the private key whose certificate was uploaded to the integration's
/// mapping, `PS256` (RSA) or `ES256` (P-256).
pub struct JwtAssertion {
    /// The integration record's client id (`iss`).
    pub client_id: String,
    /// The certificate id NetSuite gave the uploaded certificate (`kid`).
    pub certificate_id: String,
    /// The scopes (`rest_webservices`, `restlets`, `suite_analytics`), sent
    /// comma-separated.
    pub scopes: Vec<String>,
    key: SigningKey,
}

impl fmt::Debug for JwtAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAssertion")
            .field("client_id", &self.client_id)
            .field("certificate_id", &self.certificate_id)
            .field("scopes", &self.scopes)
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl JwtAssertion {
    /// An assertion signer from a PEM private key (PKCS#8 RSA or P-256, or PKCS#1
    /// RSA).
    pub fn from_pem(
        client_id: impl Into<String>,
        certificate_id: impl Into<String>,
        scopes: Vec<String>,
        pem: &[u8],
    ) -> Result<JwtAssertion, String> {
        use rustls_pki_types::PrivateKeyDer;
        use rustls_pki_types::pem::PemObject as _;
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("the private key is not PEM: {e}"))?;
        let rng = SystemRandom::new();
        let key = match &key {
            PrivateKeyDer::Pkcs8(der) => {
                match signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()) {
                    Ok(rsa) => SigningKey::Rsa(rsa),
                    Err(_) => signature::EcdsaKeyPair::from_pkcs8(
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        der.secret_pkcs8_der(),
                        &rng,
                    )
                    .map(SigningKey::Ec)
                    .map_err(|_| "the key is neither RSA nor P-256".to_owned())?,
                }
            }
            PrivateKeyDer::Pkcs1(der) => signature::RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map(SigningKey::Rsa)
                .map_err(|e| format!("the RSA key: {e}"))?,
            _ => return Err("a SEC1 key: convert it to PKCS#8 (openssl pkcs8 -topk8)".into()),
        };
        Ok(JwtAssertion {
            client_id: client_id.into(),
            certificate_id: certificate_id.into(),
            scopes,
            key,
        })
    }

    /// `PS256` or `ES256`.
    pub fn algorithm(&self) -> &'static str {
        match self.key {
            SigningKey::Rsa(_) => "PS256",
            SigningKey::Ec(_) => "ES256",
        }
    }

    /// The key's public half (RSA: the PKCS#1 `RSAPublicKey`; P-256: the
    /// uncompressed point), for a verifier.
    pub fn public_key(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        match &self.key {
            SigningKey::Rsa(k) => k.public_key().as_ref().to_vec(),
            SigningKey::Ec(k) => k.public_key().as_ref().to_vec(),
        }
    }

    /// A signed assertion for the token endpoint `audience`, issued at `now`
    /// (seconds since the epoch), valid for the hour NetSuite allows at most.
    pub fn sign(&self, audience: &str, now: u64) -> Result<String, String> {
        let header = serde_json::json!({
            "alg": self.algorithm(), "typ": "JWT", "kid": self.certificate_id,
        });
        let claims = serde_json::json!({
            // NetSuite takes the scopes as one comma-separated string.
            "iss": self.client_id, "scope": self.scopes.join(","), "aud": audience,
            "iat": now, "exp": now + 3600,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signed = match &self.key {
            SigningKey::Rsa(key) => {
                let mut out = vec![0; key.public().modulus_len()];
                key.sign(&signature::RSA_PSS_SHA256, &rng, input.as_bytes(), &mut out)
                    .map_err(|_| "signing the assertion failed".to_owned())?;
                out
            }
            SigningKey::Ec(key) => key
                .sign(&rng, input.as_bytes())
                .map_err(|_| "signing the assertion failed".to_owned())?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signed)))
    }
}

/// How a [`ClientCredentials`] client proves itself at the token endpoint.
#[derive(Debug)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form (Coupa).
    Secret {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: Secret,
    },
    /// A signed JWT as `client_assertion` (NetSuite).
    Assertion(Box<JwtAssertion>),
}

/// OAuth 2.0 client credentials: the token endpoint, how to prove the client, and
/// the scope asked for.
#[derive(Debug)]
pub struct ClientCredentials {
    /// The token endpoint (`https://{instance}.coupahost.com/oauth2/token`,
    /// `https://{account}.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token`).
    pub token_url: String,
    /// The client's proof.
    pub auth: ClientAuth,
    /// The scope (Coupa: space-separated scopes such as `core.invoice.read
    /// core.invoice.write`); not sent when empty.
    pub scope: String,
    /// How long before its expiry a token is replaced.
    pub refresh_margin: Duration,
}

impl ClientCredentials {
    /// The form posted to the token endpoint at `now` (seconds since the epoch).
    pub fn token_form(&self, now: u64) -> Result<String, String> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        match &self.auth {
            ClientAuth::Secret {
                client_id,
                client_secret,
            } => {
                form.append_pair("client_id", client_id);
                form.append_pair("client_secret", client_secret.expose());
            }
            ClientAuth::Assertion(jwt) => {
                form.append_pair(
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                );
                form.append_pair("client_assertion", &jwt.sign(&self.token_url, now)?);
            }
        }
        if !self.scope.is_empty() {
            form.append_pair("scope", &self.scope);
        }
        Ok(form.finish())
    }
}

/// An access token and when it stops being used.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The bearer token.
    pub token: Secret,
    /// When it is replaced (its expiry less the margin).
    pub until: SystemTime,
}

/// The token endpoint's answer (RFC 6749 §5.1), read into a token valid from `now`.
pub fn read_token(body: &[u8], now: SystemTime, margin: Duration) -> Result<AccessToken, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("the token endpoint's answer is not a token: {e}"))?;
    let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
    Ok(AccessToken {
        token: Secret(answer.access_token),
        until: now + lifetime.saturating_sub(margin),
    })
}
