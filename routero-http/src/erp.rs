//! The ERP transport on hyper's client (feature `client`): what
//! [`routero_core::erp::Pusher`] sends NetSuite and Coupa records through, with the
//! ERP's authentication ([`ErpAuth`]).

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connect;
use routero_core::erp::{ErpResponse, ErpTransport};

use crate::oauth::{AccessToken, ClientCredentials, OAuth1, Secret, read_token};

/// The largest ERP answer read.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// How requests to the ERP are authenticated.
#[derive(Debug)]
pub enum ErpAuth {
    /// Nothing (a test server, or a proxy that adds it).
    None,
    /// A fixed `Authorization` value (`Bearer …`).
    Header(Secret),
    /// OAuth 1.0a, signed per request (NetSuite's token-based authentication).
    OAuth1(OAuth1),
    /// OAuth 2.0 client credentials: a token fetched, cached until it expires, and
    /// fetched again when the ERP answers 401 (Coupa; NetSuite with a JWT assertion).
    ClientCredentials(Box<ClientCredentials>),
}

/// Sends requests to one ERP's base URL, authenticated.
#[derive(Debug)]
pub struct HyperTransport<C> {
    client: Client<C, Full<Bytes>>,
    base_url: String,
    auth: ErpAuth,
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

impl<C> HyperTransport<C>
where
    C: Connect + Clone + Send + Sync + std::fmt::Debug + 'static,
{
    /// A transport to `base_url` (`https://…`, no trailing slash needed) through
    /// `client` (bring the connector: plain HTTP, rustls or native TLS),
    /// authenticated by `auth`.
    pub fn new(client: Client<C, Full<Bytes>>, base_url: &str, auth: ErpAuth) -> HyperTransport<C> {
        HyperTransport {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            auth,
            token: tokio::sync::Mutex::new(None),
        }
    }

    async fn call(&self, request: Request<Full<Bytes>>) -> Result<ErpResponse, String> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(ErpResponse {
            status,
            body: body.to_vec(),
        })
    }

    /// The cached access token, or a new one (`renew`: the ERP refused the cached one).
    async fn access_token(
        &self,
        credentials: &ClientCredentials,
        renew: bool,
    ) -> Result<Secret, String> {
        let mut cached = self.token.lock().await;
        let now = SystemTime::now();
        if let Some(token) = cached.as_ref().filter(|t| !renew && t.until > now) {
            return Ok(token.token.clone());
        }
        let epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let form = credentials.token_form(epoch)?;
        let mut request = Request::new(Full::new(Bytes::from(form)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = credentials
            .token_url
            .parse()
            .map_err(|e| format!("the token URL: {e}"))?;
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let answer = self.call(request).await?;
        if !(200..300).contains(&answer.status) {
            // The endpoint's error (RFC 6749 §5.2) names no secret; cut it short.
            let said = String::from_utf8_lossy(&answer.body);
            return Err(format!(
                "the token endpoint answered {}: {}",
                answer.status,
                said.chars().take(200).collect::<String>()
            ));
        }
        let token = read_token(&answer.body, now, credentials.refresh_margin)?;
        let secret = token.token.clone();
        *cached = Some(token);
        Ok(secret)
    }

    fn request(
        &self,
        method: &Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        authorization: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::new(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())));
        *request.method_mut() = method.clone();
        *request.uri_mut() = format!("{}{path}", self.base_url)
            .parse()
            .map_err(|e| format!("{}{path}: {e}", self.base_url))?;
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            request.headers_mut().insert(name, value);
        }
        if let Some(authorization) = authorization {
            let mut value = HeaderValue::from_str(authorization)
                .map_err(|_| "the credential is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
        }
        Ok(request)
    }
}

#[async_trait::async_trait]
impl<C> ErpTransport for HyperTransport<C>
where
    C: Connect + Clone + Send + Sync + std::fmt::Debug + 'static,
{
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<ErpResponse, String> {
        let body = body.as_deref();
        match &self.auth {
            ErpAuth::None => {
                self.call(self.request(&method, path, headers, body, None)?)
                    .await
            }
            ErpAuth::Header(value) => {
                let request = self.request(&method, path, headers, body, Some(value.expose()))?;
                self.call(request).await
            }
            ErpAuth::OAuth1(oauth) => {
                let url = format!("{}{path}", self.base_url);
                let header = oauth.authorization(method.as_str(), &url, &[]);
                self.call(self.request(&method, path, headers, body, Some(&header))?)
                    .await
            }
            ErpAuth::ClientCredentials(credentials) => {
                let token = self.access_token(credentials, false).await?;
                let bearer = format!("Bearer {}", token.expose());
                let answer = self
                    .call(self.request(&method, path, headers, body, Some(&bearer))?)
                    .await?;
                if answer.status != 401 {
                    return Ok(answer);
                }
                // Revoked or expired early: one new token, one more try.
                let token = self.access_token(credentials, true).await?;
                let bearer = format!("Bearer {}", token.expose());
                self.call(self.request(&method, path, headers, body, Some(&bearer))?)
                    .await
            }
        }
    }
}
