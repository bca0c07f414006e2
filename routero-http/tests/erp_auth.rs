//! The ERPs' authentication: OAuth 1.0a signatures against RFC 5849's and
//! NetSuite's worked examples, and end to end against a local ERP that verifies
//! them (with its own verifier, not the signer's code); OAuth 2.0 client credentials
//! with a secret (Coupa) and with a signed JWT assertion (NetSuite), the token
//! cached and fetched again on a 401; and no credential in any log line.
#![cfg(feature = "client")]

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use routero_core::erp::ErpTransport;
use routero_http::erp::{ErpAuth, HyperTransport};
use routero_http::oauth::{
    ClientAuth, ClientCredentials, JwtAssertion, OAuth1, Secret, SignatureMethod, base_string,
};

// ---------------------------------------------------------------------------------
// Worked examples

/// RFC 5849 §3.4.1.1: the signature base string of its example request (query,
/// form body and protocol parameters, with their encodings).
#[test]
fn rfc5849_signature_base_string() {
    let oauth = [
        ("oauth_consumer_key", "9djdj82h48djs9d2"),
        ("oauth_token", "kkk9d7dh3k39sjv7"),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", "137131201"),
        ("oauth_nonce", "7d8f3e4a"),
    ];
    // The body `c2&a3=2+q`, decoded.
    let form = [("c2", ""), ("a3", "2 q")];
    assert_eq!(
        base_string(
            "POST",
            "http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b",
            &oauth,
            &form
        ),
        "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
         %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
         key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
         ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk\
         9d7dh3k39sjv7"
    );
    // §3.4.1.2: scheme and host lowercased, the default port dropped.
    assert!(
        base_string("GET", "HTTP://EXAMPLE.com:80/r%20v/X?id=123", &[], &[])
            .starts_with("GET&http%3A%2F%2Fexample.com%2Fr%2520v%2FX&")
    );
    assert!(
        base_string("GET", "https://www.example.net:8080/?q=1", &[], &[])
            .starts_with("GET&https%3A%2F%2Fwww.example.net%3A8080%2F&")
    );
}

/// RFC 5849 §1.2's photo request, HMAC-SHA1 (the signature as corrected by the RFC's
/// erratum 2550: `MdpQcU8iPSUjWoN/UDMsK2sui9I=`).
#[test]
fn rfc5849_worked_example_signature() {
    let oauth = OAuth1 {
        realm: "Photos".into(),
        consumer_key: "dpf43f3p2l4k3l03".into(),
        consumer_secret: Secret::new("kd94hf93k423kf44"),
        token_id: "nnch734d00sl2jdk".into(),
        token_secret: Secret::new("pfkkdhi9sl3r4s00"),
        method: SignatureMethod::HmacSha1,
        version: false,
    };
    let header = oauth.authorization_at(
        "GET",
        "http://photos.example.net/photos?file=vacation.jpg&size=original",
        &[],
        "chapoH",
        137_131_202,
    );
    assert_eq!(
        header,
        "OAuth realm=\"Photos\", oauth_consumer_key=\"dpf43f3p2l4k3l03\", \
         oauth_token=\"nnch734d00sl2jdk\", oauth_signature_method=\"HMAC-SHA1\", \
         oauth_timestamp=\"137131202\", oauth_nonce=\"chapoH\", \
         oauth_signature=\"MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D\""
    );
}

/// NetSuite's documented TBA inputs ("The Signature for Web Services and
/// RESTlets"), HMAC-SHA256, for its RESTlet URL and for a REST web services upsert;
/// the expected signatures are those Python's oauthlib computes from the same inputs.
#[test]
fn netsuite_worked_example_signatures() {
    let oauth = OAuth1::netsuite(
        "123456",
        "ef40afdd8abaac111b13825dd5e5e2ddddb44f86d5a0dd6dcf38c20aae6b67e4",
        Secret::new("d26ad321a4b2f23b0741c8d38392ce01c3e23e109df6c96eac6d099e9ab9e8b5"),
        "2b0ce516420110bcbd36b69e99196d1b7f6de3c6234c5afb799b73d87569f5cc",
        Secret::new("c29a677df7d5439a458c063654187e3d678d73aca8e3c9d8bea1478a3eb0d295"),
    );
    let signature = |method: &str, url: &str| {
        let header =
            oauth.authorization_at(method, url, &[], "fjaLirsIcCGVZWzBX0pg", 1_508_242_306);
        assert!(header.starts_with("OAuth realm=\"123456\", "), "{header}");
        assert!(header.contains("oauth_signature_method=\"HMAC-SHA256\""));
        assert!(header.contains("oauth_version=\"1.0\""));
        header
            .split("oauth_signature=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"')
            .to_owned()
    };
    assert_eq!(
        signature(
            "POST",
            "https://123456.restlets.api.netsuite.com/app/site/hosting/restlet.nl?script=6&deploy=1&customParam=someValue&testParam=someOtherValue"
        ),
        "%2BKK4SKNgz4ZiILGLwOMtfYlgcXSy1eis8ldE9X90azQ%3D"
    );
    assert_eq!(
        signature(
            "PUT",
            "https://123456.suitetalk.api.netsuite.com/services/rest/record/v1/journalentry/eid:routero-INV-202611-000001"
        ),
        "jiJTAxppSvps0rDMgSYd3MvSaXm6o%2F%2BvDZ4PDMQtPgo%3D"
    );
}

// ---------------------------------------------------------------------------------
// A local ERP that checks credentials

const CONSUMER_SECRET: &str = "consumer-secret-d26ad321a4b2f23b";
const TOKEN_SECRET: &str = "token-secret-c29a677df7d5439a4";
const CLIENT_SECRET: &str = "coupa-client-secret-9f8e7d6c5b4a";

/// What the local ERP accepts and what it saw.
#[derive(Default)]
struct Erp {
    /// Access tokens it issued and still honours.
    live_tokens: Vec<String>,
    /// Token requests served.
    token_requests: u32,
    /// The public key a JWT assertion must verify with, and its algorithm.
    jwt_key: Option<(Vec<u8>, &'static str)>,
    /// Requests authenticated, and refused with 401.
    accepted: Vec<String>,
    refused: u32,
    /// OAuth 1.0a nonces seen (a replayed one is refused).
    nonces: Vec<String>,
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn decode(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Verifies an OAuth 1.0a header for `method` on `http://{host}{target}`, as a server
/// does: its own base string and HMAC-SHA256 over the secrets it holds.
fn verify_oauth1(erp: &mut Erp, header: &str, method: &str, host: &str, target: &str) -> bool {
    let Some(params) = header.strip_prefix("OAuth ") else {
        return false;
    };
    let mut oauth: HashMap<String, String> = HashMap::new();
    for part in params.split(", ") {
        let Some((name, value)) = part.split_once('=') else {
            return false;
        };
        oauth.insert(name.to_owned(), decode(value.trim_matches('"')));
    }
    let (Some(signature), Some(nonce)) = (
        oauth.remove("oauth_signature"),
        oauth.get("oauth_nonce").cloned(),
    ) else {
        return false;
    };
    if oauth.remove("realm").as_deref() != Some("TSTDRV123")
        || oauth.get("oauth_signature_method").map(String::as_str) != Some("HMAC-SHA256")
        || erp.nonces.contains(&nonce)
    {
        return false;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut pairs: Vec<(String, String)> = oauth
        .iter()
        .map(|(k, v)| (encode(k), encode(v)))
        .chain(query.split('&').filter(|q| !q.is_empty()).map(|q| {
            let (k, v) = q.split_once('=').unwrap_or((q, ""));
            (encode(&decode(k)), encode(&decode(v)))
        }))
        .collect();
    pairs.sort();
    let normalized: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let base = format!(
        "{method}&{}&{}",
        encode(&format!("http://{host}{path}")),
        encode(&normalized.join("&"))
    );
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        format!("{}&{}", encode(CONSUMER_SECRET), encode(TOKEN_SECRET)).as_bytes(),
    );
    let Ok(given) = STANDARD.decode(signature) else {
        return false;
    };
    let ok = ring::hmac::verify(&key, base.as_bytes(), &given).is_ok();
    if ok {
        erp.nonces.push(nonce);
    }
    ok
}

/// The token endpoint: a client secret (Coupa) or a JWT assertion verified with the
/// registered public key (NetSuite). Answers a new token, valid for an hour.
fn issue_token(erp: &mut Erp, form: &str) -> (u16, String) {
    erp.token_requests += 1;
    let form: HashMap<String, String> = form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (400, r#"{"error":"unsupported_grant_type"}"#.into());
    }
    let authentic = match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(secret), None) => {
            secret == CLIENT_SECRET && form.get("client_id").map(String::as_str) == Some("routero")
        }
        (None, Some(jwt)) => {
            let Some((public, algorithm)) = &erp.jwt_key else {
                return (400, r#"{"error":"invalid_client"}"#.into());
            };
            form.get("client_assertion_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                && verify_jwt(jwt, public, algorithm)
        }
        _ => false,
    };
    if !authentic {
        return (401, r#"{"error":"invalid_client"}"#.into());
    }
    let token = format!("at-{}", uuid::Uuid::new_v4().simple());
    erp.live_tokens.push(token.clone());
    (
        200,
        format!(r#"{{"access_token":"{token}","token_type":"bearer","expires_in":3600}}"#),
    )
}

fn verify_jwt(jwt: &str, public: &[u8], algorithm: &str) -> bool {
    let mut parts = jwt.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    let verifier: &dyn ring::signature::VerificationAlgorithm = match algorithm {
        "PS256" => &ring::signature::RSA_PSS_2048_8192_SHA256,
        _ => &ring::signature::ECDSA_P256_SHA256_FIXED,
    };
    let input = &jwt[..jwt.rfind('.').unwrap()];
    header["alg"] == algorithm
        && header["kid"] == "cert-42"
        && claims["iss"] == "netsuite-client"
        && claims["scope"] == "rest_webservices,restlets"
        && claims["aud"]
            .as_str()
            .is_some_and(|a| a.ends_with("/services/rest/auth/oauth2/v1/token"))
        && claims["exp"].as_u64() > claims["iat"].as_u64()
        && ring::signature::UnparsedPublicKey::new(verifier, public)
            .verify(
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .is_ok()
}

fn serve(erp: Arc<Mutex<Erp>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let host = addr.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (erp, host) = (erp.clone(), host.clone());
            std::thread::spawn(move || {
                let _ = answer(stream, &erp, &host);
            });
        }
    });
    addr
}

fn answer(stream: TcpStream, erp: &Mutex<Erp>, host: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    while let Some(common::Incoming {
        method,
        target,
        headers,
        body,
    }) = common::read_request(&mut reader)?
    {
        let (status, reply) = {
            let mut erp = erp.lock().unwrap();
            if target.ends_with("/token") {
                issue_token(&mut erp, &String::from_utf8_lossy(&body))
            } else {
                let authorization = headers.get("authorization").cloned().unwrap_or_default();
                let ok = match authorization.strip_prefix("Bearer ") {
                    Some(token) => erp.live_tokens.iter().any(|t| t == token),
                    None => verify_oauth1(&mut erp, &authorization, &method, host, &target),
                };
                if ok {
                    erp.accepted.push(format!("{method} {target}"));
                    (200, "[]".to_owned())
                } else {
                    erp.refused += 1;
                    (401, r#"{"error":"invalid_token"}"#.to_owned())
                }
            }
        };
        common::reply(&mut out, status, &reply)?;
    }
    Ok(())
}

fn transport(addr: &str, auth: ErpAuth) -> HyperTransport<HttpConnector> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    HyperTransport::new(client, &format!("http://{addr}"), auth)
}

fn netsuite_tba() -> OAuth1 {
    OAuth1::netsuite(
        "TSTDRV123",
        "consumer-key-ef40afdd",
        Secret::new(CONSUMER_SECRET),
        "token-id-2b0ce516",
        Secret::new(TOKEN_SECRET),
    )
}

async fn put(transport: &HyperTransport<HttpConnector>, path: &str) -> u16 {
    transport
        .send(
            http::Method::PUT,
            path,
            &[("content-type", "application/json")],
            Some(b"{}".to_vec()),
        )
        .await
        .unwrap()
        .status
}

#[tokio::test]
async fn netsuite_tba_requests_verify_at_the_server() {
    let erp = Arc::new(Mutex::new(Erp::default()));
    let addr = serve(erp.clone());
    let signed = transport(&addr, ErpAuth::OAuth1(netsuite_tba()));
    assert_eq!(
        put(
            &signed,
            "/services/rest/record/v1/journalentry/eid:routero-INV-1"
        )
        .await,
        200
    );
    // A query string is signed too; each request has its own nonce.
    assert_eq!(
        put(
            &signed,
            "/services/rest/record/v1/journalentry/eid:x?replace=line&a=b%20c"
        )
        .await,
        200
    );
    assert_eq!(
        put(
            &signed,
            "/services/rest/record/v1/journalentry/eid:routero-INV-1"
        )
        .await,
        200
    );
    // A wrong token secret is refused.
    let mut wrong = netsuite_tba();
    wrong.token_secret = Secret::new("not-the-secret");
    assert_eq!(
        put(&transport(&addr, ErpAuth::OAuth1(wrong)), "/x").await,
        401
    );
    let erp = erp.lock().unwrap();
    assert_eq!((erp.accepted.len(), erp.refused), (3, 1));
}

#[tokio::test]
async fn coupa_tokens_are_cached_and_fetched_again_on_401() {
    let erp = Arc::new(Mutex::new(Erp::default()));
    let addr = serve(erp.clone());
    let coupa = transport(
        &addr,
        ErpAuth::ClientCredentials(Box::new(ClientCredentials {
            token_url: format!("http://{addr}/oauth2/token"),
            auth: ClientAuth::Secret {
                client_id: "routero".into(),
                client_secret: Secret::new(CLIENT_SECRET),
            },
            scope: "core.invoice.read core.invoice.write".into(),
            refresh_margin: Duration::from_secs(60),
        })),
    );
    for _ in 0..3 {
        assert_eq!(put(&coupa, "/api/invoices").await, 200);
    }
    assert_eq!(
        erp.lock().unwrap().token_requests,
        1,
        "one token for three calls"
    );
    // The ERP revokes every token: the next call fetches a new one and goes through.
    erp.lock().unwrap().live_tokens.clear();
    assert_eq!(put(&coupa, "/api/invoices").await, 200);
    {
        let erp = erp.lock().unwrap();
        assert_eq!(
            (erp.token_requests, erp.refused, erp.accepted.len()),
            (2, 1, 4)
        );
    }
    // A wrong client secret: the token endpoint's refusal is the error.
    let wrong = transport(
        &addr,
        ErpAuth::ClientCredentials(Box::new(ClientCredentials {
            token_url: format!("http://{addr}/oauth2/token"),
            auth: ClientAuth::Secret {
                client_id: "routero".into(),
                client_secret: Secret::new("guess"),
            },
            scope: String::new(),
            refresh_margin: Duration::from_secs(60),
        })),
    );
    let e = wrong
        .send(http::Method::GET, "/api/invoices", &[], None)
        .await
        .unwrap_err();
    assert!(e.contains("token endpoint answered 401"), "{e}");
}

/// A P-256 key in PKCS#8 PEM, made with ring.
fn ec_pem() -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let body = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

/// An RSA key in PKCS#8 PEM from openssl, when the machine has it.
fn rsa_pem() -> Option<Vec<u8>> {
    let output = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .ok()?;
    output.status.success().then_some(output.stdout)
}

#[tokio::test]
async fn netsuite_oauth2_client_credentials_with_a_signed_assertion() {
    let mut keys = vec![("ES256", ec_pem())];
    match rsa_pem() {
        Some(pem) => keys.push(("PS256", pem)),
        None => eprintln!("openssl is missing: PS256 not tried"),
    }
    for (algorithm, pem) in keys {
        let jwt = JwtAssertion::from_pem(
            "netsuite-client",
            "cert-42",
            vec!["rest_webservices".into(), "restlets".into()],
            &pem,
        )
        .unwrap();
        assert_eq!(jwt.algorithm(), algorithm);
        let erp = Arc::new(Mutex::new(Erp {
            jwt_key: Some((jwt.public_key(), algorithm)),
            ..Erp::default()
        }));
        let addr = serve(erp.clone());
        let netsuite = transport(
            &addr,
            ErpAuth::ClientCredentials(Box::new(ClientCredentials {
                token_url: format!("http://{addr}/services/rest/auth/oauth2/v1/token"),
                auth: ClientAuth::Assertion(Box::new(jwt)),
                scope: String::new(),
                refresh_margin: Duration::from_secs(60),
            })),
        );
        assert_eq!(
            put(&netsuite, "/services/rest/record/v1/journalentry/eid:a").await,
            200
        );
        assert_eq!(
            put(&netsuite, "/services/rest/record/v1/journalentry/eid:b").await,
            200
        );
        let erp = erp.lock().unwrap();
        assert_eq!(
            (erp.token_requests, erp.accepted.len()),
            (1, 2),
            "{algorithm}"
        );
    }
    // A key of another kind is refused with a reason.
    let e = JwtAssertion::from_pem("c", "k", vec![], b"not a key").unwrap_err();
    assert!(e.contains("PEM"), "{e}");
}

// ---------------------------------------------------------------------------------
// No secret in the logs

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_secret_appears_in_any_log_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let erp = Arc::new(Mutex::new(Erp::default()));
            let addr = serve(erp.clone());
            let tba = netsuite_tba();
            // Everything the credentials go through, formatted as a log would.
            tracing::info!(credentials = ?tba, "configured");
            let coupa = ClientCredentials {
                token_url: format!("http://{addr}/oauth2/token"),
                auth: ClientAuth::Secret {
                    client_id: "routero".into(),
                    client_secret: Secret::new(CLIENT_SECRET),
                },
                scope: String::new(),
                refresh_margin: Duration::from_secs(60),
            };
            tracing::info!(credentials = ?coupa, "configured");
            let signed = transport(&addr, ErpAuth::OAuth1(tba));
            tracing::debug!(transport = ?signed, "built");
            put(&signed, "/ok").await;
            let coupa = transport(&addr, ErpAuth::ClientCredentials(Box::new(coupa)));
            put(&coupa, "/ok").await;
            erp.lock().unwrap().live_tokens.clear();
            put(&coupa, "/ok").await;
            tracing::debug!(transport = ?coupa, "after a refresh");
            let tokens = erp.lock().unwrap().live_tokens.clone();
            (tokens, erp)
        })
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("configured") && logs.contains("after a refresh"),
        "{logs}"
    );
    for secret in [CONSUMER_SECRET, TOKEN_SECRET, CLIENT_SECRET, "at-"] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}
