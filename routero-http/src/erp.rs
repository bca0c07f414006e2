//! The ERP transport on hyper's client (feature `client`): what
//! [`routero_core::erp::Pusher`] sends NetSuite and Coupa records through.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connect;
use routero_core::erp::{ErpResponse, ErpTransport};

/// The largest ERP answer read.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Sends requests to one ERP's base URL with its credential.
#[derive(Debug, Clone)]
pub struct HyperTransport<C> {
    client: Client<C, Full<Bytes>>,
    base_url: String,
    authorization: Option<HeaderValue>,
}

impl<C> HyperTransport<C> {
    /// A transport to `base_url` (`https://…`, no trailing slash needed) through
    /// `client` (bring the connector: plain HTTP, rustls or native TLS), sending
    /// `authorization` (a bearer or an OAuth 1.0 header the caller signs) on every
    /// request.
    pub fn new(
        client: Client<C, Full<Bytes>>,
        base_url: &str,
        authorization: Option<HeaderValue>,
    ) -> HyperTransport<C> {
        HyperTransport {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            authorization,
        }
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
        let mut request = Request::new(Full::new(Bytes::from(body.unwrap_or_default())));
        *request.method_mut() = method;
        *request.uri_mut() = format!("{}{path}", self.base_url)
            .parse()
            .map_err(|e| format!("{}{path}: {e}", self.base_url))?;
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            request.headers_mut().insert(name, value);
        }
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, authorization.clone());
        }
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
}
